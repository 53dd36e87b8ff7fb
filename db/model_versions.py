"""Trained model versions. The current model is the newest published one (derived, never stored)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import DBError
from db.schema import MODEL_KINDS, MODEL_STATES, ModelVersion, check_aware, utcnow

VERSION_PATTERN = re.compile(r"^v(\d+)$")


def record_model_version(
    session: Session,
    version_id: str,
    *,
    path: str,
    kind: str,
    metrics: dict[str, Any] | None = None,
    tunable_params: int | None = None,
    state: str = "published",
    created_at: datetime | None = None,
) -> ModelVersion:
    """Record a trained model (``kind`` "prompt" or "finetune"; ``state`` "published" or "failed")."""
    if kind not in MODEL_KINDS:
        raise DBError(f"unknown model kind {kind!r}: use one of {MODEL_KINDS}")
    if state not in MODEL_STATES:
        raise DBError(f"unknown model state {state!r}: use one of {MODEL_STATES}")
    check_aware(created_at)
    if session.get(ModelVersion, version_id) is not None:
        raise DBError(f"model version {version_id!r} already exists")
    version = ModelVersion(
        id=version_id,
        created_at=created_at or utcnow(),
        path=path,
        kind=kind,
        metrics=metrics or {},
        tunable_params=tunable_params,
        state=state,
    )
    session.add(version)
    session.flush()
    return version


def next_model_version_id(session: Session) -> str:
    """``"v0001"`` for the first model, then one more than the highest ``vNNNN`` recorded."""
    numbers = [int(m.group(1)) for i in session.scalars(select(ModelVersion.id)) if (m := VERSION_PATTERN.match(i))]
    return f"v{max(numbers, default=0) + 1:04d}"


def latest_model_version(session: Session) -> ModelVersion | None:
    """The current model: the newest published version, if any."""
    query = (
        select(ModelVersion)
        .where(ModelVersion.state == "published")
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def list_model_versions(session: Session) -> list[ModelVersion]:
    """Every recorded version, newest first."""
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    return list(session.scalars(query))
