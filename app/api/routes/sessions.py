"""``PUT /session/``: stock MONAI Label's upload of a volume for a temporary session (3D Slicer sends a local volume
this way), with its inputs bounded: a negative or huge expiry and an archive that does not unpack get a 400 instead of
a 500."""

from __future__ import annotations

import tarfile
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, HTTPException, Query, UploadFile
from monailabel.endpoints import session as stock_session

from app.api.deps import AnyUser

router = APIRouter(prefix="/session", tags=["Session"])
MAX_EXPIRY_S = 30 * 24 * 3600


@router.put("/", summary="Create a session with an uploaded volume (or an archive of one, with uncompress)")
def create_session(
    background_tasks: BackgroundTasks,
    user: AnyUser,
    files: Annotated[list[UploadFile], File()],
    uncompress: bool = False,
    expiry: Annotated[int, Query(ge=0, le=MAX_EXPIRY_S, description="Seconds; 0: the server's default")] = 0,
) -> Any:
    try:
        return stock_session.create_session(background_tasks, uncompress, expiry, files)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise HTTPException(400, f"the upload cannot be used for a session: {type(error).__name__}: {error}") from None
