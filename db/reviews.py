"""Review of final labels and double reading (docs/design.md, "Review, double reading and agreement").

A final label version is ``submitted`` when saved; a reviewer moves it to ``approved`` or ``changes_requested``
(:func:`review_label`). Only the newest version of a volume's final label is reviewed: a review that names an older
one is stale. Every transition, the submission included, is a :class:`~db.schema.LabelReview` row.

A volume with ``readers`` > 1 is read by that many different annotators before it counts as labeled; each reader's
label is its own final version with its author. Until an adjudicator records the label that trains
(:func:`adjudicated_label`), readers see only their own label of such a volume (:func:`visible_final_label`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import claims
from db.audit import audit
from db.errors import DBError, NotFoundError
from db.schema import REVIEW_STATES, Assignment, Image, Label, LabelReview, User, check_aware, utcnow

FINAL_TAG = "final"
SUBMITTED, APPROVED, CHANGES_REQUESTED = REVIEW_STATES
MAX_COMMENT_CHARS = 4000
READERS_ALLOWED = (1, 2, 3)
#: The key of ``Label.meta`` that marks a label an adjudicator made from the readers' labels.
ADJUDICATION = "adjudication"


class StaleReviewError(DBError):
    """The review names a label version that is no longer the newest (``newest``: the one to review instead)."""

    def __init__(self, message: str, newest: int):
        super().__init__(message)
        self.newest = newest


class OwnLabelError(DBError):
    """A reviewer may not review their own label (admins may)."""


class ReviewConflictError(DBError):
    """The transition does not apply to the label's current state (already in it, or a double-read volume)."""


def check_comment(comment: str | None) -> None:
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise DBError(f"comment has {len(comment)} characters: at most {MAX_COMMENT_CHARS} are kept")


def note_submission(session: Session, label: Label, when: datetime) -> None:
    """A new final label version starts review as ``submitted`` (called by ``db.labels.record_label``)."""
    label.review_status = SUBMITTED
    session.add(LabelReview(image_id=label.image_id, version=label.version, from_status=None, to_status=SUBMITTED,
                            actor=label.annotator or "unknown", at=when, comment=None))


def readers_done(session: Session, image_id: str) -> int:
    """How many different annotators have a final label (not an adjudication) of the volume."""
    authors = {label.annotator for label in _final_labels(session, image_id) if ADJUDICATION not in (label.meta or {})}
    return len(authors - {None})


def review_label(
    session: Session,
    image_id: str,
    version: int | None,
    to_status: str,
    actor: str,
    *,
    comment: str | None = None,
    may_review_own: bool = False,
    lease: timedelta = claims.DEFAULT_LEASE,
    now: datetime | None = None,
) -> LabelReview:
    """Move the newest final label version of ``image_id`` to ``to_status`` (``approved`` or ``changes_requested``).

    ``version``: the version the reviewer looked at (None: the newest, for clients that do not say). Raises
    :class:`NotFoundError` without a final label, :class:`StaleReviewError` when a newer version exists,
    :class:`OwnLabelError` for one's own label unless ``may_review_own``, :class:`ReviewConflictError` when the label
    is in that state already or the volume is double-read and not adjudicated yet, :class:`DBError` for an unknown
    state or an oversized comment. ``changes_requested`` makes the volume unlabeled again and leases it to its
    annotator, whose next Next Sample offers it first; approving a label that was sent back takes that lease back.
    """
    if to_status not in (APPROVED, CHANGES_REQUESTED):
        raise DBError(f"unknown review status {to_status!r}: use {APPROVED!r} or {CHANGES_REQUESTED!r}")
    check_comment(comment)
    check_aware(now)
    image = claims.lock_image_row(session, image_id)
    label = _newest_final(session, image_id)
    if label is None:
        raise NotFoundError(f"image {image_id!r} has no final label to review")
    if version is not None and version != label.version:
        raise StaleReviewError(
            f"label version {version} of image {image_id!r} is not the newest: review version {label.version}",
            newest=label.version)
    if label.annotator == actor and not may_review_own:
        raise OwnLabelError(f"{actor!r} cannot review their own label of image {image_id!r}")
    if image.readers > 1 and ADJUDICATION not in (label.meta or {}):
        raise ReviewConflictError(f"image {image_id!r} is double-read: adjudicate its readers' labels instead")
    if label.review_status == to_status:
        raise ReviewConflictError(f"label version {label.version} of image {image_id!r} is {to_status} already")
    when = now or utcnow()
    row = LabelReview(image_id=image_id, version=label.version, from_status=label.review_status, to_status=to_status,
                      actor=actor, at=when, comment=comment)
    session.add(row)
    label.review_status = to_status
    # The latest review, where listings read it (``db.datastore``) without a query per label.
    label.meta = {**(label.meta or {}), "review": {"by": actor, "at": int(when.timestamp()), "comment": comment}}
    if to_status == CHANGES_REQUESTED:
        image.label_status = "unlabeled"
        if label.annotator:
            claims.return_volume(session, image_id, label.annotator, lease=lease, now=when)
    elif image.label_status == "unlabeled":  # approved after all: the volume is labeled again, its return lease ends
        image.label_status = "labeled"
        image.lease_holder = image.lease_expires_at = None
        session.execute(update(Assignment).where(Assignment.image_id == image_id, Assignment.state == "active")
                        .values(state="released", closed_at=when))
    audit(session, actor, f"label_{to_status}", image_id, version=label.version, comment=comment)
    session.flush()
    return row


def review_history(session: Session, image_id: str) -> list[LabelReview]:
    """Every review transition of the volume's final label versions, oldest first."""
    query = select(LabelReview).where(LabelReview.image_id == image_id).order_by(LabelReview.at, LabelReview.id)
    return list(session.scalars(query))


#: How long a label served to a reviewer is held for them; after that the queue offers it again.
REVIEW_HOLD = timedelta(minutes=30)


def next_to_review(
    session: Session, reviewer: str, now: datetime | None = None, hold: timedelta = REVIEW_HOLD
) -> Label | None:
    """The oldest submitted final label that is the newest version of a labeled, single-read volume, not
    ``reviewer``'s own and not held for another reviewer; it is then held for ``reviewer`` until ``now + hold``, so two
    reviewers asking at once get different labels. Asking again gives the reviewer the label they hold.

    Call it in a write transaction (it records the hold); on PostgreSQL a label another reviewer's transaction is
    taking right now is skipped (``SKIP LOCKED``), on SQLite write transactions are serial anyway.
    """
    check_aware(now)
    when = now or utcnow()
    newest = (select(Label.image_id, func.max(Label.version).label("version")).where(Label.tag == FINAL_TAG)
              .group_by(Label.image_id).subquery())
    query = (
        select(Label)
        .join(newest, (newest.c.image_id == Label.image_id) & (newest.c.version == Label.version))
        .join(Image, Image.id == Label.image_id)
        .where(Label.tag == FINAL_TAG, Label.review_status == SUBMITTED, Image.label_status == "labeled",
               Image.readers <= 1, (Label.annotator != reviewer) | Label.annotator.is_(None),
               Label.review_holder.is_(None) | (Label.review_holder == reviewer) | (Label.review_held_until <= when))
        .order_by(Label.created_at, Label.image_id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Label)
    label = session.scalar(query)
    if label is not None:
        label.review_holder, label.review_held_until = reviewer, when + hold
    return label


def set_readers(session: Session, image_ids: list[str], readers: int, actor: str) -> list[str]:
    """Mark unlabeled volumes for ``readers`` different annotators (1 undoes double reading); return their ids.

    :class:`NotFoundError` for an unknown id; :class:`ReviewConflictError` for a volume that is labeled or archived
    already (its reading is over)."""
    if readers not in READERS_ALLOWED:
        raise DBError(f"readers must be one of {READERS_ALLOWED}, got {readers}")
    ids = sorted(set(image_ids))
    rows = {image.id: image for image in session.scalars(select(Image).where(Image.id.in_(ids)))}
    if missing := [i for i in ids if i not in rows]:
        raise NotFoundError(f"unknown image id(s): {missing[:10]}")
    if done := [i for i in ids if rows[i].label_status != "unlabeled"]:
        raise ReviewConflictError(f"volume(s) labeled or archived already, their reading is over: {done[:10]}")
    session.execute(update(Image).where(Image.id.in_(ids)).values(readers=readers))
    audit(session, actor, "readers_set", None, readers=readers, images=ids)
    return ids


def reader_labels(session: Session, image_id: str) -> dict[str, Label]:
    """Each reader's newest final label of the volume (adjudications left out), by annotator."""
    newest: dict[str, Label] = {}
    for label in _final_labels(session, image_id):
        if label.annotator is not None and ADJUDICATION not in (label.meta or {}):
            newest[label.annotator] = label  # ascending versions: the last one wins
    return newest


def adjudicated_label(session: Session, image_id: str) -> Label | None:
    """The newest adjudication of the volume, if any."""
    made = [label for label in _final_labels(session, image_id) if ADJUDICATION in (label.meta or {})]
    return made[-1] if made else None


def visible_final_label(session: Session, image_id: str, viewer: str | None) -> Label | None:
    """The final label ``viewer`` may see: anyone's newest on a single-read or adjudicated volume; on a double-read
    volume still in reading only the viewer's own (None if they have none). ``viewer`` None: no blinding
    (reviewers and admins)."""
    image = session.get(Image, image_id)
    if image is None:
        return None
    newest = _newest_final(session, image_id)
    if viewer is None or image.readers <= 1 or newest is None or ADJUDICATION in (newest.meta or {}):
        return newest
    return reader_labels(session, image_id).get(viewer)


def blinded_images(session: Session) -> set[str]:
    """Volumes in double reading whose labels are hidden from other readers (not adjudicated yet)."""
    multi = set(session.scalars(select(Image.id).where(Image.readers > 1)))
    return multi - _adjudicated_images(session)


def _adjudicated_images(session: Session) -> set[str]:
    """Double-read volumes with an adjudication, in one query (listings and totals must not query per volume)."""
    query = (select(Label.image_id, Label.meta).join(Image, Image.id == Label.image_id)
             .where(Image.readers > 1, Label.tag == FINAL_TAG))
    return {image_id for image_id, meta in session.execute(query) if ADJUDICATION in (meta or {})}


def _final_labels(session: Session, image_id: str) -> list[Label]:
    query = select(Label).where(Label.image_id == image_id, Label.tag == FINAL_TAG).order_by(Label.version)
    return list(session.scalars(query))


def _newest_final(session: Session, image_id: str) -> Label | None:
    query = (select(Label).where(Label.image_id == image_id, Label.tag == FINAL_TAG)
             .order_by(Label.version.desc()).limit(1))
    return session.scalar(query)


def review_totals(session: Session) -> dict[str, int]:
    """Volumes by the review state of their newest final label, and double-read volumes by how far they are."""
    newest = (select(Label.image_id, func.max(Label.version).label("version")).where(Label.tag == FINAL_TAG)
              .group_by(Label.image_id).subquery())
    query = (select(Label.review_status, func.count())
             .join(newest, (newest.c.image_id == Label.image_id) & (newest.c.version == Label.version))
             .join(Image, Image.id == Label.image_id)
             .where(Label.tag == FINAL_TAG, Image.label_status == "labeled", Image.readers <= 1)
             .group_by(Label.review_status))
    totals = {state: 0 for state in REVIEW_STATES} | {state: count for state, count in session.execute(query)}
    multi = list(session.scalars(select(Image).where(Image.readers > 1, Image.label_status != "archived")))
    adjudicated = len({image.id for image in multi} & _adjudicated_images(session))
    totals |= {
        "double_read": len(multi),
        "double_read_complete": sum(image.label_status == "labeled" for image in multi),
        "adjudicated": adjudicated,
    }
    return totals


def annotator_count(session: Session) -> int:
    """How many people can read a volume: the enabled accounts, or without accounts (auth off) the names that have
    held a lease."""
    users = session.scalar(select(func.count()).select_from(User).where(User.disabled.is_(False)))
    if users:
        return users
    return session.scalar(select(func.count(func.distinct(Assignment.annotator)))) or 0
