"""The admin views' queries are answered from indexes on both databases (EXPLAIN), never by reading every image row.

PostgreSQL plans tiny test tables with sequential scans whatever the indexes, so its plans are taken with
``enable_seqscan`` off, and SQLite's without table statistics: what is checked is that an index *can* answer each
query. SQLite's plan must not ``SCAN images`` without an index."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, text

from db import overview
from db.schema import utcnow

POOL = 300


def captured_statements(engine, work) -> list[tuple[str, object]]:
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return statements


def plan(connection, statement: str, params, postgresql: bool) -> str:
    if postgresql:
        connection.exec_driver_sql("SET enable_seqscan = off")
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", params).fetchall()
        return "\n".join(row[0] for row in rows)
    # Statistics of an earlier test's tiny table would make a scan the cheaper plan: plan as for an unknown size.
    if connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
        connection.exec_driver_sql("DELETE FROM sqlite_stat1")
        connection.exec_driver_sql("ANALYZE sqlite_schema")
    rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    return "\n".join(row[-1] for row in rows)


def test_progress_and_volume_pages_read_indexes_not_every_image(engine, sessions, ingest) -> None:
    ingest(POOL)
    now = utcnow()
    with sessions() as session:
        session.execute(text("UPDATE images SET lease_holder = 'a', lease_expires_at = :t WHERE seq % 50 = 0"),
                        {"t": now + timedelta(hours=1)})
        session.commit()

    def work():
        with sessions() as session:
            overview.status_totals(session, now)
            overview.totals_by_group(session, now)
            for status, sort in (("unlabeled", "-score"), ("leased", "-ingested"), ("skipped", "id"), (None, "score")):
                overview.list_volumes(session, overview.VolumeFilter(status=status), model_version="v0001", sort=sort,
                                      now=now)
            overview.list_volumes(session, overview.VolumeFilter(min_score=0.5), model_version="v0001", sort="-score",
                                  now=now)

    postgresql = engine.dialect.name == "postgresql"
    statements = captured_statements(engine, work)
    assert len(statements) >= 8
    with engine.connect() as connection:
        for statement, params in statements:
            shown = plan(connection, statement, params, postgresql)
            if postgresql:
                assert "Seq Scan on images" not in shown, f"{statement}\n{shown}"
            else:
                full_scans = [line for line in shown.splitlines() if line.startswith("SCAN images")
                              and "INDEX" not in line]
                assert not full_scans, f"{statement}\n{shown}"
