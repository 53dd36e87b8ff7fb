"""Leases of background work batches: how every replica on the database takes its share of embedding and scoring.

See docs/design.md, "Work spread over replicas".

A *target* is what the work is for: the embedding key (kind ``embedding``) or the model version (kind ``scoring``).
Planning cuts the target's volumes that have no result yet into batches (``work_batches``, their volumes in
``work_items``); any worker then claims the best open batch, computes it, and stores the results in the same
transaction that marks the batch done. The guarantees, and what gives each:

* **Two workers never hold one batch.** PostgreSQL: the claim's candidate query runs ``FOR UPDATE SKIP LOCKED``, so a
  batch another claim has locked is skipped, not waited for; one that another claim has already leased and committed
  is re-checked on its newest row version (READ COMMITTED) and no longer qualifies. SQLite: the claim runs in a
  ``BEGIN IMMEDIATE`` transaction (one writer at a time), and its UPDATE is conditional on the batch still being free.
* **A batch whose worker died is taken again.** A lease lasts ``lease`` from the claim and is renewed while the
  worker computes; a claim takes a ``leased`` batch whose lease has expired as if it were pending.
* **Results are stored once.** :func:`finish_batch` marks the batch done only if the caller still holds it (the same
  holder, still ``leased``) and the caller stores its results in that transaction; a worker that lost its lease (it
  stalled past the expiry and another worker took the batch) stores nothing. A done batch is never claimed again.
* **No volume is in two open batches of one target.** Planning takes a lock per target (PostgreSQL: a transaction-
  scoped advisory lock; SQLite: the write lock) and leaves out the volumes of the target's open batches and those that
  already have a result. It reads the open batches *before* the results: a batch that finishes in between has then
  either been seen open or its results are seen (they commit together), so no volume slips through twice.

Every function takes the caller's clock value ``now``: tests move time by hand instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from db.engine import is_postgresql, write_session
from db.errors import DBError
from db.schema import WORK_KINDS, WorkBatch, WorkItem, check_aware

OPEN_STATES = ("pending", "leased")
#: Rows per executemany of the items' INSERT.
ITEM_INSERT_BATCH = 1000
# Namespace of the per-target planning advisory lock (the other key is a hash of kind and target).
_PLAN_LOCK_NAMESPACE = 0x534C5057
_PLAN_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:name))")
_batches = WorkBatch.__table__
_items = WorkItem.__table__


@dataclass(frozen=True)
class Lease:
    """A batch held by ``holder`` until ``expires_at``: its volumes to compute."""

    batch_id: int
    kind: str
    target: str
    holder: str
    image_ids: list[str]
    expires_at: datetime


@dataclass(frozen=True)
class Plan:
    batches: int  # new batches
    volumes: int  # volumes in them


@dataclass
class WorkTotals:
    """One target's batches and volumes by state."""

    kind: str
    target: str
    batches: dict[str, int] = field(default_factory=dict)
    volumes: dict[str, int] = field(default_factory=dict)

    @property
    def total_volumes(self) -> int:
        return sum(self.volumes.values())

    @property
    def done_volumes(self) -> int:
        return self.volumes.get("done", 0)

    @property
    def complete(self) -> bool:
        """No batch is pending or leased (failed ones wait for the next planning)."""
        return not any(self.batches.get(state, 0) for state in OPEN_STATES)


def _check(kind: str, target: str, *moments: datetime) -> None:
    if kind not in WORK_KINDS:
        raise DBError(f"unknown work kind {kind!r}: use one of {WORK_KINDS}")
    if not target:
        raise DBError("a work target (embedding key or model version) must be a non-empty string")
    for moment in moments:
        check_aware(moment)


def plan_batches(
    session: Session,
    kind: str,
    target: str,
    candidates: Callable[[Session], Iterable[str]],
    finished: Callable[[Session], set[str]],
    size: int,
    now: datetime,
    priority: int = 0,
) -> Plan:
    """Put the ``candidates`` (in their order) that are in no open batch of ``target`` and not ``finished`` (have a
    result already) into new batches of ``size`` volumes. Call it inside :func:`db.engine.write_session`; two
    planners of one target run one after the other (see the module docstring), so a second finds nothing new."""
    _check(kind, target, now)
    if size < 1:
        raise DBError(f"a work batch holds at least one volume, not {size}")
    lock_target(session, kind, target)
    planned = open_image_ids(session, kind, target)  # before the results: see the module docstring
    planned |= finished(session)
    todo = [image_id for image_id in candidates(session) if image_id not in planned]
    if not todo:
        return Plan(0, 0)
    chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
    rows = [
        {"kind": kind, "target": target, "priority": priority, "size": len(chunk), "state": "pending", "claims": 0,
         "failures": 0, "created_at": now}
        for chunk in chunks
    ]
    ids = session.scalars(insert(_batches).returning(_batches.c.id, sort_by_parameter_order=True), rows).all()
    items = [{"batch_id": batch_id, "image_id": image_id} for batch_id, chunk in zip(ids, chunks) for image_id in chunk]
    for start in range(0, len(items), ITEM_INSERT_BATCH):
        session.execute(insert(_items), items[start : start + ITEM_INSERT_BATCH])
    return Plan(len(chunks), len(todo))


def lock_target(session: Session, kind: str, target: str) -> None:
    """Serialise the planners of one target until the caller's transaction ends (PostgreSQL: a transaction-scoped
    advisory lock, which one session may take again; SQLite: :func:`db.engine.write_session` holds the write lock)."""
    if is_postgresql(session):
        session.execute(_PLAN_LOCK, {"namespace": _PLAN_LOCK_NAMESPACE, "name": f"{kind}:{target}"})


def target_planned(session: Session, kind: str, target: str) -> bool:
    """Whether any batch of ``target`` exists (in any state): it has been planned before."""
    query = select(_batches.c.id).where(_batches.c.kind == kind, _batches.c.target == target).limit(1)
    return session.scalar(query) is not None


def priority_image_ids(session: Session, kind: str, target: str, min_priority: int,
                       states: Iterable[str] | None = None) -> set[str]:
    """Volumes in batches of ``target`` whose priority is at least ``min_priority`` (in ``states``, or any state)."""
    query = (
        select(_items.c.image_id)
        .join(_batches, _batches.c.id == _items.c.batch_id)
        .where(_batches.c.kind == kind, _batches.c.target == target, _batches.c.priority >= min_priority)
    )
    if states is not None:
        query = query.where(_batches.c.state.in_(list(states)))
    return set(session.scalars(query))


def open_image_ids(session: Session, kind: str, target: str) -> set[str]:
    """Volumes in a pending or leased batch of ``target``."""
    query = (
        select(_items.c.image_id)
        .join(_batches, _batches.c.id == _items.c.batch_id)
        .where(_batches.c.kind == kind, _batches.c.target == target, _batches.c.state.in_(OPEN_STATES))
    )
    return set(session.scalars(query))


def _claimable(kind: str, target: str, now: datetime, min_priority: int | None = None):
    free = and_(
        _batches.c.kind == kind,
        _batches.c.target == target,
        or_(_batches.c.state == "pending", and_(_batches.c.state == "leased", _batches.c.lease_expires_at < now)),
    )
    return free if min_priority is None else and_(free, _batches.c.priority >= min_priority)


def claim_batch(
    sessions: sessionmaker[Session], kind: str, target: str, holder: str, lease: timedelta, now: datetime,
    min_priority: int | None = None,
) -> Lease | None:
    """Lease the best free batch of ``target`` (highest priority, then oldest) to ``holder`` until ``now + lease``:
    a pending batch, or a leased one whose lease expired before ``now``; only batches of at least ``min_priority``
    when given. None when no batch is free."""
    _check(kind, target, now)
    if not holder:
        raise DBError("a work lease needs a holder")
    if lease <= timedelta(0):
        raise DBError(f"a work lease must last a positive time, not {lease}")
    candidate = (
        select(_batches.c.id)
        .where(_claimable(kind, target, now, min_priority))
        .order_by(_batches.c.priority.desc(), _batches.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders none (its claim holds the write lock)
        .scalar_subquery()
    )
    expires = now + lease
    claim = (
        update(_batches)
        # Conditional: the batch must still be free when it is updated (SQLite's safe claim; PostgreSQL re-checks it).
        .where(_batches.c.id == candidate, _claimable(kind, target, now, min_priority))
        .values(state="leased", holder=holder, lease_expires_at=expires, claims=_batches.c.claims + 1, claimed_at=now)
        .returning(_batches.c.id)
    )
    with write_session(sessions) as session:
        batch_id = session.scalar(claim)
        if batch_id is None:
            return None
        image_ids = list(session.scalars(select(_items.c.image_id).where(_items.c.batch_id == batch_id)
                                         .order_by(_items.c.image_id)))
    return Lease(batch_id, kind, target, holder, image_ids, expires)


def _held(lease: Lease):
    return and_(_batches.c.id == lease.batch_id, _batches.c.holder == lease.holder, _batches.c.state == "leased")


def renew_lease(sessions: sessionmaker[Session], lease: Lease, duration: timedelta, now: datetime) -> Lease | None:
    """Extend ``lease`` to ``now + duration``; None when the holder no longer holds the batch (it expired and another
    worker took it): the caller must give up the batch."""
    check_aware(now)
    expires = now + duration
    with write_session(sessions) as session:
        renewed = session.execute(update(_batches).where(_held(lease)).values(lease_expires_at=expires)).rowcount
    if renewed != 1:
        return None
    return Lease(lease.batch_id, lease.kind, lease.target, lease.holder, lease.image_ids, expires)


def finish_batch(session: Session, lease: Lease, now: datetime) -> bool:
    """Mark the leased batch done, in the caller's transaction, which also stores its results; False (and nothing
    changed) when the holder no longer holds it: the caller must then roll back instead of storing results."""
    check_aware(now)
    finished = update(_batches).where(_held(lease)).values(state="done", lease_expires_at=None, finished_at=now)
    return session.execute(finished).rowcount == 1


def fail_batch(
    sessions: sessionmaker[Session], lease: Lease, error: str, now: datetime, max_failures: int = 3
) -> str | None:
    """Give the batch back after an error: ``pending`` again for another try, ``failed`` at the ``max_failures``-th
    failure (planning later puts its volumes into a new batch). Returns the new state; None when the holder no longer
    held it."""
    check_aware(now)
    failed = _batches.c.failures + 1 >= max_failures
    statement = (
        update(_batches)
        .where(_held(lease))
        .values(
            state=case((failed, "failed"), else_="pending"),
            failures=_batches.c.failures + 1,
            error=error[:4000],
            holder=None,
            lease_expires_at=None,
            finished_at=now,
        )
        .returning(_batches.c.state)
    )
    with write_session(sessions) as session:
        return session.scalar(statement)


def release_batches(session: Session, holders: Iterable[str]) -> int:
    """Give the batches these holders lease back (``pending``, lease cleared) at once, e.g. those of workers known to
    be dead (instead of waiting for their leases to expire); returns how many."""
    holders = list(holders)
    if not holders:
        return 0
    statement = (
        update(_batches)
        .where(_batches.c.state == "leased", _batches.c.holder.in_(holders))
        .values(state="pending", holder=None, lease_expires_at=None)
    )
    return session.execute(statement).rowcount


def lease_holders(session: Session) -> set[str]:
    """Holders of leased batches (live or expired)."""
    return set(session.scalars(select(_batches.c.holder).where(_batches.c.state == "leased").distinct()))


def work_totals(session: Session, kind: str, target: str) -> WorkTotals:
    """``target``'s batches and volumes by state: read from its own rows only (the claim's index)."""
    query = (
        select(_batches.c.state, func.count(), func.coalesce(func.sum(_batches.c.size), 0))
        .where(_batches.c.kind == kind, _batches.c.target == target)
        .group_by(_batches.c.state)
    )
    totals = WorkTotals(kind, target)
    for state, batches, volumes in session.execute(query):
        totals.batches[state] = int(batches)
        totals.volumes[state] = int(volumes)
    return totals


def latest_work(session: Session) -> list[WorkTotals]:
    """The totals of the newest target of each kind (the most recently planned), for progress views; a few index
    reads, never every batch."""
    found = []
    for kind in WORK_KINDS:
        target = session.scalar(select(_batches.c.target).where(_batches.c.kind == kind)
                                .order_by(_batches.c.id.desc()).limit(1))
        if target is not None:
            found.append(work_totals(session, kind, target))
    return found


def has_free_batch(session: Session, kind: str, target: str, now: datetime, min_priority: int | None = None) -> bool:
    """Whether a claim of ``target`` would find a batch now (without taking it)."""
    query = select(_batches.c.id).where(_claimable(kind, target, now, min_priority)).limit(1)
    return session.scalar(query) is not None
