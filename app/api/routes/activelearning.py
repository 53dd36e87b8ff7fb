"""``POST /activelearning/{strategy}``: Next Sample as a database claim.

Stock MONAI Label runs this as ``async def`` calling blocking code (one slow request stalls every user), rebuilds the
whole ``/info`` on every call and rewrites the image's info after each sample. Here it is a plain ``def`` (run in the
worker thread pool) doing one claim transaction and one read, and it answers with a ready ``JSONResponse`` (a plain dict
would be validated and re-encoded field by field on the event loop, which every request waits on).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import JSONResponse

from app.api.deps import AnyUser, AppDep, annotator_key, is_reviewer

router = APIRouter(prefix="/activelearning", tags=["ActiveLearning"])


@router.post("/{strategy}", summary="Claim the next volume to label with a strategy")
def next_sample(
    strategy: str,
    request: Request,
    app: AppDep,
    user: AnyUser,
    params: dict[str, Any] | None = Body(None),
) -> JSONResponse:
    if strategy not in app.strategy_names():
        raise HTTPException(404, f"unknown strategy {strategy!r}; available: {sorted(app.strategy_names())}")
    if getattr(app.strategy(strategy), "reviewers_only", False) and not is_reviewer(user):
        raise HTTPException(403, f"strategy {strategy!r} is for reviewers and admins")
    params = dict(params or {})
    params["annotator"] = annotator_key(request, user, params.get("client_id"))
    return JSONResponse(app.next_sample({**params, "strategy": strategy}))
