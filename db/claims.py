"""Leases: handing each unlabeled volume to at most one annotator at a time.

See docs/design.md, "Next Sample: one database claim".

The current lease of a volume lives on its ``images`` row; the ``assignments`` table records every lease.
The image row is the lock for its lease: every change of a lease (claim, skip, release, expiry, label) first
locks or updates that row, then writes the assignment rows, so concurrent transactions never disagree.

How two annotators are kept off one volume:

* PostgreSQL (READ COMMITTED): the candidate query runs ``SELECT … FOR UPDATE OF images SKIP LOCKED``.
  A row another claim has locked is skipped instead of waited for. A row another claim has already
  *committed* a lease on may still look free in this statement's snapshot; when PostgreSQL then locks it,
  it sees that the row changed and re-evaluates the WHERE clause on the newest version (EvalPlanQual):
  the lease columns are now set, the row no longer qualifies, and the scan moves on to the next candidate.
  That re-check only works because the lease is a column of the locked row, not a row elsewhere.
  The locking query never uses OFFSET: PostgreSQL locks every row an OFFSET skips, which would freeze
  hundreds of free volumes until the claim commits.
* SQLite: the whole claim runs inside ``BEGIN IMMEDIATE`` (one writer at a time, see :mod:`db.engine`).

On both, a partial unique index (one ``active`` assignment per image) makes the database refuse a double
lease outright; the rare conflicts (unique violation, serialisation failure, deadlock) are retried.

The claim is the hot path of every "Next Sample": its statements are built once, with bound parameters,
and run on the session's Core connection (no ORM objects are loaded or touched).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, Float, Integer, Row, Select, bindparam, cast, exists, func, or_, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import begin_write, write_session
from db.errors import DBError, UnknownImageError
from db.images import free_of_lease, live_lease
from db.schema import Assignment, Image, Label, RoundItem, SelectionRound, UTCDateTime, check_aware, utcnow

DEFAULT_LEASE = timedelta(hours=2)
CLAIM_ORDERS = ("first", "random")
CLAIM_ATTEMPTS = 5
# serialization_failure, deadlock_detected, unique_violation
_RETRYABLE_SQLSTATES = {"40001", "40P01", "23505"}
# Namespace of the per-annotator advisory lock (the other key is a hash of the annotator's name).
_ANNOTATOR_LOCK_NAMESPACE = 0x534C5055

_images = Image.__table__
_assignments = Assignment.__table__
_items = RoundItem.__table__
_labels = Label.__table__
_NOW = bindparam("now", type_=UTCDateTime())
_IDS = bindparam("ids", expanding=True)

_LOCK_ANNOTATOR = text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:annotator))")
_OWN_LIVE_LEASES = select(_images.c.id).where(
    _images.c.lease_holder == bindparam("annotator"), _images.c.label_status == "unlabeled", live_lease(_NOW)
)
_EXPIRED_LEASES = select(_images.c.id).where(_images.c.lease_expires_at < _NOW)
_CLEAR_LEASES = _images.update().where(_images.c.id.in_(_IDS)).values(lease_holder=None, lease_expires_at=None)
_CLOSE_ASSIGNMENTS = (
    _assignments.update()
    .where(_assignments.c.image_id.in_(_IDS), _assignments.c.state == "active")
    .values(state=bindparam("new_state"), closed_at=bindparam("closed", type_=UTCDateTime()))
)
_EXPIRE_ASSIGNMENTS = (
    _assignments.update()
    .where(_assignments.c.image_id.in_(_IDS), _assignments.c.state == "active")
    # The lease ended when it expired, not when somebody noticed.
    .values(state="expired", closed_at=_assignments.c.lease_expires_at)
)
_SET_LEASE = (
    _images.update()
    .where(_images.c.id == bindparam("image_id"))
    .values(lease_holder=bindparam("holder"), lease_expires_at=bindparam("expires", type_=UTCDateTime()))
)
# Setting the lease returns what Next Sample answers (no second query for the volume's info).
_ANSWER_COLUMNS = (
    _images.c.id, _images.c.path, _images.c.name, _images.c.checksum, _images.c.shape, _images.c.spacing,
    _images.c.grp, _images.c.label_status, _images.c.meta,
)
_SET_LEASE_RETURNING = _SET_LEASE.returning(*_ANSWER_COLUMNS)
#: Strategy name of a lease an admin gave (:func:`assign_volume`): Next Sample offers it until it is labeled.
ASSIGNED = "assigned"
#: Strategy name of the lease a label sent back for changes gives its annotator (:func:`return_volume`).
RETURNED = "returned"
_ASSIGNED_TO = (
    select(*_ANSWER_COLUMNS)
    .join(_assignments, _assignments.c.image_id == _images.c.id)
    .where(
        _assignments.c.annotator == bindparam("annotator"), _assignments.c.state == "active",
        _assignments.c.strategy.in_((ASSIGNED, RETURNED)), _images.c.label_status == "unlabeled", live_lease(_NOW),
    )
    .order_by(_assignments.c.claimed_at)
    .limit(1)
)
_ACTIVE_LEASE = _OWN_LIVE_LEASES.order_by(_images.c.lease_expires_at.desc()).limit(1)


def claim_next_volume(
    sessions: sessionmaker[Session] | Session, annotator: str, strategy: str, **options: Any
) -> str | None:
    """Lease the next unlabeled volume to ``annotator``; return its image id, or None if nothing is left.
    Same keyword options and transaction as :func:`claim_next_sample`."""
    claimed = claim_next_sample(sessions, annotator, strategy, **options)
    return None if claimed is None else claimed.id


def claim_next_sample(
    sessions: sessionmaker[Session] | Session,
    annotator: str,
    strategy: str,
    *,
    order: str = "first",
    round_id: int | None = None,
    lease: timedelta = DEFAULT_LEASE,
    now: datetime | None = None,
    seed: int | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Row | None:
    """Lease the next unlabeled volume to ``annotator``; return its image row's answer columns (``id``,
    ``path``, ``name``, ``checksum``, ``shape``, ``spacing``, ``grp``, ``label_status``, ``meta``: what Next
    Sample answers, read by the statement that sets the lease), or None if nothing is left.

    In one transaction: (1) the annotator's own live lease on an unlabeled volume is released (state
    ``skipped``) and that volume is offered again only if nothing else is left; (2) leases past their expiry
    are closed (state ``expired``); (3) the best free candidate is chosen: by the round's rank (then id) when
    ``round_id`` is given — ``order`` is then ignored and only the round's volumes are candidates — else
    by id (``"first"``) or uniformly at random (``"random"``, reproducible with ``seed``); (4) the lease is
    written to the image row and a new ``active`` assignment.

    ``sessions``: a sessionmaker — the claim commits its own transaction and retries conflicts up to
    ``CLAIM_ATTEMPTS`` times — or a Session, whose transaction the claim joins without committing or
    retrying (a fresh session is opened as a write transaction; on SQLite an already-open read transaction
    may fail to write if another writer commits first).

    ``now`` fixes the clock (tests, replays); otherwise every timestamp is read from ``clock`` (the system clock
    unless the server was given another) when it is written, under the locks, so a volume's assignments never
    overlap in time.
    """
    if not annotator:
        raise DBError("annotator must be a non-empty string")
    if not strategy:
        raise DBError("strategy must be a non-empty string")
    if order not in CLAIM_ORDERS:
        raise DBError(f"unknown claim order {order!r}: use one of {CLAIM_ORDERS}")
    if lease <= timedelta(0):
        raise DBError(f"lease must be positive, got {lease}")
    check_aware(now)
    rng = random.Random(seed)
    read_clock = clock if now is None else lambda: now

    def claim(session: Session) -> Row | None:
        return _claim(session, annotator, strategy, order, round_id, lease, read_clock, rng)

    if isinstance(sessions, Session):
        if not sessions.in_transaction():
            begin_write(sessions)
        return claim(sessions)
    attempt = 1
    while True:
        try:
            with write_session(sessions) as session:
                return claim(session)
        except DBAPIError as error:
            if attempt >= CLAIM_ATTEMPTS or not _retryable(error):
                raise
            attempt += 1


def release_lease(session: Session, annotator: str, now: datetime | None = None) -> list[str]:
    """Give back ``annotator``'s live leases (state ``released``); return the freed image ids."""
    check_aware(now)
    connection = session.connection()
    _lock_annotator(connection, annotator)
    return _close_own_leases(connection, annotator, "released", _clock(now))


class LeaseConflictError(DBError):
    """The volume cannot take that lease now (labeled already, or leased to someone else)."""


def release_volume(session: Session, image_id: str, now: datetime | None = None) -> str:
    """End the live lease on one volume (state ``released``); return who held it. :class:`DBError` if none."""
    check_aware(now)
    now = _clock(now)
    image = lock_image_row(session, image_id)
    if image.lease_expires_at is None or image.lease_expires_at < now or image.lease_holder is None:
        raise LeaseConflictError(f"volume {image_id!r} is not leased")
    holder = image.lease_holder
    connection = session.connection()
    connection.execute(_CLEAR_LEASES, {"ids": [image_id]})
    connection.execute(_CLOSE_ASSIGNMENTS, {"ids": [image_id], "new_state": "released", "closed": now})
    session.expire(image)
    return holder


def assign_volume(
    session: Session, image_id: str, annotator: str, lease: timedelta = DEFAULT_LEASE, now: datetime | None = None
) -> datetime:
    """Lease one volume to ``annotator`` on an admin's word; return when the lease ends.

    The annotator's other live leases are released (one volume each at a time); Next Sample then offers this volume
    until it is labeled or released. Refused (:class:`LeaseConflictError`) if it is labeled or someone else holds it.
    """
    if not annotator:
        raise DBError("annotator must be a non-empty string")
    if lease <= timedelta(0):
        raise DBError(f"lease must be positive, got {lease}")
    check_aware(now)
    connection = session.connection()
    _lock_annotator(connection, annotator)
    image = lock_image_row(session, image_id)
    when = _clock(now)
    if image.label_status == "labeled":
        raise LeaseConflictError(f"volume {image_id!r} is labeled already")
    live = image.lease_expires_at is not None and image.lease_expires_at >= when
    if live and image.lease_holder != annotator:
        raise LeaseConflictError(f"volume {image_id!r} is leased to {image.lease_holder!r}: release it first")
    _close_own_leases(connection, annotator, "released", when)
    _expire(connection, when)
    expires = when + lease
    connection.execute(_SET_LEASE, {"image_id": image_id, "holder": annotator, "expires": expires})
    connection.execute(_assignments.insert(), {
        "image_id": image_id, "annotator": annotator, "strategy": ASSIGNED, "round_id": None,
        "claimed_at": when, "lease_expires_at": expires, "closed_at": None, "state": "active",
    })
    session.expire(image)
    return expires


def return_volume(
    session: Session, image_id: str, annotator: str, lease: timedelta = DEFAULT_LEASE, now: datetime | None = None
) -> datetime:
    """Lease a volume whose label was sent back to its annotator (strategy ``returned``): their next Next Sample
    offers it before anything else. Their other leases stay (a volume they are labeling now is not taken away).
    The caller has locked the image row (:func:`lock_image_row`) and made the volume unlabeled."""
    check_aware(now)
    connection = session.connection()
    when = _clock(now)
    expires = when + lease
    connection.execute(_CLOSE_ASSIGNMENTS, {"ids": [image_id], "new_state": "released", "closed": when})
    connection.execute(_SET_LEASE, {"image_id": image_id, "holder": annotator, "expires": expires})
    connection.execute(_assignments.insert(), {
        "image_id": image_id, "annotator": annotator, "strategy": RETURNED, "round_id": None,
        "claimed_at": when, "lease_expires_at": expires, "closed_at": None, "state": "active",
    })
    return expires


def lock_image_row(session: Session, image_id: str) -> Image:
    """Load and lock the image row for the rest of the transaction (its lease and status change under this lock)."""
    image = session.scalar(select(Image).where(Image.id == image_id).with_for_update()
                           .execution_options(populate_existing=True))
    if image is None:
        raise UnknownImageError(f"unknown image id {image_id!r}")
    return image


def active_lease(session: Session, annotator: str, now: datetime | None = None) -> str | None:
    """The unlabeled volume ``annotator`` holds a live lease on, if any."""
    check_aware(now)
    return session.connection().scalar(_ACTIVE_LEASE, {"annotator": annotator, "now": now or utcnow()})


def expire_leases(session: Session, now: datetime | None = None) -> list[str]:
    """Close every lease past its expiry at ``now`` (state ``expired``); return the freed image ids.

    On PostgreSQL rows locked by other transactions are skipped: whoever holds them changes their lease.
    """
    check_aware(now)
    return _expire(session.connection(), now or utcnow())


def _claim(
    session: Session,
    annotator: str,
    strategy: str,
    order: str,
    round_id: int | None,
    lease: timedelta,
    clock: Callable[[], datetime],
    rng: random.Random,
) -> Row | None:
    connection = session.connection()
    _lock_annotator(connection, annotator)
    assigned = connection.execute(_ASSIGNED_TO, {"annotator": annotator, "now": _read(clock)}).first()
    if assigned is not None:
        return assigned  # an admin's assignment is the annotator's work until it is labeled or released
    skipped = _close_own_leases(connection, annotator, "skipped", _read(clock))
    started = _read(clock)
    _expire(connection, started)

    params = {"now": started, "round_id": round_id, "ids": skipped, "annotator": annotator}
    in_round, excluding = round_id is not None, bool(skipped)
    chosen = None
    if order == "random" and not in_round:
        chosen = _pick_random(connection, params, excluding, rng)
    if chosen is None:
        chosen = connection.scalar(_first_free(in_round, excluding, _is_pg(connection)), params)
    if chosen is None and skipped:
        # Nothing else is free: offer the volume the annotator just skipped.
        chosen = connection.scalar(_first_free(in_round, False, _is_pg(connection), among=True), params)
    if chosen is None:
        # Checked only now, off the hot path: an unknown round must not read as "nothing left".
        if round_id is not None and session.get(SelectionRound, round_id) is None:
            raise DBError(f"unknown selection round {round_id}")
        return None

    claimed_at = _read(clock)
    expires_at = claimed_at + lease
    claimed = connection.execute(
        _SET_LEASE_RETURNING, {"image_id": chosen, "holder": annotator, "expires": expires_at}
    ).one()
    connection.execute(
        _assignments.insert(),
        {
            "image_id": chosen,
            "annotator": annotator,
            "strategy": strategy,
            "round_id": round_id,
            "claimed_at": claimed_at,
            "lease_expires_at": expires_at,
            "closed_at": None,
            "state": "active",
        },
    )
    return claimed


# Double reading: a volume never goes to an annotator who has read it already. Single-read volumes (nearly all) pass
# on the first, cheap term; the other is one lookup in the labels' (image_id, tag, version) index.
_NOT_READ_BY_CLAIMANT = or_(
    _images.c.readers <= 1,
    ~exists().where(_labels.c.image_id == _images.c.id, _labels.c.tag == "final",
                    _labels.c.annotator == bindparam("annotator")),
)


@cache
def _candidates(in_round: bool, excluding: bool, among: bool = False) -> Select[tuple[str]]:
    """Free unlabeled volumes in claim order: the round's rank (``:round_id``) or id; without ``:ids``
    (``excluding``) or only among ``:ids`` (``among``)."""
    query = select(_images.c.id).where(_images.c.label_status == "unlabeled", free_of_lease(_NOW), _NOT_READ_BY_CLAIMANT)
    if in_round:
        query = query.join(_items, _items.c.image_id == _images.c.id).where(_items.c.round_id == bindparam("round_id"))
        query = query.order_by(_items.c.rank, _images.c.id)
    else:
        query = query.order_by(_images.c.id)
    if excluding:
        query = query.where(_images.c.id.not_in(_IDS))
    if among:
        query = query.where(_images.c.id.in_(_IDS))
    return query


@cache
def _first_free(in_round: bool, excluding: bool, postgresql: bool, among: bool = False) -> Select[tuple[str]]:
    """Lock and return the first candidate; PostgreSQL skips rows other claims hold."""
    query = _candidates(in_round, excluding, among).limit(1)
    return query.with_for_update(skip_locked=True, of=_images) if postgresql else query


# A random position in ``seq`` order: 1 + ⌊fraction · max(seq)⌋ (PostgreSQL rounds instead of truncating; either
# way the pivot is near-uniform, and one past the end simply finds nothing).
_RANDOM_PIVOT = 1 + cast(bindparam("fraction", type_=Float) * select(func.max(_images.c.seq)).scalar_subquery(), Integer)


@cache
def _free_from_seq(excluding: bool, postgresql: bool) -> Select[tuple[str]]:
    """The first free candidate at or after a random ``seq`` pivot, locked (an index range scan)."""
    query = _candidates(False, excluding).where(_images.c.seq >= _RANDOM_PIVOT).order_by(None).order_by(_images.c.seq).limit(1)
    return query.with_for_update(skip_locked=True, of=_images) if postgresql else query


def _pick_random(connection: Connection, params: dict, excluding: bool, rng: random.Random) -> str | None:
    """A random free candidate, locked: jump to a random ``seq`` and take the next free volume from there.

    One statement — an index lookup for the largest ``seq`` and one index range scan — whatever the pool size (a
    count plus a random offset costs a scan of every candidate). Approximately uniform: a volume that follows a run
    of labeled or leased ones is a little more likely. None when nothing is free from the pivot on (the caller
    then takes the first free volume, which wraps around).
    """
    return connection.scalar(_free_from_seq(excluding, _is_pg(connection)), params | {"fraction": rng.random()})


def _expire(connection: Connection, now: datetime) -> list[str]:
    query = _EXPIRED_LEASES.with_for_update(skip_locked=True) if _is_pg(connection) else _EXPIRED_LEASES
    expired = list(connection.scalars(query, {"now": now}))
    if expired:
        connection.execute(_CLEAR_LEASES, {"ids": expired})
        connection.execute(_EXPIRE_ASSIGNMENTS, {"ids": expired})
    return expired


def _close_own_leases(connection: Connection, annotator: str, state: str, when: datetime) -> list[str]:
    """Close ``annotator``'s live leases on unlabeled volumes; return their image ids."""
    # PostgreSQL: wait for the row (no SKIP LOCKED); after the lock it re-checks that we still hold it.
    query = _OWN_LIVE_LEASES.with_for_update() if _is_pg(connection) else _OWN_LIVE_LEASES
    held = list(connection.scalars(query, {"annotator": annotator, "now": when}))
    if held:
        connection.execute(_CLEAR_LEASES, {"ids": held})
        connection.execute(_CLOSE_ASSIGNMENTS, {"ids": held, "new_state": state, "closed": when})
    return held


def _lock_annotator(connection: Connection, annotator: str) -> None:
    """Serialise one annotator's claims and releases (a double-clicked Next Sample must not yield two
    leases). SQLite needs nothing: its write transactions are serial already."""
    if _is_pg(connection):
        connection.execute(_LOCK_ANNOTATOR, {"namespace": _ANNOTATOR_LOCK_NAMESPACE, "annotator": annotator})


def _is_pg(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _retryable(error: DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _RETRYABLE_SQLSTATES
    return isinstance(error, IntegrityError) and "UNIQUE" in str(error.orig)


def _clock(now: datetime | None) -> datetime:
    return now if now is not None else utcnow()


def _read(clock: Callable[[], datetime]) -> datetime:
    """The time ``clock`` tells, refused if naive (an injected clock must give UTC-aware datetimes)."""
    moment = clock()
    check_aware(moment)
    return moment
