"""The ASGI app ``slpt serve`` runs: our routes first (they win on equal paths), then every stock MONAI Label router.

Mirrors ``monailabel.app`` (lifespan, CORS, static files) so 3D Slicer sees the same API.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import monailabel
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from monailabel.config import settings
from monailabel.endpoints import (
    activelearning,
    batch_infer,
    datastore,
    infer,
    info,
    logs,
    model,
    ohif,
    proxy,
    scoring,
    session,
    train,
)
from monailabel.interfaces.utils.app import app_instance

from app.api.policy import stock_route_policy
from app.api.routes import activelearning as our_activelearning
from app.api.routes import admin as our_admin
from app.api.routes import auth as our_auth
from app.api.routes import datastore as our_datastore
from app.api.routes import info as our_info
from app.api.routes import jobs as our_jobs
from app.api.routes import logs as our_logs
from app.api.routes import models as our_models
from app.api.routes import review as our_review
from app.api.routes import sessions as our_sessions
from app.api.routes import ui as our_ui
from app.api.routes import users as our_users
from app.api.security import adopt_stock_routes
from app.api.ui import UI_FILES, UiError, ui_error_handler
from app.settings import AppSettings
from db.errors import DBError, NotFoundError
from db.claims import LeaseConflictError
from db.reviews import OwnLabelError, ReviewConflictError, StaleReviewError
from db.users import DuplicateUserError


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
app.mount("/ui/static", StaticFiles(directory=UI_FILES / "static"), name="ui-static")
app.mount("/static", StaticFiles(directory=os.path.join(os.path.dirname(monailabel.__file__), "endpoints", "static")))

# Our accounts (app.api.security): stock routes check roles only while MONAI Label's auth flag is set, and take their
# user from our current_user.
if AppSettings.from_conf(settings.MONAI_LABEL_APP_CONF).auth:
    settings.MONAI_LABEL_AUTH_ENABLE = True
adopt_stock_routes()



@app.get("/", include_in_schema=False)
def api_page() -> RedirectResponse:
    """Stock MONAI Label answers ``/`` with its API page; MONAILabelReviewer checks the server is up with it."""
    return RedirectResponse(app.docs_url)


prefix = settings.MONAI_LABEL_API_STR
ours = (our_info, our_auth, our_users, our_admin, our_activelearning, our_datastore, our_models, our_jobs, our_logs,
        our_sessions, our_review, our_ui)
for module in ours:
    app.include_router(module.router, prefix=prefix)
# Not mounted: wsi_infer (whole-slide pathology; this app serves CT volumes only).
stock = (info, model, infer, batch_infer, train, activelearning, scoring, datastore, logs, ohif, proxy, session)
for module in stock:
    app.include_router(module.router, prefix=prefix, dependencies=[Depends(stock_route_policy)])


def _answer(status: int):
    async def handler(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status)

    return handler


def _openapi_with_message_422():
    """Our routes answer 422 with a message (``{"detail": "label rejected: …"}``) when a request is well-formed but its
    content is not (a label off the image's grid); FastAPI documents 422 only as its validation-error list."""
    schema = _fastapi_openapi()
    errors = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
    if errors and "anyOf" not in errors["properties"]["detail"]:
        listed = errors["properties"]["detail"]
        errors["properties"]["detail"] = {"anyOf": [listed, {"type": "string"}], "title": "Detail"}
    return schema


_fastapi_openapi = app.openapi
app.openapi = _openapi_with_message_422


async def _stale_review(request: Request, error: StaleReviewError) -> JSONResponse:
    return JSONResponse({"detail": str(error), "newest_version": error.newest}, status_code=409)


# Repository errors are the caller's: an unknown id, a taken name, a lease in the way, a value out of range.
app.add_exception_handler(UiError, ui_error_handler)  # the dashboard refuses with pages, not JSON
for error_type, status in ((NotFoundError, 404), (DuplicateUserError, 409), (LeaseConflictError, 409), (DBError, 400),
                           (OwnLabelError, 403), (ReviewConflictError, 409)):
    app.add_exception_handler(error_type, _answer(status))
app.add_exception_handler(StaleReviewError, _stale_review)
