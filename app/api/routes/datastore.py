"""``PUT /datastore/label`` and ``PUT /datastore/image`` with validation; the listing and label downloads blinded for
double reading; ``PUT /datastore/updatelabelinfo`` (MONAILabelReviewer's review call).

Stock MONAI Label accepts a label of the wrong shape or a non-NIfTI file as "final" and answers 500 for an unknown
image. Here every bad input gets a 4xx naming the problem, and nothing is written. The checks themselves (ids, the
image, the file) are the datastore's; this layer receives the upload, says who sends it and maps errors to statuses.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import get_mime_type

from app.api.deps import AdminUser, AnnotatorUser, AnyUser, AppDep, ReviewerUser, annotator_key, blinded_viewer, is_admin
from db.engine import write_session
from db.errors import NotFoundError
from db.reviews import APPROVED, CHANGES_REQUESTED, ReviewConflictError, check_comment, review_label
from db.volumes import InvalidIdError, InvalidLabelError, InvalidVolumeError, volume_suffix

router = APIRouter(prefix="/datastore", tags=["Datastore"])

CHUNK = 1 << 20


def _parse_params(params: str, name: str = "params") -> dict[str, Any]:
    try:
        parsed = json.loads(params, parse_constant=_no_constant) if params else {}
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"{name} is not valid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise HTTPException(400, f"{name}: {exc}") from None
    if not isinstance(parsed, dict):
        raise HTTPException(400, f"{name} must be a JSON object")
    return parsed


def _no_constant(name: str) -> None:
    # NaN and Infinity are not JSON: PostgreSQL's JSON columns refuse them.
    raise ValueError(f"{name} is not a JSON number")


def _receive(upload: UploadFile, folder: Path, max_bytes: int) -> Path:
    """Stream an upload into ``folder`` (413 past ``max_bytes``); keep a volume suffix so readers know the format."""
    suffix = volume_suffix(upload.filename or "") or ".nii.gz"
    target = folder / f"upload{suffix}"
    size = 0
    with open(target, "wb") as out:
        while chunk := upload.file.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"upload larger than the limit of {max_bytes // CHUNK} MB")
            out.write(chunk)
    return target


@router.put("/label", summary="Save a label (validated: readable, on the image's grid, values in the label map)")
def save_label(
    request: Request,
    app: AppDep,
    user: AnnotatorUser,
    image: str,
    params: str = Form("{}"),
    tag: str = DefaultLabelTag.FINAL.value,
    label: UploadFile = File(...),
) -> dict[str, Any]:
    info = _parse_params(params)
    info["annotator"] = annotator_key(request, user, info.get("client_id"))
    with tempfile.TemporaryDirectory() as folder:
        upload = _receive(label, Path(folder), app.settings.max_upload_mb * CHUNK)
        try:
            with app.label_lane:
                label_id = app.datastore().save_label(image, str(upload), tag, info)
        except InvalidIdError as exc:
            raise HTTPException(400, str(exc)) from None
        except InvalidLabelError as exc:
            raise HTTPException(422, f"label rejected: {exc}") from None
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
    result = app.on_save_label(image, label_id) or {}
    return {**result, "image": image, "label": label_id}


@router.put("/image", summary="Upload a new volume (ingested into the database)")
def add_image(
    app: AppDep,
    user: AnnotatorUser,
    image: str | None = None,
    params: str = Form("{}"),
    file: UploadFile = File(...),
) -> dict[str, Any]:
    name = Path(file.filename or "").name
    suffix = volume_suffix(name)
    image_id = image or (name[: -len(suffix)] if suffix else name)
    info = _parse_params(params)
    info["user"] = user.username
    with tempfile.TemporaryDirectory() as folder:
        upload = _receive(file, Path(folder), app.settings.max_upload_mb * CHUNK)
        try:
            image_id = app.datastore().add_image(image_id, str(upload), info)
        except InvalidIdError as exc:
            raise HTTPException(400, str(exc)) from None
        except InvalidVolumeError as exc:
            raise HTTPException(422, f"image rejected: {exc}") from None
    return {"image": image_id}


@router.put("/image/info", summary="Merge keys into a volume's info")
def update_image_info(app: AppDep, user: AdminUser, image: str, info: str = Form("{}")) -> dict[str, Any]:
    app.datastore().update_image_info(image, _parse_params(info, "info"))  # unknown image: 404 (app.api.asgi)
    return {"image": image}


@router.put("/label/info", summary="Merge keys into the info of a volume's newest label with a tag")
def update_label_info(app: AppDep, user: AdminUser, label: str, tag: str, info: str = Form("{}")) -> dict[str, Any]:
    app.datastore().update_label_info(label, tag, _parse_params(info, "info"))
    return {"label": label, "tag": tag}


@router.delete("/image", summary="Archive a volume (undo: POST /admin/volumes/{id}/restore); no file is deleted")
def archive_image(app: AppDep, user: AdminUser, request: Request, id: str) -> dict[str, Any]:
    app.datastore().remove_image(id, actor=user.username)  # unknown id: 404 (app.api.asgi)
    return {"image": id, "archived": True}


@router.delete("/", summary="Archive a volume (MONAI Label's older path of DELETE /datastore/image)", deprecated=True)
def archive_image_old_path(app: AppDep, user: AdminUser, request: Request, id: str) -> dict[str, Any]:
    return archive_image(app, user, request, id)


@router.delete("/label", summary="Archive every version of a volume's label with a tag (undo: POST "
               "/admin/volumes/{id}/labels/{tag}/restore); no file is deleted")
def archive_label(app: AppDep, user: AdminUser, id: str, tag: str) -> dict[str, Any]:
    app.datastore().remove_label(id, tag, actor=user.username)  # unknown image or tag: 404 (app.api.asgi)
    return {"image": id, "tag": tag, "archived": True}


@router.get("/", summary="The datastore: stats, volumes and labels ('all'; blinded for double reading; bounded "
            "above datastore_list_max volumes, pages with offset/limit) or the training list ('train')")
def datastore_listing(
    request: Request, app: AppDep, user: AnyUser, output: Literal["stats", "all", "train"] = "stats",
    offset: Annotated[int | None, Query(ge=0, description="output=all: page through every volume from here")] = None,
    limit: Annotated[int | None, Query(ge=1, description="output=all: volumes per page (at most datastore_list_max)")] = None,
):
    datastore = app.datastore()
    if output == "all":
        most = app.settings.datastore_list_max
        if limit is not None and limit > most:
            raise HTTPException(400, f"limit {limit} is above datastore_list_max ({most})")
        return JSONResponse(datastore.json(viewer=blinded_viewer(request, user), offset=offset, limit=limit,
                                           max_listed=most))
    return datastore.datalist() if output == "train" else datastore.status()


@router.get("/label", summary="Download a label (a double-read volume's other readers' labels are hidden from readers)")
def download_label(request: Request, app: AppDep, user: AnyUser, label: str, tag: str) -> FileResponse:
    viewer = blinded_viewer(request, user)
    path = app.datastore().get_label_uri(label, tag, viewer=viewer)
    if not path and viewer is not None and app.datastore().get_label_uri(label, tag):
        raise HTTPException(403, f"the {tag!r} label of {label!r} is blinded: another reader's label of a double-read "
                            "volume is shown only after adjudication")
    if not path or not Path(path).is_file():
        raise HTTPException(404, f"image {label!r} has no label tagged {tag!r}")
    return FileResponse(path, media_type=get_mime_type(path), filename=Path(path).name)


@router.get("/label/info", summary="A label's info (blinded like the download)")
def label_info(request: Request, app: AppDep, user: AnyUser, label: str, tag: str) -> dict[str, Any]:
    return app.datastore().get_label_info(label, tag, viewer=blinded_viewer(request, user))


#: MONAILabelReviewer's ``segmentationMeta.status`` values: which review transition each asks for (None: none).
REVIEWER_TRANSITIONS = {"": None, "segmented": None, "not segmented": None, "approved": APPROVED,
                        "flagged": CHANGES_REQUESTED}
REVIEWER_LEVELS = ("", "easy", "medium", "hard")


@router.put("/updatelabelinfo", summary="MONAILabelReviewer: store review status, difficulty and comment of a label "
            "(status 'approved' approves it, 'flagged' sends it back)")
def update_label_review_info(
    request: Request, app: AppDep, user: ReviewerUser, label: str, tag: str, params: str = Form("{}")
) -> dict[str, Any]:
    info = _parse_params(params)
    meta = info.get("segmentationMeta", {})
    if not isinstance(meta, dict):
        raise HTTPException(400, "segmentationMeta must be a JSON object")
    status, level, comment = meta.get("status", ""), meta.get("level", ""), meta.get("comment") or None
    if status not in REVIEWER_TRANSITIONS:
        raise HTTPException(400, f"unknown review status {status!r}: use one of {sorted(REVIEWER_TRANSITIONS)}")
    if level not in REVIEWER_LEVELS:
        raise HTTPException(400, f"unknown difficulty level {level!r}: use one of {list(REVIEWER_LEVELS)}")
    if comment is not None and not isinstance(comment, str):
        raise HTTPException(400, "comment must be a string")
    check_comment(comment)  # too long: 400
    datastore = app.datastore()
    transition = REVIEWER_TRANSITIONS[status] if tag == DefaultLabelTag.FINAL.value else None
    # The module sends no credentials: with auth off its reviewer is the name picked in it ("approvedBy").
    actor = annotator_key(request, user, meta.get("approvedBy") or None)
    with write_session(datastore.sessions) as session:
        if transition is not None:
            try:
                review_label(session, label, None, transition, actor, comment=comment, may_review_own=is_admin(user),
                             lease=datastore.lease, now=datastore.clock())
            except ReviewConflictError:
                if datastore.review_status(session, label) != transition:
                    raise
                # the module re-sends the status it shows when only the level or comment changed
        datastore.merge_label_info(session, label, tag, info)
    return {"label": label, "tag": tag}
