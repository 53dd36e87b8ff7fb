"""Alembic environment: runs the migrations inside one write transaction that serialises concurrent upgrades.

The database URL comes from ``config.attributes["url"]`` (set by :func:`db.migrate.upgrade`), else the
``SLPT_DB_URL`` environment variable (command-line use with ``db/alembic.ini``).

Several server processes may call ``upgrade`` at the same start. Each takes a lock before Alembic reads the
current revision, so the second one waits and then finds the database already at head:
SQLite ``BEGIN IMMEDIATE`` (the busy timeout covers the wait; SQLite DDL is transactional once the driver
no longer manages transactions, see :mod:`db.engine`), PostgreSQL a transaction-scoped advisory lock.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import pool, text

from db.engine import WRITE_OPTION, create_db_engine, normalise_url
from db.errors import DBError
from db.schema import Base

# Arbitrary constant naming the advisory lock that serialises migrations on PostgreSQL.
MIGRATION_LOCK_KEY = 0x534C5054  # "SLPT"

config = context.config


def _database_url() -> str:
    url = config.attributes.get("url") or os.environ.get("SLPT_DB_URL")
    if not url:
        raise DBError("no database URL for migrations: pass one to db.migrate.upgrade() or set SLPT_DB_URL")
    return normalise_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_db_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
                context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
