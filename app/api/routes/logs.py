"""``GET /logs/``: the server log's tail, with bounded arguments (stock MONAI Label answers 500 for a huge ``lines``);
``GET /logs/gpu``: ``nvidia-smi`` output, or 404 on a machine without an NVIDIA GPU (stock answers 500)."""

from __future__ import annotations

import shutil
import subprocess

import os
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response
from monailabel.config import settings
from monailabel.endpoints.logs import get_logs

from app.api.deps import AdminUser

router = APIRouter(prefix="/logs", tags=["Logs"])

MAX_LINES = 100_000


@router.get("/", summary="The server log's last lines (HTML viewer, or plain text with text=true)")
def server_log(
    user: AdminUser,
    lines: Annotated[int, Query(ge=0, le=MAX_LINES, description="Last lines to show; 0 = the whole file")] = 300,
    html: bool = True,
    text: bool = False,
    refresh: Annotated[int, Query(ge=0, le=3600, description="HTML viewer refresh in seconds; 0 = off")] = 0,
) -> Response:
    return get_logs(os.path.join(settings.MONAI_LABEL_APP_DIR, "logs", "app.log"), lines, html, text, refresh)


@router.get("/gpu", response_class=PlainTextResponse, summary="GPU status (nvidia-smi)")
def gpu_info(user: AdminUser) -> str:
    command = shutil.which("nvidia-smi")
    if command is None:
        raise HTTPException(404, "no NVIDIA GPU on this server (nvidia-smi not found)")
    result = subprocess.run([command], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise HTTPException(503, f"nvidia-smi failed: {result.stderr.strip() or result.returncode}")
    return result.stdout
