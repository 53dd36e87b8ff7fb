"""The annotation database: SQLAlchemy 2.0 schema, engines, Alembic migrations and repositories (docs/design.md, "Data model").

Repository functions take a :class:`~sqlalchemy.orm.Session` and work inside the caller's transaction,
except :func:`claim_next_volume` and :func:`claim_next_sample`, which can own their transaction (and retry it).
Open transactions that read and then write with :func:`write_session` (SQLite: ``BEGIN IMMEDIATE``).
"""

from db.audit import audit, audit_events
from db.claims import DEFAULT_LEASE, active_lease, claim_next_sample, claim_next_volume, expire_leases, release_lease
from db.engine import begin_write, create_db_engine, default_db_url, normalise_url, session_factory, write_session
from db.errors import DBError, NotFoundError, UnknownImageError
from db.images import ImageRecord, counts, get_image, image_ids, require_image, upsert_images
from db.jobs import finish_job, get_job, list_jobs, start_job, update_job
from db.labels import FINAL_TAG, archive_label, labels_for, latest_label, record_label, restore_label
from db.migrate import head_revision, upgrade
from db.model_versions import latest_model_version, list_model_versions, next_model_version_id, record_model_version
from db.rounds import create_round, current_round, round_image_ids, round_remaining, set_round_state
from db.schema import (
    Assignment,
    AuditEvent,
    Base,
    Embedding,
    Image,
    Job,
    Label,
    ModelVersion,
    RoundItem,
    Score,
    SelectionRound,
    utcnow,
)
from db.scores import load_embeddings, load_scores, store_embeddings, store_scores

__all__ = [
    "DEFAULT_LEASE",
    "FINAL_TAG",
    "Assignment",
    "AuditEvent",
    "Base",
    "DBError",
    "Embedding",
    "Image",
    "ImageRecord",
    "Job",
    "Label",
    "ModelVersion",
    "NotFoundError",
    "RoundItem",
    "Score",
    "SelectionRound",
    "UnknownImageError",
    "active_lease",
    "audit",
    "audit_events",
    "begin_write",
    "claim_next_sample",
    "claim_next_volume",
    "counts",
    "create_db_engine",
    "create_round",
    "current_round",
    "default_db_url",
    "archive_label",
    "expire_leases",
    "finish_job",
    "get_image",
    "get_job",
    "head_revision",
    "image_ids",
    "labels_for",
    "latest_label",
    "latest_model_version",
    "list_jobs",
    "list_model_versions",
    "load_embeddings",
    "load_scores",
    "next_model_version_id",
    "normalise_url",
    "record_label",
    "record_model_version",
    "release_lease",
    "require_image",
    "restore_label",
    "round_image_ids",
    "round_remaining",
    "session_factory",
    "set_round_state",
    "start_job",
    "store_embeddings",
    "store_scores",
    "update_job",
    "upgrade",
    "upsert_images",
    "utcnow",
    "write_session",
]
