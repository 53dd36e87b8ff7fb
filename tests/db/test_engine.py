"""Engine configuration: URLs, SQLite pragmas and write transactions, UTC timestamps on both backends."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from db import DBError, Job, begin_write, create_db_engine, default_db_url, normalise_url, session_factory
from db import start_job, upgrade, write_session
from db.engine import FifoLock


def test_default_db_url_lives_in_the_studies_folder(tmp_path: Path) -> None:
    url = default_db_url(tmp_path / "studies")
    assert url == f"sqlite:///{tmp_path / 'studies' / '.slpt' / 'slpt.db'}"
    assert (tmp_path / "studies" / ".slpt").is_dir()


def test_normalise_url_selects_psycopg_and_rejects_other_databases() -> None:
    assert normalise_url("postgresql://u:p%40ss@h:5433/d") == "postgresql+psycopg://u:p%40ss@h:5433/d"
    assert normalise_url("postgres://h/d") == "postgresql+psycopg://h/d"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(DBError, match="unsupported database 'mysql'"):
        normalise_url("mysql://h/d")
    with pytest.raises(DBError, match="not a database URL"):
        normalise_url("not a url")


@pytest.fixture
def sqlite_file(tmp_path: Path) -> tuple[Path, sessionmaker[Session]]:
    path = tmp_path / "nested" / "slpt.db"
    upgrade(f"sqlite:///{path}")
    return path, session_factory(create_db_engine(f"sqlite:///{path}"))


def test_sqlite_connections_use_wal_foreign_keys_busy_timeout_and_normal_sync(sqlite_file) -> None:
    _, sessions = sqlite_file
    with sessions() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_write_session_holds_the_sqlite_write_lock_from_begin(sqlite_file) -> None:
    path, sessions = sqlite_file
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with sessions() as reader:
        reader.execute(select(Job.id)).all()  # a plain session only reads: writers may still start
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    with write_session(sessions) as writer:
        writer.execute(select(Job.id)).all()  # no write yet, but BEGIN IMMEDIATE already took the lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # released at commit
    other.execute("ROLLBACK")
    other.close()


def test_write_session_rolls_back_on_error(sqlite_file) -> None:
    _, sessions = sqlite_file
    with pytest.raises(RuntimeError), write_session(sessions) as session:
        start_job(session, "train")
        raise RuntimeError("boom")
    with sessions() as session:
        assert session.scalars(select(Job)).all() == []


def test_begin_write_refuses_a_session_already_in_a_transaction(sqlite_file) -> None:
    _, sessions = sqlite_file
    with sessions() as session:
        session.execute(select(1))
        with pytest.raises(DBError, match="already has one"):
            begin_write(session)


def test_timestamps_round_trip_as_utc_and_naive_ones_are_refused(sessions: sessionmaker[Session]) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    with write_session(sessions) as session:
        job = start_job(session, "train")
        job.created_at = moment
    with sessions() as session:
        stored = session.get(Job, job.id).created_at
        assert stored == moment and stored.tzinfo == timezone.utc and stored.hour == 10
        # Comparisons in SQL use the same UTC form.
        assert session.scalar(select(Job.id).where(Job.created_at < moment + timedelta(microseconds=1))) == job.id
        assert session.scalar(select(Job.id).where(Job.created_at < moment)) is None
    with pytest.raises(StatementError, match="naive datetime") as raised, write_session(sessions) as session:
        job = session.get(Job, job.id)
        job.created_at = datetime(2026, 3, 1, 12, 0)
        session.flush()
    assert isinstance(raised.value.orig, DBError)


def test_fifo_lock_is_granted_in_the_order_it_was_asked_for() -> None:
    lock = FifoLock()
    assert lock.acquire()
    granted: list[int] = []
    threads = []
    for n in range(6):
        thread = threading.Thread(target=lambda n=n: (lock.acquire(), granted.append(n), lock.release()))
        thread.start()
        threads.append(thread)
        while len(lock._waiters) < n + 1:  # queued before the next one asks
            time.sleep(0.001)
    lock.release()
    for thread in threads:
        thread.join(5)
    assert granted == list(range(6))
    assert lock.acquire(timeout=0)  # free again after the last waiter released it


def test_fifo_lock_timeout_leaves_the_queue_and_release_of_an_unheld_lock_fails() -> None:
    lock = FifoLock()
    lock.acquire()
    assert lock.acquire(timeout=0.01) is False
    assert not lock._waiters
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
