"""Alembic migrations: from an empty database to head, idempotent, in step with the ORM metadata."""

from __future__ import annotations

import multiprocessing

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db import Base, create_db_engine, head_revision, upgrade

TABLES = {
    "images",
    "labels",
    "assignments",
    "embeddings",
    "scores",
    "selection_rounds",
    "round_items",
    "model_versions",
    "jobs",
    "audit_events",
    "users",
    "api_tokens",
    "server_secrets",
    "archived_labels",
    "label_reviews",
    "agreements",
    "quality_records",
    "login_limits",
    "work_batches",
    "work_items",
}


def _revision(url: str) -> str | None:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table_at_head(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = create_db_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == head_revision()
            # The migrations build exactly what the ORM declares: nothing for autogenerate to add.
            assert compare_metadata(context, Base.metadata) == []
        indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("assignments")}
        assert indexes["uq_assignments_active_image"]["unique"]
    finally:
        engine.dispose()


def test_upgrade_again_is_a_no_op_that_keeps_data(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = create_db_engine(empty_db_url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO jobs (id, kind, state, progress, message, created_at, detail) "
                                "VALUES ('j1', 'train', 'queued', 0, '', CURRENT_TIMESTAMP, '{}')"))
    upgrade(empty_db_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
    assert _revision(empty_db_url) == head_revision()


def test_concurrent_upgrades_from_several_processes_all_succeed(empty_db_url: str) -> None:
    # Several server processes starting at once on a database that does not exist yet. Forked, so they
    # start in milliseconds and really overlap (a fresh interpreter spends seconds importing).
    processes = [multiprocessing.get_context("fork").Process(target=upgrade, args=(empty_db_url,)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert _revision(empty_db_url) == head_revision()


def test_round_state_constraint_admits_cancelled_and_still_refuses_unknown_states(empty_db_url: str) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    upgrade(empty_db_url)
    engine = create_db_engine(empty_db_url)
    insert = text("INSERT INTO selection_rounds (strategy, budget, created_at, state, config) "
                  "VALUES ('tesla', 1, CURRENT_TIMESTAMP, :state, '{}')")
    try:
        with engine.begin() as connection:
            connection.execute(insert, {"state": "cancelled"})
        with pytest.raises(IntegrityError):
            with engine.begin() as connection:
                connection.execute(insert, {"state": "bogus"})
        with engine.connect() as connection:
            assert connection.execute(text("SELECT state FROM selection_rounds")).scalars().all() == ["cancelled"]
    finally:
        engine.dispose()
