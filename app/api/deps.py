"""FastAPI dependencies shared by our routes: the app, a database session, and the caller with a role.

``CurrentUser`` is any logged-in user; ``AnnotatorUser`` and ``AdminUser`` need that role (stock MONAI Label's role
check, fed by :mod:`app.api.security`). With auth off every caller is the all-roles default user.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from sqlalchemy.orm import Session

from app.api.security import current_user
from app.api.ui import UiError, UiLoginRequired
from app.ui.session import SESSION_COOKIE, SessionError, UiUser, csrf_matches, csrf_token, read_session
from app.main import SLPTApp
from db.audit import audit

DEFAULT_ANNOTATOR = "user-xyz"  # what the Slicer plugin sends as client id unless the annotator changes it


def get_app() -> SLPTApp:
    return app_instance()


def get_session(app: Annotated[SLPTApp, Depends(get_app)]) -> Iterator[Session]:
    """A read session; routes that write open ``db.engine.write_session`` themselves, so they commit before answering."""
    with app.datastore().sessions() as session:
        yield session


AppDep = Annotated[SLPTApp, Depends(get_app)]
SessionDep = Annotated[Session, Depends(get_session)]
CurrentUser = Annotated[User, Depends(current_user)]
AnyUser = Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))]
AnnotatorUser = Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))]
AdminUser = Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))]
ReviewerUser = Annotated[User, Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_REVIEWER))]


def is_reviewer(user: User) -> bool:
    """Reviewers and admins (every caller with auth off) review labels and see every reader's label."""
    return settings.MONAI_LABEL_AUTH_ROLE_REVIEWER in user.roles


def is_admin(user: User) -> bool:
    return settings.MONAI_LABEL_AUTH_ROLE_ADMIN in user.roles


def blinded_viewer(request: Request, user: User) -> str | None:
    """Whose labels a caller may see of a double-read volume still in reading: None (everyone's) for reviewers and
    admins, else the caller's own (docs/design.md, "Review, double reading and agreement")."""
    return None if is_reviewer(user) else annotator_key(request, user, None)


def ui_user(request: Request) -> UiUser:
    """The dashboard's logged-in user, from the session cookie; a login page (401) otherwise."""
    try:
        user = read_session(get_app().authenticator, request.cookies.get(SESSION_COOKIE))
    except SessionError as error:
        raise UiLoginRequired(str(error)) from None
    request.state.ui_user = user
    return user


def ui_admin(user: Annotated[UiUser, Depends(ui_user)]) -> UiUser:
    if not user.is_admin:
        raise UiError(403, f"{user.username} is not an admin: this page is for admins")
    return user


async def ui_form_user(request: Request, user: Annotated[UiUser, Depends(ui_user)]) -> UiUser:
    """A logged-in user posting a dashboard form that carries the CSRF token of their session."""
    form = await request.form()
    if not csrf_matches(csrf_token(get_app().authenticator, user.token), form.get("csrf")):
        raise UiError(403, "the form's CSRF token is missing or wrong: reload the page and try again")
    return user


def ui_form_admin(user: Annotated[UiUser, Depends(ui_form_user)]) -> UiUser:
    return ui_admin(user)


UiSessionUser = Annotated[UiUser, Depends(ui_user)]
UiAdmin = Annotated[UiUser, Depends(ui_admin)]
UiFormUser = Annotated[UiUser, Depends(ui_form_user)]
UiFormAdmin = Annotated[UiUser, Depends(ui_form_admin)]


def annotator_key(request: Request, user: User, client_id: str | None) -> str:
    """Who holds a claim or saves a label: the one place an annotator is resolved (strategies and the datastore
    read the result from the request's ``annotator``).

    With auth on, the logged-in user. With auth off, the client id *and* the caller's address: the Slicer plugin
    sends ``client_id="user-xyz"`` unless changed, and two annotators who keep that default must not release each
    other's volumes.
    """
    if settings.MONAI_LABEL_AUTH_ENABLE:
        return user.username
    host = request.client.host if request.client else "unknown"
    return f"{client_id or DEFAULT_ANNOTATOR}@{host}"


def audit_action(session: Session, user: User, request: Request, action: str, image_id: str | None = None,
                 **detail) -> None:
    """Record an admin action (who, what, when, from where) in the caller's transaction."""
    audit(session, user.username, action, image_id, source=request.client.host if request.client else None, **detail)
