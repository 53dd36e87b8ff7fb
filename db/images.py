"""The ``images`` table: ingestion (idempotent upsert) and label-status queries."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from db.engine import STATISTICS_ROWS, refresh_statistics, upsert_rows
from db.errors import DBError, UnknownImageError
from db.schema import LABEL_STATUSES, Image, check_aware, utcnow

CHECKSUM_PATTERN = re.compile(r"^SHA256:[0-9a-f]{64}$")
# Ids per IN (...) list: stays far below SQLite's limit on bound parameters.
IN_BATCH = 1000


@dataclass(frozen=True)
class ImageRecord:
    """What ingestion knows about one volume.

    ``id`` is MONAI Label's image id (the file name without extension), ``shape`` and ``spacing`` the
    volume's voxel grid (e.g. ``[96, 96, 64]`` and ``[1.0, 1.0, 2.5]``), ``checksum`` ``"SHA256:<hex>"``
    (the form Slicer verifies), ``grp`` the acquisition group if known, ``meta`` MONAI Label's info dict.
    """

    id: str
    path: str
    name: str
    shape: list[int] | None = None  # None: not read yet (db.ingestion reads it in the background)
    spacing: list[float] | None = None
    checksum: str | None = None
    grp: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id or "\\" in self.id or self.id in (".", ".."):
            raise DBError(f"invalid image id {self.id!r}: must be a non-empty file stem without path separators")
        if self.checksum is not None:
            check_checksum(self.checksum, what=f"image {self.id!r}")


def check_checksum(checksum: str, *, what: str) -> None:
    """Raise :class:`DBError` unless ``checksum`` reads ``SHA256:<64 lower-case hex digits>``."""
    if not CHECKSUM_PATTERN.match(checksum):
        raise DBError(f"checksum of {what} must read 'SHA256:<64 hex digits>', got {checksum!r}")


def upsert_images(session: Session, records: list[ImageRecord], now: datetime | None = None) -> None:
    """Insert new images and refresh the file facts of known ones, in one bulk statement per batch.

    Idempotent by id. A re-ingested image keeps its ``label_status``, lease and ``ingested_at``; its path,
    name, shape, spacing, checksum, group and meta are replaced.
    """
    duplicates = sorted(i for i, n in Counter(r.id for r in records).items() if n > 1)
    if duplicates:
        raise DBError(f"duplicate image ids in one ingestion: {duplicates[:10]}")
    check_aware(now)
    ingested_at = now or utcnow()
    # New rows continue the ingestion order; re-ingested ones keep their seq (it is not in ``refreshed``).
    first_seq = (session.scalar(select(func.max(Image.seq))) or 0) + 1
    rows = [
        {
            "id": r.id,
            "path": r.path,
            "name": r.name,
            "shape": None if r.shape is None else list(r.shape),
            "spacing": None if r.spacing is None else list(r.spacing),
            "checksum": r.checksum,
            "grp": r.grp,
            "meta": r.meta,
            "seq": first_seq + position,
            "ingested_at": ingested_at,
            "label_status": "unlabeled",
            "lease_holder": None,
            "lease_expires_at": None,
        }
        for position, r in enumerate(records)
    ]
    refreshed = ["path", "name", "shape", "spacing", "checksum", "grp", "meta"]
    upsert_rows(session, Image.__table__, rows, ["id"], refreshed)
    if len(rows) >= STATISTICS_ROWS:
        refresh_statistics(session, Image.__table__)


def get_image(session: Session, image_id: str) -> Image | None:
    return session.get(Image, image_id)


def require_image(session: Session, image_id: str) -> Image:
    """The image row, or :class:`UnknownImageError`."""
    image = session.get(Image, image_id)
    if image is None:
        raise UnknownImageError(f"unknown image id {image_id!r}")
    return image


def require_known(session: Session, ids: list[str]) -> None:
    """Raise :class:`UnknownImageError` naming the ids (first ten) that are not in ``images``."""
    unique = list(dict.fromkeys(ids))
    known: set[str] = set()
    for start in range(0, len(unique), IN_BATCH):
        batch = unique[start : start + IN_BATCH]
        known.update(session.scalars(select(Image.id).where(Image.id.in_(batch))))
    missing = [i for i in unique if i not in known]
    if missing:
        raise UnknownImageError(f"{len(missing)} unknown image ids: {missing[:10]}")


def image_ids(session: Session, status: str | None = None) -> list[str]:
    """The ids of every image in the campaign (archived ones left out), or of those with ``label_status == status``,
    sorted."""
    query = select(Image.id).order_by(Image.id)
    if status is None:
        query = query.where(Image.label_status != "archived")
    else:
        if status not in LABEL_STATUSES:
            raise DBError(f"unknown label status {status!r}: use one of {LABEL_STATUSES}")
        query = query.where(Image.label_status == status)
    return list(session.scalars(query))


def live_lease(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """SQL condition: the image is held by a lease that has not expired at ``now`` (a value or parameter)."""
    return and_(Image.lease_expires_at.is_not(None), Image.lease_expires_at >= now)


def free_of_lease(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """SQL condition: nobody holds the image at ``now`` (no lease, or an expired one)."""
    return or_(Image.lease_expires_at.is_(None), Image.lease_expires_at < now)


def lease_holder_count(session: Session, now: datetime | None = None) -> int:
    """How many distinct annotators hold a live lease at ``now`` (the active annotators)."""
    check_aware(now)
    query = select(func.count(func.distinct(Image.lease_holder))).where(live_lease(now or utcnow()))
    return int(session.scalar(query) or 0)


def counts(session: Session, now: datetime | None = None) -> dict[str, int]:
    """``{"total", "labeled", "unlabeled", "leased"}`` in one query; ``leased`` counts live leases."""
    check_aware(now)
    now = now or utcnow()
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Image.label_status == "labeled", 1), else_=0)), 0),
            func.coalesce(func.sum(case((live_lease(now), 1), else_=0)), 0),
        ).where(Image.label_status != "archived")
    ).one()
    total, labeled, leased = (int(v) for v in row)
    return {"total": total, "labeled": labeled, "unlabeled": total - labeled, "leased": leased}
