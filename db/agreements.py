"""Stored agreement between label versions of double-read volumes (docs/design.md, "Review, double reading and
agreement"). What to compare is decided here from the database; the figures are computed from the files by the app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.reviews import adjudicated_label, reader_labels
from db.schema import Agreement, Image, Label, utcnow


@dataclass(frozen=True)
class Comparison:
    """Two final label versions of one volume to compare; ``reference``: the second is the label that trains."""

    image_id: str
    first: Label
    second: Label
    reference: bool


def comparisons_due(session: Session, image_id: str) -> list[Comparison]:
    """The comparisons of a double-read volume not stored yet: every pair of its readers' newest labels once all
    readers have read it, and each reader's against its adjudication once there is one."""
    image = session.get(Image, image_id)
    if image is None or image.readers <= 1:
        return []
    readers = reader_labels(session, image_id)
    due = []
    if len(readers) >= image.readers:
        ordered = [readers[name] for name in sorted(readers)]
        due += [Comparison(image_id, a, b, False) for a, b in combinations(ordered, 2)]
    adjudicated = adjudicated_label(session, image_id)
    if adjudicated is not None:
        due += [Comparison(image_id, label, adjudicated, True) for label in readers.values()]
    stored = {(row.first_version, row.second_version)
              for row in session.scalars(select(Agreement).where(Agreement.image_id == image_id))}
    return [c for c in due if (c.first.version, c.second.version) not in stored]


def double_read_images(session: Session) -> list[str]:
    return list(session.scalars(select(Image.id).where(Image.readers > 1).order_by(Image.id)))


def store_agreement(session: Session, comparison: Comparison, metrics: dict[str, Any],
                    now: datetime | None = None) -> Agreement:
    row = Agreement(
        image_id=comparison.image_id, first_version=comparison.first.version,
        second_version=comparison.second.version, first_annotator=comparison.first.annotator or "unknown",
        second_annotator=comparison.second.annotator or "unknown", reference=comparison.reference,
        metrics=metrics, computed_at=now or utcnow(),
    )
    session.merge(row)  # computed twice by two threads: the same figures, one row
    return row


def agreements(session: Session) -> list[Agreement]:
    return list(session.scalars(select(Agreement).order_by(Agreement.image_id, Agreement.first_version,
                                                           Agreement.second_version)))
