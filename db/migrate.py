"""Bring a database to the newest schema with Alembic, programmatically (no ini file needed)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from db.engine import normalise_url
from db.errors import DBError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Alembic's ``context`` proxy is a module global: one upgrade at a time per process.
_UPGRADE_LOCK = threading.Lock()


def alembic_config(url: str) -> Config:
    """Alembic configuration for ``url`` with the package's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not as "sqlalchemy.url": the ini parser would choke on "%" in passwords.
    config.attributes["url"] = normalise_url(url)
    return config


def head_revision() -> str:
    """The revision id the newest migration produces."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise DBError(f"no migration scripts in {MIGRATIONS}")
    return head


def upgrade(url: str) -> None:
    """Run ``alembic upgrade head`` on ``url``.

    Safe to call at every start and from several processes at once: the migrations run in one write
    transaction under a lock (see ``db/migrations/env.py``), and a database at head is left untouched.
    """
    with _UPGRADE_LOCK:
        command.upgrade(alembic_config(url), "head")
