"""``/admin/users`` and ``/admin/tokens``: create, change and disable users; issue and revoke API tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request

from app.api.deps import AdminUser, AppDep, SessionDep, audit_action
from app.api.schemas import RowIdPath, ApiTokenOut, NewApiToken, TokenCreate, UserCreate, UserOut, UserUpdate
from db.engine import write_session
from db.schema import utcnow
from db.users import api_tokens_of, create_user, issue_api_token, list_users, require_user, revoke_api_token, update_user

router = APIRouter(tags=["Admin: users"])


@router.get("/users", response_model=list[UserOut], summary="Every user, by name")
def users(user: AdminUser, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in list_users(session)]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user")
def new_user(body: UserCreate, user: AdminUser, app: AppDep, request: Request) -> UserOut:
    with write_session(app.datastore().sessions) as session:
        created = create_user(session, body.username, body.role, body.password)
        audit_action(session, user, request, "user_created", username=body.username, role=body.role)
        return UserOut.model_validate(created)


@router.get("/users/{username}", response_model=UserOut, summary="One user")
def one_user(username: str, user: AdminUser, session: SessionDep) -> UserOut:
    return UserOut.model_validate(require_user(session, username))


@router.patch("/users/{username}", response_model=UserOut, summary="Change a user's role or password; disable or enable")
def change_user(username: str, body: UserUpdate, user: AdminUser, app: AppDep, request: Request) -> UserOut:
    if username == user.username and (body.disabled or body.role not in (None, "admin")):
        raise HTTPException(409, "an admin cannot disable or demote their own account")
    with write_session(app.datastore().sessions) as session:
        changed = update_user(session, username, role=body.role, disabled=body.disabled, password=body.password)
        audit_action(session, user, request, "user_changed", username=username,
                     **body.model_dump(exclude_none=True, exclude={"password"}),
                     **({"password": "changed"} if body.password else {}))
        answer = UserOut.model_validate(changed)
    if body.disabled is not None:
        app.authenticator.note_disabled(username, body.disabled)
    if body.role is not None:
        app.authenticator.note_role(username, body.role)
    return answer


@router.get("/users/{username}/tokens", response_model=list[ApiTokenOut], summary="A user's API tokens")
def tokens(username: str, user: AdminUser, session: SessionDep) -> list[ApiTokenOut]:
    return [ApiTokenOut.model_validate(t) for t in api_tokens_of(session, username)]


@router.post("/users/{username}/tokens", response_model=NewApiToken, status_code=201,
             summary="Issue an API token (shown this once)")
def new_token(username: str, body: TokenCreate, user: AdminUser, app: AppDep, request: Request) -> NewApiToken:
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    with write_session(app.datastore().sessions) as session:
        row, token = issue_api_token(session, username, body.name, expires_at=expires)
        audit_action(session, user, request, "token_issued", username=username, token_id=row.id, name=body.name)
        return NewApiToken(**ApiTokenOut.model_validate(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", response_model=ApiTokenOut, summary="Revoke an API token")
def revoke_token(token_id: RowIdPath, user: AdminUser, app: AppDep, request: Request) -> ApiTokenOut:
    with write_session(app.datastore().sessions) as session:
        row = revoke_api_token(session, token_id)
        audit_action(session, user, request, "token_revoked", token_id=token_id)
        return ApiTokenOut.model_validate(row)
