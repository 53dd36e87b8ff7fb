"""Two real replicas (`slpt serve`) on one PostgreSQL database share the embedding and scoring batches: both score,
every volume is scored once per model version, and the batch of a replica killed mid-batch is taken again once its
lease expires (a fake clock moves time; nobody waits for it)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from db.engine import create_db_engine, session_factory
from db.schema import Job, ModelVersion, Score, WorkBatch, WorkItem
from strategies.uncertainty import SCORE_METHODS
from tests.app.conftest import database_url, start_server, submit_ground_truth, wait_for
from tests.app.fake_clock import FakeClock

VOLUMES = 60
LABELED = ["case_0000", "case_0001"]
LEASE_S = 60


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    from cohort.synth import generate_cohort

    root = tmp_path_factory.mktemp("pool") / "studies"
    generate_cohort(root, cases=VOLUMES, seed=11, size=16, progress=False)
    return root


@pytest.fixture(scope="module")
def replicas(pool: Path, backbone_file: Path, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    clock = FakeClock(logs / "clock-offset")
    with database_url("postgresql", logs) as url, ExitStack() as stack:
        conf = {"db": url, "backbone": str(backbone_file), "train_steps": "2", "roi_size": "16", "work_batch": "2",
                "work_poll_s": "0.3", "work_lease_s": str(LEASE_S), **clock.conf}
        servers = [stack.enter_context(start_server(pool, logs, env=clock.env, **conf)) for _ in range(2)]
        engine = create_db_engine(url)
        stack.callback(engine.dispose)
        yield servers, session_factory(engine), clock


def holder_pid(holder: str) -> int:
    return int(holder.split(":")[1])


def batches(sessions, kind: str, target: str) -> list[WorkBatch]:
    with sessions() as session:
        return list(session.scalars(select(WorkBatch).where(WorkBatch.kind == kind, WorkBatch.target == target)))


def volumes_per_done_batch(sessions, kind: str, target: str) -> Counter:
    """How many done batches of the target each volume is in (1 everywhere: computed and stored once)."""
    with sessions() as session:
        query = (select(WorkItem.image_id).join(WorkBatch, WorkBatch.id == WorkItem.batch_id)
                 .where(WorkBatch.kind == kind, WorkBatch.target == target, WorkBatch.state == "done"))
        return Counter(session.scalars(query))


def scored_volumes(sessions, version: str) -> int:
    with sessions() as session:
        return session.scalar(select(func.count(func.distinct(Score.image_id))).where(Score.model_version == version))


def train_a_version(server, sessions) -> str:
    with sessions() as session:
        before = set(session.scalars(select(ModelVersion.id)))

    def started():  # the previous training process may still be ending (stock answers 429 until it has)
        answer = httpx.post(f"{server.url}/train/slpt", json={}, timeout=60)
        assert answer.status_code in (200, 429), answer.text
        return answer.status_code == 200

    wait_for(started, 120, "a training accepted", server)

    def published():
        with sessions() as session:
            return next(iter(set(session.scalars(select(ModelVersion.id))) - before), None)

    return wait_for(published, 400, "a new model version", server)


def test_both_replicas_score_a_new_version_and_every_volume_is_scored_once(replicas, pool: Path):
    servers, sessions, _ = replicas

    def embedded():
        found = [b for b in batches_of_kind(sessions, "embedding") if b.state == "done"]
        return sum(b.size for b in found) == VOLUMES

    wait_for(embedded, 300, "every volume embedded", servers[0])
    key = batches_of_kind(sessions, "embedding")[0].target
    assert set(volumes_per_done_batch(sessions, "embedding", key).values()) == {1}

    submit_ground_truth(servers[0], pool, LABELED)
    version = train_a_version(servers[0], sessions)
    unlabeled = VOLUMES - len(LABELED)
    wait_for(lambda: scored_volumes(sessions, version) == unlabeled, 400, "the version scored", servers[0])
    wait_for(lambda: all(b.state == "done" for b in batches(sessions, "scoring", version)), 60, "every batch done")

    done = batches(sessions, "scoring", version)
    assert sum(b.size for b in done) == unlabeled and len(done) == unlabeled // 2
    per_volume = volumes_per_done_batch(sessions, "scoring", version)
    assert len(per_volume) == unlabeled and set(per_volume.values()) == {1}  # every volume once, none twice
    assert all(b.claims == 1 and b.failures == 0 for b in done)  # no batch was computed a second time
    pids = Counter(holder_pid(b.holder) for b in done)
    replica_b = servers[1].process.pid
    assert pids[replica_b] > 0, f"replica B scored no batch: {pids}"
    assert sum(n for pid, n in pids.items() if pid != replica_b) > 0, f"replica A (or its training) scored none: {pids}"
    with sessions() as session:
        for method in SCORE_METHODS:
            count = session.scalar(select(func.count()).select_from(Score)
                                   .where(Score.model_version == version, Score.method == method))
            assert count == unlabeled
        jobs = list(session.scalars(select(Job).where(Job.kind == "scoring")))
    # Each worker that took part recorded a scoring job of the version; none lost a batch to another worker.
    assert {job.detail["pid"] for job in jobs} >= {replica_b}
    assert all(job.detail["model_version"] == version and job.state == "done" for job in jobs)
    assert all(job.detail["lost"] == 0 and job.detail["failed"] == [] for job in jobs)
    assert sum(job.detail["volumes"] for job in jobs) == unlabeled

    # Progress is visible on either replica, counted over every replica's batches.
    for server in servers:
        status = httpx.get(f"{server.url}/scoring/", timeout=30).json()
        work = {w["kind"]: w for w in status["work"]}
        assert work["scoring"]["target"] == version
        assert (work["scoring"]["done"], work["scoring"]["total"], work["scoring"]["complete"]) == (unlabeled,) * 2 + (True,)
        assert work["embedding"]["complete"] and work["embedding"]["done"] == VOLUMES
        progress = httpx.get(f"{server.url}/admin/progress", timeout=30)
        assert progress.status_code == 200, progress.text
        assert {w["kind"]: w["done"] for w in progress.json()["work"]} == {"scoring": unlabeled, "embedding": VOLUMES}


def batches_of_kind(sessions, kind: str) -> list[WorkBatch]:
    with sessions() as session:
        return list(session.scalars(select(WorkBatch).where(WorkBatch.kind == kind).order_by(WorkBatch.id)))


def test_the_batch_of_a_replica_killed_mid_batch_is_taken_again_after_its_lease(replicas):
    servers, sessions, clock = replicas
    replica_b = servers[1].process
    version = train_a_version(servers[0], sessions)

    # Catch replica B holding a batch: freeze it (SIGSTOP) the moment the database shows one, check that it still
    # holds it (a commit may have landed just before the signal), then kill it (SIGKILL). Try again if it had let go.
    caught = None
    deadline = time.monotonic() + 300
    while caught is None and time.monotonic() < deadline:
        held = [b for b in batches(sessions, "scoring", version)
                if b.state == "leased" and holder_pid(b.holder) == replica_b.pid]
        if not held:
            time.sleep(0.002)
            continue
        os.killpg(replica_b.pid, signal.SIGSTOP)
        held = [b for b in batches(sessions, "scoring", version)
                if b.state == "leased" and holder_pid(b.holder) == replica_b.pid]
        if held:
            os.killpg(replica_b.pid, signal.SIGKILL)
            replica_b.wait(30)
            caught = held[0]
        else:
            os.killpg(replica_b.pid, signal.SIGCONT)
    assert caught is not None, "replica B never held a scoring batch of the new version"

    # The other workers finish everything else; the dead replica's batch stays leased until its lease expires.
    def only_the_dead_batch_left():
        left = [b for b in batches(sessions, "scoring", version) if b.state != "done"]
        return [b.id for b in left] == [caught.id]

    wait_for(only_the_dead_batch_left, 300, "every other batch done", servers[0])
    time.sleep(1.5)  # several polls of replica A: it must not take a batch whose lease is live
    with sessions() as session:
        assert session.get(WorkBatch, caught.id).state == "leased"

    clock.advance(timedelta(seconds=LEASE_S + 1))
    wait_for(lambda: all(b.state == "done" for b in batches(sessions, "scoring", version)), 120,
             "the dead replica's batch taken again", servers[0])
    with sessions() as session:
        retaken = session.get(WorkBatch, caught.id)
    assert retaken.claims == 2 and holder_pid(retaken.holder) != replica_b.pid
    unlabeled = VOLUMES - len(LABELED)
    per_volume = volumes_per_done_batch(sessions, "scoring", version)
    assert len(per_volume) == unlabeled and set(per_volume.values()) == {1}
    assert scored_volumes(sessions, version) == unlabeled
