"""The dashboard's forms (admins only, each with its session's CSRF token): start a round, train, release and assign
leases, create, disable and reset users; and the export download. Each does what its ``/admin`` route does, audited
the same way, then returns to the dashboard with a notice; a refusal is a page with its reason, and nothing done."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, StreamingResponse

from app.api.deps import AppDep, UiAdmin, UiFormAdmin, audit_action
from app.api.routes.admin.export import export as export_archive
from app.api.routes.models import start_training
from app.api.ui import UI_ROOT, UiError
from app.modelstore import NoModelError
from app.selection import SelectionUnavailable, build_round
from db.claims import assign_volume, release_volume
from db.engine import write_session
from db.errors import DBError, NotFoundError
from db.users import DuplicateUserError, create_user, require_user, update_user
from strategies import STRATEGIES

router = APIRouter()


def back(notice: str) -> RedirectResponse:
    return RedirectResponse(f"{UI_ROOT}/?notice={quote(notice)}", status_code=303)


@router.post("/rounds")
def start_round(user: UiFormAdmin, app: AppDep, request: Request, strategy: Annotated[str, Form()] = "",
                budget: Annotated[str, Form()] = "") -> RedirectResponse:
    if strategy not in STRATEGIES:
        raise UiError(404, f"unknown strategy {strategy!r}; available: {', '.join(STRATEGIES)}")
    if not budget.strip().isdigit() or int(budget) < 1:
        raise UiError(400, f"the number of volumes must be a whole number of at least 1, not {budget!r}")
    pool = len(app.datastore().get_unlabeled_images())
    if int(budget) > pool:
        raise UiError(400, f"a round of {int(budget)} volumes is larger than the unlabeled pool ({pool} volumes): "
                           "nothing was started")
    try:
        round_id = build_round(app.datastore(), app.model_store, strategy, int(budget))
    except (SelectionUnavailable, NoModelError) as error:
        raise UiError(409, f"no round can be built yet: {error}") from None
    with write_session(app.datastore().sessions) as session:
        audit_action(session, user, request, "round_started", round_id=round_id, strategy=strategy, budget=int(budget))
    return back(f"round {round_id} started ({strategy}, {int(budget)} volumes)")


@router.post("/jobs")
def start_job(user: UiFormAdmin, app: AppDep, request: Request, kind: Annotated[str, Form()] = "") -> RedirectResponse:
    if kind != "train":
        raise UiError(400, f"unknown job kind {kind!r}: the dashboard starts 'train'")
    try:
        started = start_training(app, "slpt", None)
    except HTTPException as error:
        raise UiError(error.status_code, error.detail) from None
    with write_session(app.datastore().sessions) as session:
        audit_action(session, user, request, "train_started", model="slpt")
    job = started.get("job_id", "") if isinstance(started, dict) else ""
    return back(f"training started {job}".strip())


@router.post("/leases/release")
def release(user: UiFormAdmin, app: AppDep, request: Request, image_id: Annotated[str, Form()] = "") -> RedirectResponse:
    with write_session(app.datastore().sessions) as session:
        try:
            holder = release_volume(session, image_id, now=app.datastore().clock())
        except NotFoundError as error:
            raise UiError(404, str(error)) from None
        except DBError as error:
            raise UiError(409, str(error)) from None
        audit_action(session, user, request, "lease_released", image_id, holder=holder)
    return back(f"released {image_id} (held by {holder})")


@router.post("/leases/assign")
def assign(user: UiFormAdmin, app: AppDep, request: Request, image_id: Annotated[str, Form()] = "",
           annotator: Annotated[str, Form()] = "") -> RedirectResponse:
    hours = app.settings.lease_hours
    with write_session(app.datastore().sessions) as session:
        try:
            if app.settings.auth and require_user(session, annotator).disabled:
                raise UiError(409, f"user {annotator!r} is disabled")
            assign_volume(session, image_id, annotator, timedelta(hours=hours), now=app.datastore().clock())
        except NotFoundError as error:
            raise UiError(404, str(error)) from None
        except DBError as error:
            raise UiError(409, str(error)) from None
        audit_action(session, user, request, "lease_assigned", image_id, annotator=annotator, hours=hours)
    return back(f"{image_id} assigned to {annotator}")


@router.post("/users")
def new_user(user: UiFormAdmin, app: AppDep, request: Request, username: Annotated[str, Form()] = "",
             role: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "") -> RedirectResponse:
    try:
        with write_session(app.datastore().sessions) as session:
            create_user(session, username, role, password or None)
            audit_action(session, user, request, "user_created", username=username, role=role)
    except DuplicateUserError as error:
        raise UiError(409, str(error)) from None
    except DBError as error:  # a bad name, an unknown role, a short password: nothing written
        raise UiError(400, str(error)) from None
    return back(f"user {username} created")


@router.post("/users/{username}/disabled")
def set_disabled(username: str, user: UiFormAdmin, app: AppDep, request: Request,
                 disabled: Annotated[str, Form()] = "") -> RedirectResponse:
    if disabled not in ("true", "false"):
        raise UiError(400, "disabled must be 'true' or 'false'")
    if username == user.username and disabled == "true":
        raise UiError(409, "an admin cannot disable their own account")
    _change(app, user, request, username, disabled=disabled == "true")
    app.authenticator.note_disabled(username, disabled == "true")
    return back(f"user {username} {'disabled' if disabled == 'true' else 'enabled'}")


@router.post("/users/{username}/password")
def reset_password(username: str, user: UiFormAdmin, app: AppDep, request: Request,
                   password: Annotated[str, Form()] = "") -> RedirectResponse:
    _change(app, user, request, username, password=password)
    return back(f"password of {username} reset")


def _change(app, user, request: Request, username: str, **change) -> None:
    with write_session(app.datastore().sessions) as session:
        try:
            update_user(session, username, **change)
        except NotFoundError as error:
            raise UiError(404, str(error)) from None
        except DBError as error:
            raise UiError(400, str(error)) from None
        audit_action(session, user, request, "user_changed", username=username,
                     **{k: ("changed" if k == "password" else v) for k, v in change.items()})


@router.get("/export")
def export(user: UiAdmin, app: AppDep, request: Request) -> StreamingResponse:
    return export_archive(user, app, request)
