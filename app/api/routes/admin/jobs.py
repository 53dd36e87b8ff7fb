"""``/admin/jobs``: start training or scoring; every job's state, progress and log tail, read from the database
(so they survive a restart of the server that started them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from app.api.deps import AdminUser, AppDep, SessionDep, audit_action
from app.api.routes.jobs import start_scoring
from app.api.routes.models import start_training
from app.api.schemas import JobCreate, JobKind, JobOut, JobStarted, JobState
from db.engine import write_session
from db.jobs import get_job, list_jobs
from db.schema import Job

router = APIRouter(prefix="/jobs", tags=["Admin: jobs"])


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id, kind=job.kind, state=job.state, progress=job.progress, message=job.message,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        log_tail=list(job.detail.get("log_tail", [])),
    )


@router.get("", response_model=list[JobOut], summary="Jobs, newest first")
def jobs(
    user: AdminUser, session: SessionDep, kind: JobKind | None = None, state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobOut]:
    return [job_out(j) for j in list_jobs(session, kind=kind, state=state, limit=limit)]


@router.get("/{job_id}", response_model=JobOut, summary="One job")
def job(job_id: str, user: AdminUser, session: SessionDep) -> JobOut:
    found = get_job(session, job_id)
    if found is None:
        raise HTTPException(404, f"unknown job {job_id!r}")
    return job_out(found)


@router.post("", response_model=JobStarted, status_code=202, summary="Start training or scoring in the background")
def start_job(body: JobCreate, user: AdminUser, app: AppDep, request: Request) -> JobStarted:
    if body.kind == "train":
        detail = start_training(app, body.model, body.params)
    else:
        detail = start_scoring(app, body.model, body.params)
    with write_session(app.datastore().sessions) as session:
        audit_action(session, user, request, f"{body.kind}_started", model=body.model)
    return JobStarted(kind=body.kind, started=True, detail=detail if isinstance(detail, dict) else {"result": detail})
