"""Work-batch leases (db.work) on real SQLite and PostgreSQL: planning, disjoint concurrent claims, expiry and
reclaim, fenced completion, failures."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import DBError, create_db_engine, session_factory, write_session
from db.schema import WorkBatch, WorkItem
from db.work import (
    claim_batch,
    fail_batch,
    finish_batch,
    has_free_batch,
    latest_work,
    lease_holders,
    plan_batches,
    release_batches,
    renew_lease,
    work_totals,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
VERSION = "v0001"


def plan(sessions: sessionmaker[Session], ids: list[str], size: int = 4, finished: set[str] = frozenset(),
         target: str = VERSION, kind: str = "scoring", now: datetime = T0, priority: int = 0):
    with write_session(sessions) as session:
        return plan_batches(session, kind, target, lambda s: ids, lambda s: set(finished), size, now, priority)


def claim(sessions, holder: str, now: datetime = T0, target: str = VERSION):
    return claim_batch(sessions, "scoring", target, holder, LEASE, now)


def finish(sessions, lease, now: datetime = T0) -> bool:
    with write_session(sessions) as session:
        return finish_batch(session, lease, now)


def items_by_batch(sessions) -> dict[int, list[str]]:
    with sessions() as session:
        found: dict[int, list[str]] = {}
        for batch_id, image_id in session.execute(select(WorkItem.batch_id, WorkItem.image_id)):
            found.setdefault(batch_id, []).append(image_id)
        return found


def test_planning_cuts_the_volumes_without_a_result_into_batches_once(sessions, ingest) -> None:
    ids = ingest(12)
    first = plan(sessions, ids, size=4, finished={ids[0], ids[1]})
    assert (first.batches, first.volumes) == (3, 10)  # 4 + 4 + 2, the two with a result left out
    assert sorted(v for batch in items_by_batch(sessions).values() for v in batch) == ids[2:]
    assert plan(sessions, ids, size=4, finished={ids[0], ids[1]}).volumes == 0  # all in open batches already
    assert plan(sessions, ids, target="v0002").volumes == 12  # another version is other work
    with sessions() as session:
        totals = work_totals(session, "scoring", VERSION)
    assert (totals.batches, totals.volumes, totals.complete) == ({"pending": 3}, {"pending": 10}, False)


def run_together(target, threads: int, engines: list) -> None:
    """Run ``target(n)`` for n < ``threads`` in threads (each waits on its own barrier first), then dispose of
    ``engines`` (the "replicas'" connection pools)."""
    try:
        started = [threading.Thread(target=target, args=(n,)) for n in range(threads)]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join(120)
    finally:
        for engine in engines:
            engine.dispose()


def test_two_concurrent_claimers_get_disjoint_batches_until_none_is_left(db_url, sessions, ingest) -> None:
    ids = ingest(60)
    plan(sessions, ids, size=2)  # 30 batches
    # Two "replicas": each its own engine (connection pool), several threads each, all starting at once.
    engines = [create_db_engine(db_url) for _ in range(2)]
    factories = [session_factory(engine) for engine in engines]
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(n: int) -> None:
        holder = f"replica{n % 2}:{n}"
        start.wait()
        while (lease := claim(factories[n % 2], holder)) is not None:
            with lock:
                claimed.append((holder, lease.batch_id))

    run_together(worker, 6, engines)
    batch_ids = [batch_id for _, batch_id in claimed]
    assert len(batch_ids) == len(set(batch_ids)) == 30  # every batch once, none twice
    with sessions() as session:
        rows = {b.id: b for b in session.scalars(select(WorkBatch))}
    assert all(b.state == "leased" and b.claims == 1 for b in rows.values())
    assert {b.holder for b in rows.values()} == {holder for holder, _ in claimed}
    assert {holder.split(":")[0] for holder, _ in claimed} == {"replica0", "replica1"}


def test_a_claim_skips_a_batch_another_transaction_is_claiming(db_url, sessions, ingest, backend) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: no second claim can run while one is open")
    from sqlalchemy import text

    ids = ingest(4)
    plan(sessions, ids, size=2)
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as blocker, blocker.begin():
            first = blocker.execute(text("SELECT id FROM work_batches ORDER BY id LIMIT 1 FOR UPDATE")).scalar()
            lease = claim(sessions, "other")  # does not wait for the row lock: takes the next batch
            assert lease is not None and lease.batch_id != first
    finally:
        engine.dispose()


def test_an_expired_lease_is_claimed_again_and_its_first_holder_can_neither_renew_nor_store(sessions, ingest) -> None:
    ids = ingest(2)
    plan(sessions, ids, size=2)
    dead = claim(sessions, "dead-worker")
    assert dead.image_ids == ids
    assert claim(sessions, "other", now=T0 + LEASE - timedelta(seconds=1)) is None  # still held
    with sessions() as session:
        assert not has_free_batch(session, "scoring", VERSION, T0 + LEASE - timedelta(seconds=1))
        assert has_free_batch(session, "scoring", VERSION, T0 + LEASE + timedelta(seconds=1))
    later = T0 + LEASE + timedelta(seconds=1)
    taken = claim(sessions, "other", now=later)
    assert (taken.batch_id, taken.image_ids, taken.holder) == (dead.batch_id, ids, "other")
    assert renew_lease(sessions, dead, LEASE, later) is None
    assert not finish(sessions, dead, later)  # the first holder's results would be refused
    assert finish(sessions, taken, later)
    with sessions() as session:
        batch = session.get(WorkBatch, taken.batch_id)
    assert (batch.state, batch.holder, batch.claims, batch.finished_at) == ("done", "other", 2, later)


def test_a_renewed_lease_is_not_taken_while_its_worker_is_alive(sessions, ingest) -> None:
    ids = ingest(1)
    plan(sessions, ids, size=1)
    lease = claim(sessions, "slow")
    renewed = renew_lease(sessions, lease, LEASE, T0 + LEASE - timedelta(seconds=10))
    assert renewed.expires_at == T0 + 2 * LEASE - timedelta(seconds=10)
    assert claim(sessions, "other", now=T0 + LEASE + timedelta(seconds=1)) is None
    assert finish(sessions, renewed, T0 + LEASE + timedelta(seconds=2))


def test_a_finished_batch_is_never_claimed_or_planned_again(sessions, ingest) -> None:
    ids = ingest(3)
    plan(sessions, ids, size=3)
    lease = claim(sessions, "w")
    assert finish(sessions, lease)
    assert not finish(sessions, lease)  # finishing twice stores nothing the second time
    for later in (T0, T0 + LEASE * 10, T0 + timedelta(days=30)):
        assert claim(sessions, "other", now=later) is None
    assert plan(sessions, ids, finished=set(ids)).volumes == 0
    with sessions() as session:
        totals = work_totals(session, "scoring", VERSION)
        assert totals.complete and totals.done_volumes == 3 and totals.batches == {"done": 1}


def test_higher_priority_batches_are_claimed_first(sessions, ingest) -> None:
    ids = ingest(4)
    plan(sessions, ids[:2], size=2, priority=0)
    plan(sessions, ids[2:], size=2, priority=5)
    assert claim(sessions, "w").image_ids == ids[2:]
    assert claim(sessions, "w").image_ids == ids[:2]


def test_a_failing_batch_is_retried_then_failed_and_planned_anew(sessions, ingest) -> None:
    ids = ingest(2)
    plan(sessions, ids, size=2)
    for attempt in range(1, 4):
        lease = claim(sessions, f"w{attempt}")
        state = fail_batch(sessions, lease, f"boom {attempt}", T0, max_failures=3)
        assert state == ("failed" if attempt == 3 else "pending")
    assert claim(sessions, "w4") is None  # a failed batch is not retried by claims
    with sessions() as session:
        failed = session.scalars(select(WorkBatch)).one()
        assert (failed.failures, failed.claims, failed.error, failed.holder) == (3, 3, "boom 3", None)
    again = plan(sessions, ids, size=2)  # the next planning puts its volumes into a new batch
    assert (again.batches, again.volumes) == (1, 2)
    assert claim(sessions, "w5").image_ids == ids


def test_releasing_a_dead_holders_batches_makes_them_claimable_at_once(sessions, ingest) -> None:
    ids = ingest(4)
    plan(sessions, ids, size=2)
    claim(sessions, "host:111:a")
    claim(sessions, "host:222:b")
    with write_session(sessions) as session:
        assert lease_holders(session) == {"host:111:a", "host:222:b"}
        assert release_batches(session, ["host:111:a"]) == 1
    assert claim(sessions, "new").image_ids == ids[:2]


def test_concurrent_planners_of_one_target_never_put_a_volume_into_two_batches(db_url, sessions, ingest) -> None:
    ids = ingest(200)
    engines = [create_db_engine(db_url) for _ in range(4)]
    start = threading.Barrier(4)

    def planner(n: int) -> None:
        start.wait()
        plan(session_factory(engines[n]), ids, size=7)

    run_together(planner, 4, engines)
    planned = Counter(v for batch in items_by_batch(sessions).values() for v in batch)
    assert sorted(planned) == ids and set(planned.values()) == {1}


def test_latest_work_reports_the_newest_target_of_each_kind(sessions, ingest) -> None:
    ids = ingest(4)
    plan(sessions, ids, size=2, target="v0001")
    plan(sessions, ids, size=4, target="v0002")
    plan(sessions, ids, size=4, kind="embedding", target="backbone-abc")
    with sessions() as session:
        found = {(t.kind, t.target): (t.batches, t.volumes) for t in latest_work(session)}
    assert found == {("scoring", "v0002"): ({"pending": 1}, {"pending": 4}),
                     ("embedding", "backbone-abc"): ({"pending": 1}, {"pending": 4})}


def test_bad_arguments_are_refused(sessions, ingest) -> None:
    ingest(1)
    with pytest.raises(DBError, match="unknown work kind"):
        claim_batch(sessions, "training", VERSION, "w", LEASE, T0)
    with pytest.raises(DBError, match="positive"):
        claim_batch(sessions, "scoring", VERSION, "w", timedelta(0), T0)
    with pytest.raises(DBError, match="naive"):
        claim_batch(sessions, "scoring", VERSION, "w", LEASE, datetime(2026, 1, 1))
    with pytest.raises(DBError, match="at least one"):
        plan(sessions, ["case_0000"], size=0)
