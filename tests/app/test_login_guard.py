"""Login abuse through the real server: a flood of failed logins from one address locks that address (and nobody
else) while the server keeps answering; a user name is locked after repeated wrong passwords; lockouts are audited,
expire on the server's (injected) clock, and hold across two replicas on one PostgreSQL database."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from db.engine import create_db_engine, default_db_url, session_factory
from db.schema import AuditEvent
from tests.app.conftest import database_url, start_server
from tests.app.fake_clock import FakeClock

ADMIN_TOKEN = "bootstrap-token-for-the-login-guard-tests"
ADDRESS_FAILURES = 50  # login_lockout_failures_address's default
USER_FAILURES = 10  # login_lockout_failures's default
FLOOD = 600  # failed logins from one address (`slpt bench scale` sends 10,000)
WORKERS = 8


def volumes(root: Path, count: int = 4) -> Path:
    import gzip

    import nibabel as nib
    import numpy as np

    data = gzip.compress(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)).to_bytes())
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"vol_{i}.nii.gz").write_bytes(data)
    return root


def login(url: str, username: str, password: str, source: str = "127.0.0.1") -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=60) as client:
        return client.post(f"{url}/auth/token", data={"username": username, "password": password,
                                                      "grant_type": "password"})


def make_user(url: str, username: str, password: str) -> None:
    answer = httpx.post(f"{url}/admin/users", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30,
                        json={"username": username, "role": "annotator", "password": password})
    assert answer.status_code == 201, answer.text


def audit_rows(url: str, action: str) -> list[AuditEvent]:
    engine = create_db_engine(url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def clock(tmp_path_factory) -> FakeClock:
    return FakeClock(tmp_path_factory.mktemp("clock") / "offset")


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    return volumes(tmp_path_factory.mktemp("guard") / "studies")


@pytest.fixture(scope="module")
def server(studies: Path, clock: FakeClock, tmp_path_factory):
    with start_server(studies, tmp_path_factory.mktemp("logs"), env=clock.env, flags=("--no-model",), auth="true",
                      admin_token=ADMIN_TOKEN, **clock.conf) as proc:
        make_user(proc.url, "bob", "bob-password-1")
        make_user(proc.url, "carol", "carol-password-1")
        yield proc


def test_a_flood_of_failed_logins_locks_its_address_only_and_the_server_keeps_answering(server, studies, clock):
    health_ms: list[float] = []

    def guess(n: int) -> int:
        if n % 100 == 0:  # the server stays responsive meanwhile
            started = time.perf_counter()
            assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
            health_ms.append((time.perf_counter() - started) * 1000)
        return login(server.url, f"guess-{n}", "wrong-password").status_code

    with ThreadPoolExecutor(WORKERS) as pool:
        statuses = list(pool.map(guess, range(FLOOD)))
    failed, refused = statuses.count(401), statuses.count(429)
    assert failed + refused == FLOOD
    # Locked after the address's failure limit (attempts already past the check when the lock came may still finish).
    assert ADDRESS_FAILURES <= failed <= ADDRESS_FAILURES + WORKERS
    assert max(health_ms) < 2000

    locked = login(server.url, "bob", "bob-password-1")  # even the right password, from the locked address
    assert locked.status_code == 429 and "locked" in locked.json()["detail"] and int(locked.headers["Retry-After"]) > 0
    assert login(server.url, "bob", "bob-password-1", source="127.0.0.2").status_code == 200  # others are not affected

    url = default_db_url(studies)
    locks = [e for e in audit_rows(url, "login_locked") if e.detail["scope"] == "address"]
    assert len(locks) == 1 and locks[0].source == "127.0.0.1" and locks[0].detail["locked"] == "127.0.0.1"
    assert len(audit_rows(url, "login_failed")) == failed  # every checked failure is audited, no refusal is

    clock.advance(timedelta(minutes=16))  # the lockout (15 min) is over on the server's clock
    assert login(server.url, "bob", "bob-password-1").status_code == 200


def test_repeated_wrong_passwords_lock_the_user_name_from_every_address(server, clock):
    for n in range(USER_FAILURES):
        assert login(server.url, "carol", f"wrong-{n}", source="127.0.0.3").status_code == 401
    refused = login(server.url, "carol", "carol-password-1", source="127.0.0.4")
    assert refused.status_code == 429 and "user 'carol' is locked" in refused.json()["detail"]
    assert login(server.url, "bob", "bob-password-1", source="127.0.0.4").status_code == 200
    clock.advance(timedelta(minutes=16))
    assert login(server.url, "carol", "carol-password-1", source="127.0.0.4").status_code == 200


def test_attempts_past_the_rate_get_429_before_any_password_is_checked(server, clock):
    clock.advance(timedelta(minutes=16))
    statuses = [login(server.url, "bob", "bob-password-1", source="127.0.0.5").status_code for _ in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429]  # login_rate_user: 10/minute
    throttled = audit_rows(default_db_url(server_studies(server)), "login_throttled")
    assert [e.detail["reason"] for e in throttled if e.source == "127.0.0.5"] == ["user_rate"]  # audited once


def server_studies(server) -> Path:
    command = server.process.args
    return Path(command[command.index("--studies") + 1])


def test_the_limit_holds_across_two_replicas_on_one_postgresql_database(tmp_path: Path):
    studies = volumes(tmp_path / "studies")
    with database_url("postgresql", tmp_path) as url, ExitStack() as stack:
        conf = {"db": url, "auth": "true", "admin_token": ADMIN_TOKEN}
        first, second = (stack.enter_context(start_server(studies, tmp_path, flags=("--no-model",), **conf))
                         for _ in range(2))
        make_user(first.url, "dave", "dave-password-1")
        for n in range(USER_FAILURES):  # half the failures on each replica
            replica = (first, second)[n % 2]
            assert login(replica.url, "dave", f"wrong-{n}", source=f"127.0.1.{n}").status_code == 401
        for replica in (first, second):
            assert login(replica.url, "dave", "dave-password-1", source="127.0.2.1").status_code == 429
        assert len(audit_rows(url, "login_locked")) == 1
