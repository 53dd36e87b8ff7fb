"""``GET /info/`` and ``GET /health``: open without a token (Slicer reads the app's info before logging in;
a load balancer or Docker probes health)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import AppDep
from app.api.schemas import Health
from db.jobs import list_jobs
from db.model_versions import latest_model_version

router = APIRouter()


@router.get("/info/", tags=["AppService"], summary="The app's models, strategies, labels and datastore summary")
def app_info(app: AppDep) -> JSONResponse:
    return JSONResponse(app.info())


@router.get("/health", tags=["AppService"], response_model=Health, summary="Database reachable, model, running jobs")
def health(app: AppDep) -> JSONResponse:
    try:
        with app.datastore().sessions() as session:
            session.execute(text("SELECT 1"))
            model = latest_model_version(session)
            running = len(list_jobs(session, state="running"))
    except Exception as error:  # noqa: BLE001 - a health probe reports, it does not fail
        body = Health(status="degraded", database=False, model_version=None, running_jobs=0,
                      inference_queue=app.infer_queue.depth(), auth=app.settings.auth)
        return JSONResponse(body.model_dump() | {"error": f"{type(error).__name__}: {error}"}, status_code=503)
    body = Health(status="ok", database=True, model_version=model.id if model else None, running_jobs=running,
                  inference_queue=app.infer_queue.depth(), auth=app.settings.auth)
    return JSONResponse(body.model_dump())
