"""Fixtures for database tests: every test runs on SQLite (a temp file) and on PostgreSQL.

``db_url``: a migrated database, one per backend for the whole run; ``engine`` empties it before each test.
``empty_db_url``: a database with no tables, one per test. PostgreSQL tests fail, with the reason,
when the server in ``tests.pg`` is not reachable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import Base, ImageRecord, create_db_engine, session_factory, upgrade, upsert_images, write_session
from tests.pg import postgres_unavailable_reason, temporary_database


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and (reason := postgres_unavailable_reason()):
        pytest.fail(reason)  # .ci/run starts PostgreSQL: a missing server is a failure, not a skip
    return request.param


@contextmanager
def _empty_database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'slpt.db'}"
    else:
        with temporary_database() as url:
            yield url


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with _empty_database(backend, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _empty_database(backend, tmp_path_factory.mktemp("db")) as url:
        upgrade(url)
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def image_record(index: int, grp: str | None = "a") -> ImageRecord:
    """A made-up volume ``case_NNNN`` (the database never opens the file)."""
    image_id = f"case_{index:04d}"
    digest = hashlib.sha256(image_id.encode()).hexdigest()
    return ImageRecord(
        id=image_id,
        path=f"/studies/{image_id}.nii.gz",
        name=f"{image_id}.nii.gz",
        shape=[32, 32, 16],
        spacing=[1.0, 1.0, 2.5],
        checksum=f"SHA256:{digest}",
        grp=grp,
        meta={"ts": index},
    )


@pytest.fixture
def ingest(sessions: sessionmaker[Session]) -> Callable[[int], list[str]]:
    """``ingest(n)`` adds images case_0000 … case_{n-1}; returns their ids."""

    def add(count: int) -> list[str]:
        records = [image_record(i) for i in range(count)]
        with write_session(sessions) as session:
            upsert_images(session, records)
        return [r.id for r in records]

    return add
