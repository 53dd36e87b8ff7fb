"""``GET /admin/progress``: where the campaign stands."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminUser, AppDep, SessionDep
from app.api.routes.admin.jobs import job_out
from app.api.schemas import ModelVersionOut, Progress, WorkProgress
from db.jobs import list_jobs
from db.model_versions import latest_model_version
from db.reviews import review_totals
from db.overview import labels_per_day, status_totals, totals_by_annotator, totals_by_group
from db.work import latest_work

router = APIRouter(tags=["Admin: progress"])


@router.get("/progress", response_model=Progress, summary="Totals by status, annotator, group and day; model; jobs")
def progress(user: AdminUser, app: AppDep, session: SessionDep) -> Progress:
    now = app.datastore().clock()
    model = latest_model_version(session)
    running = [j for state in ("queued", "running") for j in list_jobs(session, state=state)]
    return Progress(
        totals=status_totals(session, now),
        by_annotator=totals_by_annotator(session, now),
        by_group=totals_by_group(session, now),
        labels_per_day=labels_per_day(session),
        model=ModelVersionOut.model_validate(model) if model else None,
        running_jobs=[job_out(j) for j in running],
        review=review_totals(session),
        work=[WorkProgress.of(totals) for totals in latest_work(session)],
    )
