"""The worker loop over leased batches (app.work.work_through) on real SQLite and PostgreSQL: workers share one
target and store each volume once; a failing batch is retried, then failed, and the job says so; a worker that lost
its lease (it stalled past the expiry while another took the batch) stores nothing. Time is an injected clock."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from app.work import WorkFailed, WorkSettings, work_through
from db import ImageRecord, create_db_engine, session_factory, upgrade, upsert_images, write_session
from db.schema import Job, WorkBatch
from db.work import claim_batch, plan_batches
from tests.pg import postgres_unavailable_reason, temporary_database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TARGET = "v0001"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path: Path):
    if request.param == "sqlite":
        url_context = None
        url = f"sqlite:///{tmp_path / 'slpt.db'}"
    else:
        if reason := postgres_unavailable_reason():
            pytest.fail(reason)
        url_context = temporary_database()
        url = url_context.__enter__()
    upgrade(url)
    engine = create_db_engine(url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()
        if url_context is not None:
            url_context.__exit__(None, None, None)


def add_volumes(sessions, count: int) -> list[str]:
    records = [ImageRecord(id=f"case_{i:04d}", path=f"/s/case_{i:04d}.nii.gz", name=f"case_{i:04d}.nii.gz",
                           shape=[8, 8, 8], spacing=[1.0, 1.0, 1.0],
                           checksum="SHA256:" + hashlib.sha256(str(i).encode()).hexdigest(), grp=None, meta={})
               for i in range(count)]
    with write_session(sessions) as session:
        upsert_images(session, records)
    return [r.id for r in records]


def plan(sessions, ids: list[str], size: int, clock: Clock) -> None:
    with write_session(sessions) as session:
        plan_batches(session, "scoring", TARGET, lambda s: ids, lambda s: set(), size, clock())


def test_two_workers_share_a_target_and_store_each_volume_once(sessions):
    ids = add_volumes(sessions, 24)
    clock = Clock()
    settings = WorkSettings(batch=2, lease_s=60, clock=clock)
    plan(sessions, ids, 2, clock)
    stored: Counter = Counter()
    lock = threading.Lock()
    done = {}

    def compute(image_id: str) -> float:
        time.sleep(0.01)  # real work takes time: the other worker claims meanwhile
        return float(int(image_id[-4:]))

    def store(session, results) -> None:
        with lock:
            stored.update(results.keys())

    def worker(name: str) -> None:
        done[name] = work_through(sessions, "scoring", TARGET, compute, store, settings, noun="scored",
                                  detail={"model_version": TARGET})

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(stored) == ids and set(stored.values()) == {1}
    assert done["a"].volumes > 0 and done["b"].volumes > 0 and done["a"].volumes + done["b"].volumes == 24
    with sessions() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == "scoring")))
    assert len(jobs) == 2 and all(j.state == "done" and j.progress == 1.0 for j in jobs)
    assert sorted(j.detail["volumes"] for j in jobs) == sorted(d.volumes for d in done.values())


def test_a_failing_batch_is_retried_then_failed_and_the_job_fails_naming_it(sessions):
    ids = add_volumes(sessions, 4)
    clock = Clock()
    plan(sessions, ids, 2, clock)
    attempts: Counter = Counter()

    def compute(image_id: str) -> float:
        attempts[image_id] += 1
        if image_id == "case_0003":
            raise ValueError("unreadable volume")
        return 1.0

    stored = {}
    with pytest.raises(WorkFailed, match="unreadable volume"):
        work_through(sessions, "scoring", TARGET, compute, lambda s, r: stored.update(r),
                     WorkSettings(batch=2, lease_s=60, clock=clock), noun="scored", detail={})
    assert sorted(stored) == ["case_0000", "case_0001"]  # the good batch is stored
    assert attempts["case_0003"] == 3  # three tries, then failed
    with sessions() as session:
        failed = session.scalars(select(WorkBatch).where(WorkBatch.state == "failed")).one()
        job = session.scalars(select(Job)).one()
    assert failed.failures == 3 and "unreadable volume" in failed.error
    assert job.state == "failed" and "unreadable volume" in job.message


def test_a_worker_that_lost_its_lease_stores_nothing(sessions):
    ids = add_volumes(sessions, 2)
    clock = Clock()
    plan(sessions, ids, 2, clock)
    settings = WorkSettings(batch=2, lease_s=60, clock=clock)
    taken = []

    def stall_then_compute(image_id: str) -> float:
        if not taken:  # this worker stalls past its lease; another worker takes the batch meanwhile
            clock.now += timedelta(seconds=61)
            taken.append(claim_batch(sessions, "scoring", TARGET, "other", settings.lease, clock()))
        return 1.0

    stored = {}
    done = work_through(sessions, "scoring", TARGET, stall_then_compute, lambda s, r: stored.update(r), settings,
                        noun="scored", detail={})
    assert (done.volumes, done.lost, stored) == (0, 1, {})
    with sessions() as session:
        batch = session.scalars(select(WorkBatch)).one()
    assert (batch.state, batch.holder, batch.claims) == ("leased", "other", 2)
