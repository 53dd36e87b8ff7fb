"""Accounts made outside the API: the first admin from the environment, and ``slpt admin create-user``."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.settings import AppSettings
from db.audit import audit
from db.engine import write_session
from db.schema import ApiToken
from db.users import create_user, get_user, issue_api_token, token_digest

logger = logging.getLogger(__name__)


def bootstrap_admin(sessions: sessionmaker[Session], settings: AppSettings) -> None:
    """``SLPT_ADMIN_PASSWORD`` / ``SLPT_ADMIN_TOKEN``: make the first admin (``admin_user``) if absent, and give it that
    token if it is not stored yet. Safe to run at every start, by every replica."""
    if not (settings.admin_password or settings.admin_token):
        return
    with write_session(sessions) as session:
        if get_user(session, settings.admin_user) is None:
            create_user(session, settings.admin_user, "admin", settings.admin_password or None)
            audit(session, "bootstrap", "user_created", username=settings.admin_user, role="admin")
            logger.info(f"created the first admin {settings.admin_user!r}")
        digest = token_digest(settings.admin_token) if settings.admin_token else None
        if digest and session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is None:
            issue_api_token(session, settings.admin_user, "bootstrap", token=settings.admin_token)
            audit(session, "bootstrap", "token_issued", username=settings.admin_user, name="bootstrap")


def create_account(sessions: sessionmaker[Session], username: str, role: str, password: str | None) -> str:
    """Create a user with a first API token; return the token (shown once)."""
    with write_session(sessions) as session:
        create_user(session, username, role, password)
        _, token = issue_api_token(session, username, "cli")
        audit(session, "cli", "user_created", username=username, role=role)
    return token
