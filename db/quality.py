"""Prospective quality records: which final labels still need measuring, which model served their claim, and the
stored figures (docs/design.md, "Prospective quality")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.labels import FINAL_TAG
from db.schema import Assignment, Label, ModelVersion, QualityRecord, check_aware, utcnow

QUALITY_FIGURES = ("liver_dice", "tumour_dice", "lesion_f1", "edit_fraction", "minutes")


def unmeasured_final_labels(session: Session, limit: int = 50) -> list[Label]:
    """Final label versions without a quality record, oldest first."""
    measured = select(QualityRecord.label_id)
    query = (
        select(Label).where(Label.tag == FINAL_TAG, Label.id.not_in(measured)).order_by(Label.id).limit(limit)
    )
    return list(session.scalars(query))


def unmeasured_count(session: Session) -> int:
    measured = select(QualityRecord.label_id)
    return session.scalar(select(func.count()).where(Label.tag == FINAL_TAG, Label.id.not_in(measured))) or 0


def claim_of_label(session: Session, label: Label) -> Assignment | None:
    """The lease a final label closed (``db.labels.record_label`` closes it at the label's time), if it had one."""
    query = (
        select(Assignment)
        .where(Assignment.image_id == label.image_id, Assignment.state == "labeled",
               Assignment.closed_at <= label.created_at)
        .order_by(Assignment.closed_at.desc(), Assignment.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def serving_version_at(session: Session, moment: datetime) -> ModelVersion | None:
    """The model version Next Sample and infer served at ``moment``: the newest one published by then."""
    check_aware(moment)
    query = (
        select(ModelVersion)
        .where(ModelVersion.state == "published", ModelVersion.created_at <= moment)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def record_quality(
    session: Session, label: Label, model_version: str | None, figures: dict[str, float | None],
    now: datetime | None = None,
) -> QualityRecord:
    """Store one label's figures (keys of :data:`QUALITY_FIGURES`; missing ones are None). A second record for the
    same label violates the primary key: the label was measured already."""
    check_aware(now)
    unknown = set(figures) - set(QUALITY_FIGURES)
    if unknown:
        raise ValueError(f"unknown quality figures {sorted(unknown)}")
    record = QualityRecord(
        label_id=label.id, image_id=label.image_id, annotator=label.annotator, model_version=model_version,
        created_at=now or utcnow(), **{name: figures.get(name) for name in QUALITY_FIGURES},
    )
    session.add(record)
    session.flush()
    return record


def quality_records(session: Session, annotator: str | None = None) -> list[QualityRecord]:
    """Every record with a model to compare (optionally one annotator's), oldest label first."""
    query = select(QualityRecord).where(QualityRecord.model_version.is_not(None)).order_by(QualityRecord.label_id)
    if annotator is not None:
        query = query.where(QualityRecord.annotator == annotator)
    return list(session.scalars(query))
