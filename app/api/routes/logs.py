"""``GET /logs/gpu``: ``nvidia-smi`` output, or 404 on a machine without an NVIDIA GPU (stock MONAI Label answers 500)."""

from __future__ import annotations

import shutil
import subprocess

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse

from app.api.deps import AdminUser

router = APIRouter(prefix="/logs", tags=["Logs"])


@router.get("/gpu", response_class=PlainTextResponse, summary="GPU status (nvidia-smi)")
def gpu_info(user: AdminUser) -> str:
    command = shutil.which("nvidia-smi")
    if command is None:
        raise HTTPException(404, "no NVIDIA GPU on this server (nvidia-smi not found)")
    result = subprocess.run([command], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise HTTPException(503, f"nvidia-smi failed: {result.stderr.strip() or result.returncode}")
    return result.stdout
