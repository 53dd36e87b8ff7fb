"""``GET /admin/export``: the final labels as a streamed MSD-layout ``.tar.gz`` (see :mod:`app.export`)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import AdminUser, AppDep, audit_action
from app.export import final_labels, msd_archive
from db.engine import write_session

router = APIRouter(tags=["Admin: export"])


@router.get("/export", summary="Final labels as an MSD archive (imagesTr/, labelsTr/, dataset.json, manifest.json)",
            response_class=StreamingResponse, responses={200: {"content": {"application/gzip": {}}}})
def export(user: AdminUser, app: AppDep, request: Request) -> StreamingResponse:
    with write_session(app.datastore().sessions) as session:
        cases = final_labels(session)
        audit_action(session, user, request, "export", volumes=len(cases))
    labels = {value: name for name, value in app.labels.items()} | {0: "background"}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    description = {"name": app.name, "description": f"final labels exported {stamp}"}
    return StreamingResponse(
        msd_archive(cases, dict(sorted(labels.items())), description), media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="slpt-labels-{stamp}.tar.gz"'},
    )
