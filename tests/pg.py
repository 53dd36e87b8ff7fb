"""Throw-away PostgreSQL databases for tests (any package's tests may use them).

The server is ``SLPT_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust auth).
Each :func:`temporary_database` creates ``slpt_test_<uuid>`` and drops it (``WITH (FORCE)``) afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import psycopg
from sqlalchemy.engine import make_url

SERVER_URL = os.environ.get("SLPT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@cache
def postgres_unavailable_reason() -> str | None:
    """None if the test server answers, else why not (for ``pytest.skip``)."""
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at {SERVER_URL} is not reachable ({error.__class__.__name__}: {error})"


@contextmanager
def temporary_database(prefix: str = "slpt_test") -> Iterator[str]:
    """Create an empty database; yield its SQLAlchemy URL (``postgresql+psycopg://…``); drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(SERVER_URL).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
