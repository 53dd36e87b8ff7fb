"""Next Sample under load, through the real server, on SQLite and on PostgreSQL: never one volume to two annotators."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from db.engine import create_db_engine, session_factory
from db.schema import Assignment
from cohort.synth import generate_cohort
from tests.app.conftest import database_url, start_server

CLIENTS = 32
REQUESTS = 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def loaded_server(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"claims-{request.param}")
    studies = folder / "studies"
    generate_cohort(studies, cases=80, seed=11, size=8, progress=False)
    with database_url(request.param, folder) as url, start_server(studies, folder, db=url) as server:
        yield server, url


def test_concurrent_clients_never_share_a_volume(loaded_server):
    server, url = loaded_server

    def annotate(client: int) -> list[str]:
        held = []
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(REQUESTS):
                answer = http.post("/activelearning/random", json={"client_id": f"annotator-{client}"})
                assert answer.status_code == 200, answer.text
                held.append(answer.json().get("id"))
        return held

    with ThreadPoolExecutor(CLIENTS) as pool:
        histories = list(pool.map(annotate, range(CLIENTS)))

    assert all(all(histories_of) for histories_of in histories), "80 volumes for 32 annotators: none may run dry"
    finally_held = [history[-1] for history in histories]
    assert len(set(finally_held)) == CLIENTS, "two annotators ended up holding the same volume"

    engine = create_db_engine(url)
    with session_factory(engine)() as session:
        rows = session.execute(select(Assignment.image_id, Assignment.annotator, Assignment.state)).all()
    engine.dispose()
    assert len(rows) == CLIENTS * REQUESTS
    active = Counter(image for image, _, state in rows if state == "active")
    assert max(active.values()) == 1, "duplicate active assignments"
    assert sum(active.values()) == CLIENTS
    # Each skip released the previous lease: only the last claim of each annotator is active.
    assert {a for _, a, s in rows if s == "active"} == {f"annotator-{c}@127.0.0.1" for c in range(CLIENTS)}
    assert Counter(s for _, _, s in rows)["skipped"] == CLIENTS * (REQUESTS - 1)


def test_default_client_ids_from_two_addresses_do_not_release_each_other(loaded_server):
    server, _ = loaded_server

    def next_sample(source_address: str) -> str:
        # Two Slicer plugins that kept the default client id, on two machines (two loopback source addresses).
        transport = httpx.HTTPTransport(local_address=source_address)
        with httpx.Client(base_url=server.url, transport=transport, timeout=30) as http:
            return http.post("/activelearning/first", json={"client_id": "user-xyz"}).json()["id"]

    first = next_sample("127.0.0.1")
    second = next_sample("127.0.0.2")
    assert second != first
    # The first plugin asks again: it skips its own volume, it does not take the second plugin's.
    again = next_sample("127.0.0.1")
    assert again not in (first, second)
