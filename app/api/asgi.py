"""The ASGI app ``slpt serve`` runs: our routes first (they win on equal paths), then every stock MONAI Label router.

Mirrors ``monailabel.app`` (lifespan, CORS, static files) so 3D Slicer sees the same API.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import monailabel
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from monailabel.config import settings
from monailabel.endpoints import (
    activelearning,
    batch_infer,
    datastore,
    infer,
    info,
    login,
    logs,
    model,
    ohif,
    proxy,
    scoring,
    session,
    train,
    wsi_infer,
)
from monailabel.interfaces.utils.app import app_instance

from app.api.routes import activelearning as our_activelearning
from app.api.routes import datastore as our_datastore
from app.api.routes import jobs as our_jobs
from app.api.routes import models as our_models


@asynccontextmanager
async def lifespan(_: FastAPI):
    instance = app_instance()
    instance.server_mode(True)
    instance.on_init_complete()
    yield


# FastAPI's native OpenTelemetry spans, metrics and logs run on every request even when nothing exports them; they
# are on only when the operator asks FastAPI to configure exporters.
_OTEL = os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
app = FastAPI(
    title="slpt-label", openapi_url="/openapi.json", docs_url="/docs", lifespan=lifespan,
    telemetry={"tracing": _OTEL, "metrics": _OTEL, "logs": _OTEL, "operation_spans": _OTEL},
)
origins = [str(o) for o in settings.MONAI_LABEL_CORS_ORIGINS] or ["*"]
app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"])
app.mount("/static", StaticFiles(directory=os.path.join(os.path.dirname(monailabel.__file__), "endpoints", "static")))

prefix = settings.MONAI_LABEL_API_STR
for router in (our_activelearning.router, our_datastore.router, our_models.router, our_jobs.router):
    app.include_router(router, prefix=prefix)
if settings.MONAI_LABEL_AUTH_ENABLE:
    app.include_router(login.router, prefix=prefix)
for module in (info, model, infer, wsi_infer, batch_infer, train, activelearning, scoring, datastore, logs, ohif, proxy, session):
    app.include_router(module.router, prefix=prefix)
