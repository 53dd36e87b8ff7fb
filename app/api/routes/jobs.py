"""``GET /scoring/``: progress of embedding and scoring work, from the ``jobs`` and ``work_batches`` tables;
``POST /scoring/{method}``.

Stock MONAI Label answers from memory of the server process; our embedding and scoring are batches that every replica
(and the training process) leases through the database, each worker recording a job, so their status is read from the
database: every worker's job, and the newest targets' batches by state (docs/design.md, "Work spread over replicas").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from monailabel.endpoints import scoring as stock_scoring

from app.api.deps import AdminUser, AnyUser, AppDep
from app.api.schemas import WorkProgress
from app.main import SLPTApp
from db.jobs import list_jobs
from db.schema import Job
from db.work import latest_work

router = APIRouter(tags=["Scoring"])


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "message": job.message,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "detail": job.detail,
    }


@router.get("/scoring/", summary="Progress of scoring, embedding and ingestion jobs (newest first), and the newest "
            "embedding and scoring targets' batches across every replica")
def scoring_status(app: AppDep, user: AnyUser, limit: int = 20) -> dict[str, Any]:
    with app.datastore().sessions() as session:
        jobs = [job_json(j) for kind in ("scoring", "embedding", "ingestion") for j in list_jobs(session, kind=kind, limit=limit)]
        work = [WorkProgress.of(totals).model_dump() for totals in latest_work(session)]
    jobs.sort(key=lambda j: j["started_at"] or "", reverse=True)
    return {"jobs": jobs[:limit], "running": [j for j in jobs if j["state"] in ("queued", "running")], "work": work}


@router.post("/scoring/{method}", summary="Run one scoring method in the background")
def run_scoring(method: str, app: AppDep, user: AdminUser, params: dict[str, Any] | None = None) -> Any:
    return start_scoring(app, method, params)


def start_scoring(app: SLPTApp, method: str, params: dict[str, Any] | None) -> Any:
    """Start stock MONAI Label's background scoring, which submits a job for any name: unknown methods get a 404."""
    if method not in app.scoring_names():
        raise HTTPException(404, f"unknown scoring method {method!r}; available: {sorted(app.scoring_names())}")
    return stock_scoring.run_method(method, params, False)
