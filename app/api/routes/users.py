"""``/users/me``: the caller's own account and work (any logged-in user)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import AnyUser, AppDep, SessionDep, annotator_key
from app.api.schemas import AssignmentOut, LabelOut, MyHistory
from db.claims import active_lease
from db.overview import assignments_of_annotator, labels_of_annotator

router = APIRouter(prefix="/users", tags=["Users"])


@router.get("/me", response_model=MyHistory, summary="My current lease, leases and labels (newest first)")
def my_history(
    request: Request, user: AnyUser, app: AppDep, session: SessionDep, client_id: str | None = None
) -> MyHistory:
    me = annotator_key(request, user, client_id)
    return MyHistory(
        username=me,
        current_lease=active_lease(session, me, now=app.datastore().clock()),
        assignments=[AssignmentOut.model_validate(a) for a in assignments_of_annotator(session, me)],
        labels=[LabelOut.model_validate(label) for label in labels_of_annotator(session, me)],
    )
