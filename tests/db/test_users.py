"""API tokens on both backends: a live token finds its user without writing; its last use is kept to the minute."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from db import session_factory, write_session
from db.schema import utcnow
from db.users import (
    LAST_USED_RESOLUTION, api_token_use_due, create_user, issue_api_token, live_api_token, note_api_token_use,
    revoke_api_token,
)


def test_token_use_is_noted_at_most_once_per_resolution(engine: Engine):
    sessions = session_factory(engine)
    with write_session(sessions) as session:
        create_user(session, "dora", "annotator", password="password123")
        row, token = issue_api_token(session, "dora", "script")
        token_id = row.id
    start = utcnow()
    with sessions() as session:
        user, row = live_api_token(session, token)
        assert user.username == "dora" and row.last_used_at is None and api_token_use_due(row, start)
        assert not session.dirty and not session.new  # finding the user wrote nothing
    with write_session(sessions) as session:
        note_api_token_use(session, token_id, start)
    with sessions() as session:
        _, row = live_api_token(session, token)
        assert row.last_used_at == start
        assert not api_token_use_due(row, start + LAST_USED_RESOLUTION - timedelta(seconds=1))
        assert api_token_use_due(row, start + LAST_USED_RESOLUTION)
    with write_session(sessions) as session:
        revoke_api_token(session, token_id)
    with sessions() as session:
        assert live_api_token(session, token) is None
