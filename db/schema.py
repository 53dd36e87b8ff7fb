"""SQLAlchemy 2.0 schema of the annotation database (docs/design.md, "Data model").

Every timestamp is timezone-aware UTC (:class:`UTCDateTime`). The current lease of a volume lives on its
``images`` row (``lease_holder``, ``lease_expires_at``) because that row is what a claim locks and updates:
PostgreSQL re-checks the claim's WHERE clause on the locked row (see :mod:`db.claims`). The ``assignments``
table is the ledger of every lease ever given; a partial unique index lets the database itself refuse two
active leases on one image.

Schema changes go through Alembic (``db/migrations``); ``tests/db/test_migrations.py`` checks that the
migrations produce exactly this metadata.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.errors import DBError

# "archived": removed from the campaign by an admin; the row, its labels and every file stay (undoable).
LABEL_STATUSES = ("unlabeled", "labeled", "archived")
ASSIGNMENT_STATES = ("active", "labeled", "skipped", "expired", "released")
ROUND_STATES = ("building", "ready", "exhausted", "superseded", "cancelled")
MODEL_KINDS = ("prompt", "finetune")
MODEL_STATES = ("published", "failed")
JOB_KINDS = ("train", "scoring", "embedding", "round", "ingestion")
JOB_STATES = ("queued", "running", "done", "failed")
USER_ROLES = ("admin", "reviewer", "annotator")
# Review states of a final label (docs/design.md, "Review, double reading and agreement").
REVIEW_STATES = ("submitted", "approved", "changes_requested")
ONE_TRAINING = "kind = 'train' AND state IN ('queued', 'running')"
# Background work that every replica shares out in leased batches (docs/design.md, "Work spread over replicas").
WORK_KINDS = ("embedding", "scoring")
WORK_STATES = ("pending", "leased", "done", "failed")

# Deterministic constraint/index names on every backend, so migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def check_aware(moment: datetime | None) -> None:
    """Raise :class:`DBError` for a naive datetime (its time zone would be a guess)."""
    if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
        raise DBError(f"naive datetime {moment!r}: pass a timezone-aware datetime (UTC)")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so values are stored as naive UTC text in
    SQLite's fixed format; string comparison there is then chronological, which lease expiry relies on.
    Naive datetimes are refused: their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        check_aware(value)  # SQLAlchemy wraps it in a StatementError; repositories check earlier
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[int]: JSON, list[float]: JSON}


class Image(Base):
    """One volume in the studies folder; ``id`` is MONAI Label's image id (file name without extension)."""

    __tablename__ = "images"
    __table_args__ = (
        _one_of("label_status", LABEL_STATUSES, "label_status"),
        # Status first, then id: "the first unlabeled volume by id" is one index range scan that stops at
        # the first free row, instead of collecting and sorting every unlabeled row.
        Index(None, "label_status", "id"),
        # Random claims jump to a random ``seq`` and take the next free volume: one index range scan.
        Index(None, "label_status", "seq"),
        # Totals by acquisition group count the index, not the rows (GET /admin/progress at 100,000 volumes).
        Index(None, "grp", "label_status"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)  # ingestion order, 1, 2, … (gaps allowed)
    path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))
    # Header facts and checksum: none until the background ingestion job (or the first claim) has read the file, so
    # registering a folder of 100,000 volumes opens none of them (docs/design.md, "Ingestion").
    shape: Mapped[list[int] | None]
    spacing: Mapped[list[float] | None]
    checksum: Mapped[str | None] = mapped_column(String(80))  # "SHA256:<hex>", the form Slicer verifies
    ingested_at: Mapped[datetime]
    grp: Mapped[str | None] = mapped_column(String(64))  # acquisition group, when known
    meta: Mapped[dict[str, Any]]  # MONAI Label's per-image info dict
    # Denormalised from labels (a "final" label exists) so the claim query needs no join.
    label_status: Mapped[str] = mapped_column(String(16), default="unlabeled")
    lease_holder: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    # How many different annotators read the volume (double reading: 2 or 3); it is ``labeled`` once they all have.
    readers: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))


class LabelColumns:
    """What a label version is, live (``labels``) or archived (``archived_labels``)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    annotator: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str | None] = mapped_column(String(80))
    meta: Mapped[dict[str, Any]]
    review_status: Mapped[str | None] = mapped_column(String(24))  # final labels only (REVIEW_STATES)


class Label(LabelColumns, Base):
    """One saved label file; ``version`` counts up per (image, tag). A final label served to a reviewer is held for
    them (``review_holder`` until ``review_held_until``) so that the review queue offers other reviewers the next one
    (:func:`db.reviews.next_to_review`)."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("image_id", "tag", "version"),
        # The review queue: the oldest submitted final label first.
        Index(None, "review_status", "created_at"),
    )

    review_holder: Mapped[str | None] = mapped_column(String(255))
    review_held_until: Mapped[datetime | None]


class ArchivedLabel(LabelColumns, Base):
    """A label version an admin removed: moved out of ``labels`` (so every live query stays as it is), file kept.
    Version numbers keep counting across both tables, so a restored version never collides with a newer one."""

    __tablename__ = "archived_labels"
    __table_args__ = (Index(None, "image_id", "tag"),)

    archived_at: Mapped[datetime]
    archived_by: Mapped[str] = mapped_column(String(255))


class Assignment(Base):
    """The lease ledger: one row per volume handed to an annotator."""

    __tablename__ = "assignments"
    __table_args__ = (
        _one_of("state", ASSIGNMENT_STATES, "state"),
        Index(None, "annotator", "state"),
        Index(None, "image_id", "state"),
        # The skipped volumes (a volume status) are found from the ledger, not by checking every image.
        Index(None, "state", "image_id"),
        # The database itself forbids two active leases on one image.
        Index(
            "uq_assignments_active_image",
            "image_id",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    annotator: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(64))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("selection_rounds.id", ondelete="SET NULL"))
    claimed_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="active")


class Embedding(Base):
    """A volume's embedding from one backbone (``key``): ``dim`` float32 values as raw bytes."""

    __tablename__ = "embeddings"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    dim: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class Score(Base):
    """One selection score (e.g. prompt uncertainty) of a volume under one model version."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("image_id", "method", "model_version"),
        # One version's scores in value order: the volume list sorted or filtered by score reads one index range.
        Index(None, "method", "model_version", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]


class SelectionRound(Base):
    """One run of a selection strategy over the unlabeled pool; its items are the ranked queue."""

    __tablename__ = "selection_rounds"
    __table_args__ = (_one_of("state", ROUND_STATES, "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(64))
    budget: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]


class RoundItem(Base):
    """A volume chosen by a round; ``rank`` 0 is offered first."""

    __tablename__ = "round_items"
    __table_args__ = (Index(None, "round_id", "rank"),)

    round_id: Mapped[int] = mapped_column(
        ForeignKey("selection_rounds.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)
    # Why the rule picked it (its score; TESLA's cluster and that cluster's size): shown beside the round.
    reason: Mapped[dict[str, Any] | None]


class ModelVersion(Base):
    """A trained model; the current one is the newest ``published`` version (no flag to keep in sync)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        _one_of("kind", MODEL_KINDS, "kind"),
        _one_of("state", MODEL_STATES, "state"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. "v0003"
    created_at: Mapped[datetime]
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]]
    tunable_params: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))


class Job(Base):
    """Background work (training, scoring, ...) whose status the API reports across processes."""

    __tablename__ = "jobs"
    __table_args__ = (
        _one_of("kind", JOB_KINDS, "kind"),
        _one_of("state", JOB_STATES, "state"),
        # One training at a time across every server on the database: the database refuses a second unfinished one.
        Index(
            "uq_jobs_one_training",
            "kind",
            unique=True,
            sqlite_where=text(ONE_TRAINING),
            postgresql_where=text(ONE_TRAINING),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float)  # 0..1
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    detail: Mapped[dict[str, Any]]


class AuditEvent(Base):
    """Who did what, when. ``image_id`` has no foreign key: the trail outlives a removed image."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[str | None] = mapped_column(String(255), index=True)
    detail: Mapped[dict[str, Any]]
    source: Mapped[str | None] = mapped_column(String(255))  # the caller's address, for requests


class User(Base):
    """An account: annotators, reviewers and admins log in with a password or an API token.

    Users are disabled, never deleted: their name stays on the labels and leases they made.
    """

    __tablename__ = "users"
    __table_args__ = (_one_of("role", USER_ROLES, "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255))  # bcrypt; None: token-only account
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ApiToken(Base):
    """A long-lived API token of one user; only its SHA-256 is stored (the token is shown once, at creation)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class ServerSecret(Base):
    """A secret every server process on this database shares (the access-token signing key)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class LabelReview(Base):
    """One review transition of a final label version: who moved it from which state to which, when and why.
    Rows are only ever added (the audit of review); ``image_id`` has no foreign key, like the audit trail."""

    __tablename__ = "label_reviews"
    __table_args__ = (Index(None, "image_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)  # of the image's final label
    from_status: Mapped[str | None] = mapped_column(String(24))  # None: the label was just submitted
    to_status: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime]
    comment: Mapped[str | None] = mapped_column(Text)


class Agreement(Base):
    """Agreement between two final label versions of one volume: two readers' labels, or a reader's label and the
    label that trains (``reference``). ``metrics``: liver/tumour Dice, HD95 (mm) and lesion F1; None where undefined."""

    __tablename__ = "agreements"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    first_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    second_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_annotator: Mapped[str] = mapped_column(String(255))
    second_annotator: Mapped[str] = mapped_column(String(255))
    reference: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any]]
    computed_at: Mapped[datetime]
class QualityRecord(Base):
    """Prospective quality of one final label version: the pre-segmentation of the model version that served the
    claim, compared with the label (docs/design.md, "Prospective quality"). One row per label, so a label is never
    measured twice; ``model_version`` is None when no model was serving at the claim (nothing to compare)."""

    __tablename__ = "quality_records"
    __table_args__ = (Index(None, "model_version"),)

    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    annotator: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(64))
    liver_dice: Mapped[float | None] = mapped_column(Float)
    tumour_dice: Mapped[float | None] = mapped_column(Float)
    lesion_f1: Mapped[float | None] = mapped_column(Float)
    edit_fraction: Mapped[float | None] = mapped_column(Float)
    minutes: Mapped[float | None] = mapped_column(Float)  # claim to submission; None without a claim
    created_at: Mapped[datetime]


class LoginLimit(Base):
    """A counter of the login guard (``app.login_guard``): attempts or failures of one user or address in one fixed
    window, or a lockout. In the database so every replica counts the same attempts (docs/design.md, "Login abuse")."""

    __tablename__ = "login_limits"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)  # the window's end; the row counts nothing after it


class WorkBatch(Base):
    """A batch of background work (embedding or scoring some volumes for one ``target``: the embedding key or the
    model version) that any replica may lease (``db.work``; docs/design.md, "Work spread over replicas").

    ``pending`` → ``leased`` (``holder`` until ``lease_expires_at``; an expired lease is free to take again) →
    ``done``, or back to ``pending`` after an error (``failed`` once ``failures`` reach the limit)."""

    __tablename__ = "work_batches"
    __table_args__ = (
        _one_of("kind", WORK_KINDS, "kind"),
        _one_of("state", WORK_STATES, "state"),
        # The claim: the open batches of one target, best priority first, then in planning order.
        Index(None, "kind", "target", "state", "priority", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int] = mapped_column(Integer)  # higher is claimed first
    size: Mapped[int] = mapped_column(Integer)  # volumes in the batch
    state: Mapped[str] = mapped_column(String(16))
    # "host:pid:token" of the worker holding the lease; once done, the one whose results were stored
    holder: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    claims: Mapped[int] = mapped_column(Integer)  # how often it was leased (more than once: a worker died or failed)
    failures: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)  # the last failure
    created_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]  # the latest claim
    finished_at: Mapped[datetime | None]


class WorkItem(Base):
    """A volume of a work batch. Planning never puts a volume into a second open batch of the same target."""

    __tablename__ = "work_items"

    batch_id: Mapped[int] = mapped_column(ForeignKey("work_batches.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
