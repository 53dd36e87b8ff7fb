"""A volume's page: status, scores, history, and a picture of a few axial slices with the final label and the
current model's uncertainty overlaid (rendered on the server, kept on disk)."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from app.api.deps import AppDep, SessionDep, UiAdmin
from app.api.ui import UiError, render
from app.modelstore import NoModelError
from app.quality import read_label
from app.ui.slices import cached_picture, read_volume, render as render_slices
from db.labels import FINAL_TAG, labels_for
from db.model_versions import latest_model_version
from db.overview import assignments_of_image, scores_of_image, volume_status
from db.schema import Image, Label

router = APIRouter()
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _volume(session, image_id: str) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise UiError(404, f"unknown volume {image_id!r}")
    return image


def _final(session, image_id: str) -> Label | None:
    finals = [label for label in labels_for(session, image_id) if label.tag == FINAL_TAG]
    return finals[-1] if finals else None


@router.get("/volumes/{image_id}", response_class=HTMLResponse)
def volume(image_id: str, user: UiAdmin, app: AppDep, session: SessionDep) -> HTMLResponse:
    image = _volume(session, image_id)
    status = session.scalar(select(volume_status(app.datastore().clock())).where(Image.id == image_id))
    model = latest_model_version(session)
    return render("volume.html", user=user, image=image, volume_status=status, label=_final(session, image_id),
                  version=model.id if model else None, scores=scores_of_image(session, image_id),
                  assignments=assignments_of_image(session, image_id))


@router.get("/volumes/{image_id}/slices.png")
def slices(image_id: str, user: UiAdmin, app: AppDep, session: SessionDep) -> Response:
    image = _volume(session, image_id)
    label = _final(session, image_id)
    model = latest_model_version(session)
    version = model.id if model else None
    key = _SAFE.sub("_", f"{image_id}-{label.version if label else 0}-{version or 'none'}")

    def draw() -> bytes:
        uncertainty = None
        if version is not None:
            try:
                uncertainty = app.predictions.get(version, image_id, image.path).disagreement
            except NoModelError:
                uncertainty = None
        return render_slices(read_volume(image.path), read_label(label.path) if label else None, uncertainty)

    data = cached_picture(app.settings.work_dir(app.layout.root) / "ui-pictures", key, draw)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})
