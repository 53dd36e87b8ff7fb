"""``POST /infer/{model}`` and ``POST /train/{model}`` for our models, with clear 4xx answers.

Inference runs as a plain ``def`` (worker thread pool), not as stock MONAI Label's ``async def`` that blocks the event
loop and so every other annotator. Training checks that there is something to learn from before it starts the stock
background training process.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Form, HTTPException
from monailabel.endpoints import train as stock_train
from monailabel.endpoints.infer import ResultType, send_response

from app.api.deps import AdminUser, AnyUser, AppDep
from app.main import SLPTApp
from app.inference_queue import QueueFull
from app.jobs import TrainingBusy, reserve_training
from db.engine import write_session
from db.jobs import finish_job
from app.modelstore import NoModelError

router = APIRouter(tags=["Models"])
RETRY_AFTER_S = 5


@router.post("/infer/{model}", summary="Segment a volume with the newest published prompt model")
def infer(
    model: str,
    app: AppDep,
    user: AnyUser,
    background_tasks: BackgroundTasks,
    image: str = "",
    params: str = Form("{}"),
    output: ResultType | None = None,
) -> Any:
    if model not in app.infer_names():
        raise HTTPException(404, f"unknown model {model!r}; available: {sorted(app.infer_names())}")
    if not image or not app.datastore().get_image_uri(image):
        raise HTTPException(404, f"unknown image id {image!r}")
    try:
        request = {**json.loads(params or "{}"), "model": model, "image": image, "image_id": image}
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"params is not valid JSON: {exc.msg}") from None
    try:
        with app.infer_queue.slot():
            result = app.infer(request)
    except NoModelError as exc:
        raise HTTPException(409, str(exc)) from None
    except QueueFull as exc:
        raise HTTPException(503, f"the server is busy: {exc}; try again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    return send_response(app.datastore(), result, output, background_tasks)


@router.put("/model/{model}", summary="Upload model weights (refused: versions are published by training)",
            status_code=409, responses={404: {"description": "Unknown model"}, 409: {"description": "Not supported"}})
def upload_model(model: str, app: AppDep, user: AdminUser) -> Any:
    # Stock MONAI Label overwrites the infer task's weight file; ours keeps versioned models in the database.
    if model not in app.infer_names():
        raise HTTPException(404, f"unknown model {model!r}; available: {sorted(app.infer_names())}")
    raise HTTPException(409, f"{model!r} versions are published by training (POST /train/slpt), not uploaded; "
                             "a pre-trained backbone is configured with the 'backbone' setting")


@router.post("/train/{model}", summary="Start training (prompt tuning) in the background")
def train(model: str, app: AppDep, user: AdminUser, params: dict[str, Any] | None = None) -> Any:
    return start_training(app, model, params)


def start_training(app: SLPTApp, model: str, params: dict[str, Any] | None) -> Any:
    """Start the stock background training process, after checking there is something to learn from and that no
    other training runs on any server of the database (else 4xx)."""
    if model not in app.trainer_names():
        raise HTTPException(404, f"unknown model {model!r}; available: {sorted(app.trainer_names())}")
    if not app.datastore().status()["completed"]:
        raise HTTPException(409, "no volume has a final label yet: submit labels before training")
    try:
        app.model_store.backbone()
    except NoModelError as exc:
        raise HTTPException(409, str(exc)) from None
    try:
        job_id = reserve_training(app.datastore().sessions, model=model)
    except TrainingBusy as exc:
        raise HTTPException(409, str(exc)) from None
    try:
        started = stock_train.run_model(model, {**(params or {}), "job_id": job_id}, False, False)
    except BaseException as exc:
        with write_session(app.datastore().sessions) as session:
            finish_job(session, job_id, "failed", message=f"the training process did not start: {exc}")
        raise
    return {**started, "job_id": job_id} if isinstance(started, dict) else started
