"""Taking a volume out of the campaign and bringing it back.

Archiving ends a live lease, so this module builds on :mod:`db.claims` (which builds on :mod:`db.images`): keeping it
apart from both is what keeps the three free of an import circle.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.claims import release_volume
from db.errors import DBError
from db.images import require_image
from db.schema import Image, Label, utcnow


def archive_image(session: Session, image_id: str) -> Image:
    """Take a volume out of the campaign: no claim, round, training or export sees it; its row, labels, leases history
    and files stay, so :func:`restore_image` undoes it. A live lease on it ends (``released``)."""
    image = require_image(session, image_id)
    if image.label_status == "archived":
        raise DBError(f"image {image_id!r} is archived already")
    if image.lease_holder is not None and image.lease_expires_at is not None and image.lease_expires_at >= utcnow():
        release_volume(session, image_id)
    image.label_status = "archived"
    image.lease_holder = image.lease_expires_at = None
    session.flush()
    return image


def restore_image(session: Session, image_id: str) -> Image:
    """Bring an archived volume back: ``labeled`` if it has a final label, else ``unlabeled``."""
    image = require_image(session, image_id)
    if image.label_status != "archived":
        raise DBError(f"image {image_id!r} is not archived")
    final = session.scalar(select(Label.id).where(Label.image_id == image_id, Label.tag == "final").limit(1))
    image.label_status = "labeled" if final is not None else "unlabeled"
    session.flush()
    return image
