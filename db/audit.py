"""The audit trail: who did what to which volume, when."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import DBError
from db.schema import AuditEvent, utcnow


def audit(session: Session, actor: str, action: str, image_id: str | None = None, **detail: Any) -> AuditEvent:
    """Add an audit event to the caller's transaction; ``detail`` must be JSON-serialisable."""
    if not actor:
        raise DBError("audit actor must be a non-empty string")
    if not action:
        raise DBError("audit action must be a non-empty string")
    try:
        json.dumps(detail)
    except (TypeError, ValueError) as error:
        raise DBError(f"audit detail of {action!r} is not JSON-serialisable: {error}") from error
    event = AuditEvent(at=utcnow(), actor=actor, action=action, image_id=image_id, detail=detail)
    session.add(event)
    return event


def audit_events(
    session: Session, *, image_id: str | None = None, action: str | None = None, limit: int = 100
) -> list[AuditEvent]:
    """The newest ``limit`` events, optionally for one image and/or one action, newest first."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if image_id is not None:
        query = query.where(AuditEvent.image_id == image_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))
