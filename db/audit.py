"""The audit trail: who did what to which volume, when."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import DBError
from db.schema import AuditEvent, utcnow


def audit(
    session: Session, actor: str, action: str, image_id: str | None = None, source: str | None = None, **detail: Any
) -> AuditEvent:
    """Add an audit event to the caller's transaction; ``source`` is the caller's address for requests; ``detail``
    must be JSON-serialisable."""
    if not actor:
        raise DBError("audit actor must be a non-empty string")
    if not action:
        raise DBError("audit action must be a non-empty string")
    try:
        json.dumps(detail)
    except (TypeError, ValueError) as error:
        raise DBError(f"audit detail of {action!r} is not JSON-serialisable: {error}") from error
    event = AuditEvent(at=utcnow(), actor=actor, action=action, image_id=image_id, detail=detail, source=source)
    session.add(event)
    return event


def audit_events(
    session: Session, *, image_id: str | None = None, action: str | None = None, actor: str | None = None,
    limit: int = 100, offset: int = 0,
) -> list[AuditEvent]:
    """The newest events (``offset`` skipped, then ``limit``), optionally for one image, action and/or actor."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).offset(offset).limit(limit)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if image_id is not None:
        query = query.where(AuditEvent.image_id == image_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))
