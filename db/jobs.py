"""Background jobs (training, scoring, embedding, rounds) whose status every process can read.

MONAI Label keeps job status in memory only, and our jobs run in subprocesses; the database is the one
place an API request can learn how far a job got. Lifecycle: queued → running → done | failed.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import DBError, NotFoundError
from db.schema import JOB_KINDS, Job, utcnow

FINISHED_STATES = ("done", "failed")


def start_job(
    session: Session, kind: str, *, queued: bool = False, message: str = "", detail: dict[str, Any] | None = None
) -> Job:
    """Create a job, ``running`` now (or ``queued`` to start later with :func:`update_job`)."""
    if kind not in JOB_KINDS:
        raise DBError(f"unknown job kind {kind!r}: use one of {JOB_KINDS}")
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        kind=kind,
        state="queued" if queued else "running",
        progress=0.0,
        message=message,
        created_at=now,
        started_at=None if queued else now,
        finished_at=None,
        detail=detail or {},
    )
    session.add(job)
    session.flush()
    return job


def update_job(
    session: Session, job_id: str, progress: float | None = None, message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Job:
    """Report progress (0..1), a message and/or ``detail`` (merged into the job's); a queued job becomes running."""
    job = _unfinished(session, job_id)
    if detail:
        job.detail = {**job.detail, **detail}
    if progress is not None:
        if not 0.0 <= progress <= 1.0:
            raise DBError(f"job progress must lie in [0, 1], got {progress}")
        job.progress = float(progress)
    if message is not None:
        job.message = message
    if job.state == "queued":
        job.state = "running"
        job.started_at = utcnow()
    session.flush()
    return job


def finish_job(
    session: Session, job_id: str, state: str = "done", message: str = "", detail: dict[str, Any] | None = None
) -> Job:
    """End a job as ``done`` (progress 1) or ``failed``; ``detail`` is merged into the job's detail."""
    if state not in FINISHED_STATES:
        raise DBError(f"a job finishes as one of {FINISHED_STATES}, not {state!r}")
    job = _unfinished(session, job_id)
    now = utcnow()
    job.state = state
    job.message = message
    job.finished_at = now
    job.started_at = job.started_at or now
    if state == "done":
        job.progress = 1.0
    if detail:
        job.detail = {**job.detail, **detail}
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session, *, kind: str | None = None, state: str | None = None, limit: int = 50
) -> list[Job]:
    """The newest ``limit`` jobs, optionally of one kind and/or state, newest first."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if state is not None:
        query = query.where(Job.state == state)
    return list(session.scalars(query))


def _unfinished(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"unknown job {job_id!r}")
    if job.state in FINISHED_STATES:
        raise DBError(f"job {job_id!r} already finished ({job.state})")
    return job
