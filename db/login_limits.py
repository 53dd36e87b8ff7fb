"""A storage for the ``limits`` rate limiter in the ``login_limits`` table, so that every replica on the database
counts the same login attempts (``limits`` keeps its counters in memory, Redis, Memcached or MongoDB otherwise).

It implements ``limits.storage.Storage``, the interface a fixed-window limiter needs: ``incr`` is one atomic upsert
(a window that ended starts over), so two replicas counting at once never lose a hit. Time comes from ``clock`` (an
injected clock lets tests expire a lockout without waiting).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from limits.storage import Storage
from sqlalchemy import case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from db.engine import is_postgresql, write_session
from db.schema import LoginLimit, UTCDateTime, utcnow

#: Ended windows are deleted once in this many increments (the table holds live counters only).
PURGE_EVERY = 500


class SQLLimitStorage(Storage):
    """``limits`` storage over ``login_limits``: one row per key, its hits and the end of its window."""

    STORAGE_SCHEME = ["slpt+sql"]

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime] = utcnow):
        super().__init__(uri=None, wrap_exceptions=False)
        self.sessions = sessions
        self.clock = clock
        self._increments = 0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return Exception

    def incr(self, key: str, expiry: int | float, amount: int = 1) -> int:
        now = self.clock()
        ends = now + timedelta(seconds=expiry)
        table = LoginLimit.__table__
        with write_session(self.sessions) as session:
            insert = (postgresql.insert if is_postgresql(session) else sqlite.insert)(table)
            ended = table.c.expires_at <= literal(now, UTCDateTime())  # the stored window is over: start a new one
            statement = insert.values(key=key, hits=amount, expires_at=ends).on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "hits": case((ended, insert.excluded.hits), else_=table.c.hits + insert.excluded.hits),
                    "expires_at": case((ended, insert.excluded.expires_at), else_=table.c.expires_at),
                },
            ).returning(table.c.hits)
            hits = int(session.execute(statement).scalar_one())
            self._increments += 1
            if self._increments % PURGE_EVERY == 0:
                session.execute(delete(LoginLimit).where(LoginLimit.expires_at <= now))
        return hits

    def _live(self, key: str) -> LoginLimit | None:
        with self.sessions() as session:
            row = session.get(LoginLimit, key)
            if row is None or row.expires_at <= self.clock():
                return None
            session.expunge(row)
            return row

    def get(self, key: str) -> int:
        row = self._live(key)
        return 0 if row is None else row.hits

    def get_expiry(self, key: str) -> float:
        row = self._live(key)
        return (row.expires_at if row is not None else self.clock()).timestamp()

    def check(self) -> bool:
        with self.sessions() as session:
            session.execute(select(1))
        return True

    def reset(self) -> int | None:
        with write_session(self.sessions) as session:
            return session.execute(delete(LoginLimit)).rowcount

    def clear(self, key: str) -> None:
        with write_session(self.sessions) as session:
            session.execute(delete(LoginLimit).where(LoginLimit.key == key))
