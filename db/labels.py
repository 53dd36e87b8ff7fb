"""Label records (the files stay on disk; the caller writes them, this module records them and numbers versions)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db import reviews
from db.audit import audit
from db.engine import is_postgresql
from db.errors import DBError, NotFoundError, UnknownImageError
from db.images import check_checksum
from db.schema import ArchivedLabel, Assignment, Image, Label, check_aware, utcnow

FINAL_TAG = "final"


def record_label(
    session: Session,
    image_id: str,
    tag: str,
    path: str | Callable[[int], str],
    annotator: str | None,
    checksum: str | None = None,
    meta: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Label:
    """Record a label file as the next version of (image, tag), in the caller's transaction.

    ``path`` is the file's path, or a function that writes the file of a given version number and returns its path:
    it is called with the image row locked, once the version is known and before the row is added, so a file named
    after its version is written exactly once per version (a failed write records nothing).
    For ``tag == "final"`` the label is ``submitted`` for review, its active lease is closed (state ``labeled``) and
    the image becomes ``labeled`` once as many different annotators as it needs readers have saved one (one,
    unless it is double-read: :mod:`db.reviews`). Every save writes a ``label_saved`` audit event. Raises :class:`UnknownImageError` for an
    unknown image and :class:`DBError` for an empty tag or a malformed checksum (``SHA256:<hex>``).
    On SQLite, open the transaction with :func:`db.engine.write_session`.
    """
    if not tag:
        raise DBError(f"label tag of image {image_id!r} must be a non-empty string")
    if checksum is not None:
        check_checksum(checksum, what=f"label {tag!r} of image {image_id!r}")
    check_aware(now)
    image = _lock_image(session, image_id)  # serialises saves per image, so versions never collide
    when = now or utcnow()
    previous = max(
        session.scalar(select(func.coalesce(func.max(table.version), 0)).where(table.image_id == image_id, table.tag == tag))
        for table in (Label, ArchivedLabel)  # an archived version's number is never given again
    )
    version = previous + 1
    if callable(path):
        path = path(version)
    label = Label(
        image_id=image_id,
        tag=tag,
        path=path,
        annotator=annotator,
        created_at=when,
        version=version,
        checksum=checksum,
        meta=meta or {},
    )
    session.add(label)
    if tag == FINAL_TAG:
        reviews.note_submission(session, label, when)
        session.flush()
        if image.readers <= 1 or reviews.readers_done(session, image_id) >= image.readers:
            image.label_status = "labeled"
        image.lease_holder = image.lease_expires_at = None
        session.execute(
            update(Assignment)
            .where(Assignment.image_id == image_id, Assignment.state == "active")
            .values(state="labeled", closed_at=when)
        )
    audit(session, annotator or "unknown", "label_saved", image_id, tag=tag, version=label.version, path=path)
    session.flush()
    return label


def labels_for(session: Session, image_id: str) -> list[Label]:
    """Every label version of an image, by tag then version."""
    query = select(Label).where(Label.image_id == image_id).order_by(Label.tag, Label.version)
    return list(session.scalars(query))


def latest_label(session: Session, image_id: str, tag: str) -> Label | None:
    """The newest version of the image's label with ``tag``, if any."""
    query = (
        select(Label).where(Label.image_id == image_id, Label.tag == tag).order_by(Label.version.desc()).limit(1)
    )
    return session.scalar(query)


_LABEL_COLUMNS = ("image_id", "tag", "path", "annotator", "created_at", "version", "checksum", "meta", "review_status")


def archive_label(session: Session, image_id: str, tag: str, actor: str) -> list[ArchivedLabel]:
    """Take every version of the image's label with ``tag`` out of use: the rows move to ``archived_labels``, the
    files stay where they are, :func:`restore_label` undoes it. Archiving ``final`` makes the image ``unlabeled``
    again. Writes a ``label_archived`` audit event. :class:`NotFoundError` if the image has no label with that tag."""
    image = _lock_image(session, image_id)
    live = list(session.scalars(select(Label).where(Label.image_id == image_id, Label.tag == tag)))
    if not live:
        raise NotFoundError(f"image {image_id!r} has no label tagged {tag!r}")
    when = utcnow()
    archived = [ArchivedLabel(**{c: getattr(label, c) for c in _LABEL_COLUMNS}, archived_at=when, archived_by=actor)
                for label in live]
    session.execute(delete(Label).where(Label.image_id == image_id, Label.tag == tag))
    session.add_all(archived)
    if tag == FINAL_TAG and image.label_status == "labeled":
        image.label_status = "unlabeled"
    audit(session, actor, "label_archived", image_id, tag=tag, versions=[label.version for label in live])
    session.flush()
    return archived


def restore_label(session: Session, image_id: str, tag: str, actor: str) -> list[Label]:
    """Bring back the archived versions of the image's label with ``tag`` (next to any saved since: version numbers
    never collide). :class:`NotFoundError` if none is archived."""
    image = _lock_image(session, image_id)
    archived = list(session.scalars(select(ArchivedLabel).where(ArchivedLabel.image_id == image_id,
                                                                ArchivedLabel.tag == tag)))
    if not archived:
        raise NotFoundError(f"image {image_id!r} has no archived label tagged {tag!r}")
    restored = [Label(**{c: getattr(row, c) for c in _LABEL_COLUMNS}) for row in archived]
    session.execute(delete(ArchivedLabel).where(ArchivedLabel.image_id == image_id, ArchivedLabel.tag == tag))
    session.add_all(restored)
    if tag == FINAL_TAG and image.label_status == "unlabeled":
        image.label_status = "labeled"
        image.lease_holder = image.lease_expires_at = None
    audit(session, actor, "label_restored", image_id, tag=tag, versions=[label.version for label in restored])
    session.flush()
    return restored


def _lock_image(session: Session, image_id: str) -> Image:
    """Load (PostgreSQL: lock) the image row for the rest of the transaction."""
    query = select(Image).where(Image.id == image_id).execution_options(populate_existing=True)
    if is_postgresql(session):
        query = query.with_for_update()
    image = session.scalar(query)
    if image is None:
        raise UnknownImageError(f"unknown image id {image_id!r}")
    return image
