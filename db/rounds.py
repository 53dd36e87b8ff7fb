"""Selection rounds: a strategy's ranked choice of volumes, which claims then serve in rank order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from db.engine import STATISTICS_ROWS, refresh_statistics
from db.errors import DBError, NotFoundError
from db.images import free_of_lease, require_known
from db.schema import ROUND_STATES, Image, RoundItem, SelectionRound, check_aware, utcnow


def create_round(
    session: Session,
    strategy: str,
    ranked_ids: list[str],
    model_version: str | None = None,
    config: dict[str, Any] | None = None,
    budget: int | None = None,
    reasons: list[dict[str, Any]] | None = None,
) -> int:
    """Store a ready round whose items are ``ranked_ids`` (rank 0 first), each with its ``reasons`` entry (why it
    was picked; none when not given); return its id.

    Older ``ready`` rounds of the same strategy become ``superseded``, so :func:`current_round` of that
    strategy is this one. ``budget`` defaults to the number of items.
    """
    if not strategy:
        raise DBError("round strategy must be a non-empty string")
    if len(set(ranked_ids)) != len(ranked_ids):
        raise DBError("a round lists each image at most once")
    if reasons is not None and len(reasons) != len(ranked_ids):
        raise DBError(f"{len(reasons)} reasons for {len(ranked_ids)} ranked images")
    require_known(session, ranked_ids)
    session.execute(
        update(SelectionRound)
        .where(SelectionRound.state == "ready", SelectionRound.strategy == strategy)
        .values(state="superseded")
    )
    selection = SelectionRound(
        strategy=strategy,
        budget=len(ranked_ids) if budget is None else budget,
        model_version=model_version,
        created_at=utcnow(),
        state="ready",
        config=config or {},
    )
    session.add(selection)
    session.flush()
    if ranked_ids:
        session.execute(
            insert(RoundItem),
            [
                {"round_id": selection.id, "image_id": i, "rank": rank, "reason": reasons[rank] if reasons else None}
                for rank, i in enumerate(ranked_ids)
            ],
        )
        if len(ranked_ids) >= STATISTICS_ROWS:
            refresh_statistics(session, RoundItem.__table__)
    return selection.id


def current_round(session: Session, strategy: str | None = None) -> SelectionRound | None:
    """The newest ``ready`` round (of ``strategy``, when given), if any."""
    query = (
        select(SelectionRound)
        .where(SelectionRound.state == "ready")
        .order_by(SelectionRound.created_at.desc(), SelectionRound.id.desc())
        .limit(1)
    )
    if strategy is not None:
        query = query.where(SelectionRound.strategy == strategy)
    return session.scalar(query)


def set_round_state(session: Session, round_id: int, state: str) -> None:
    """Move a round to ``state`` (e.g. ``exhausted`` once :func:`round_remaining` reaches 0)."""
    if state not in ROUND_STATES:
        raise DBError(f"unknown round state {state!r}: use one of {ROUND_STATES}")
    selection = session.get(SelectionRound, round_id)
    if selection is None:
        raise NotFoundError(f"unknown selection round {round_id}")
    selection.state = state
    session.flush()


def round_image_ids(session: Session, round_id: int) -> list[str]:
    """The round's image ids in rank order."""
    query = select(RoundItem.image_id).where(RoundItem.round_id == round_id).order_by(RoundItem.rank)
    return list(session.scalars(query))


def round_remaining(session: Session, round_id: int, now: datetime | None = None) -> int:
    """How many of the round's volumes are still unlabeled and not leased at ``now``."""
    check_aware(now)
    query = (
        select(func.count())
        .select_from(RoundItem)
        .join(Image, Image.id == RoundItem.image_id)
        .where(RoundItem.round_id == round_id, Image.label_status == "unlabeled", free_of_lease(now or utcnow()))
    )
    return int(session.scalar(query) or 0)
