"""Two server processes on one PostgreSQL database and one studies folder behave as one service."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from db.engine import create_db_engine, session_factory
from db.schema import Assignment, Job
from tests.app.conftest import database_url, start_server, submit_ground_truth

CLIENTS = 32


@pytest.fixture(scope="module")
def replicas(served_cohort: Path, backbone_file: Path, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    with database_url("postgresql", logs) as url, ExitStack() as stack:
        conf = {"db": url, "backbone": str(backbone_file), "train_steps": "2", "roi_size": "16"}
        servers = [stack.enter_context(start_server(served_cohort, logs, **conf)) for _ in range(2)]
        yield servers, url


def rows(url: str, query):
    engine = create_db_engine(url)
    try:
        with session_factory(engine)() as session:
            return session.execute(query).all()
    finally:
        engine.dispose()


def test_concurrent_claims_across_replicas_never_share_a_volume(replicas):
    servers, url = replicas

    def claim(n: int) -> str | None:
        server = servers[n % 2]
        answer = httpx.post(f"{server.url}/activelearning/random", json={"client_id": f"ann-{n}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json().get("id")  # {} once every volume is held

    with ThreadPoolExecutor(CLIENTS) as pool:
        claimed = [i for i in pool.map(claim, range(CLIENTS)) if i is not None]
    volumes = 24  # the tiny cohort: more clients than volumes, so the last ones find nothing free
    assert len(claimed) == len(set(claimed)) == volumes
    duplicates = rows(url, select(Assignment.image_id, func.count()).where(Assignment.state == "active")
                      .group_by(Assignment.image_id).having(func.count() > 1))
    assert duplicates == []
    active = rows(url, select(func.count()).select_from(Assignment).where(Assignment.state == "active"))[0][0]
    assert active == min(CLIENTS, volumes)


def test_a_training_request_to_each_replica_at_once_runs_exactly_one(replicas, served_cohort: Path):
    servers, url = replicas
    submit_ground_truth(servers[0], served_cohort, ["case_0000", "case_0001"])
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda s: httpx.post(f"{s.url}/train/slpt", json={}, timeout=60), servers))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert "already queued or running" in refused.json()["detail"]
    trainings = rows(url, select(Job.id).where(Job.kind == "train"))
    assert len(trainings) == 1
