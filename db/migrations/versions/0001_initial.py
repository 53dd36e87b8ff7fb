"""Initial schema: images, labels, leases, embeddings, scores, selection rounds, model versions, jobs, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Self-contained on purpose (no imports from db.schema, which keeps changing): timestamps are plain
``DateTime(timezone=True)`` here; the UTC conversion of ``db.schema.UTCDateTime`` happens in Python only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("spacing", sa.JSON(), nullable=False),
        sa.Column("checksum", sa.String(80), nullable=False),
        _timestamp("ingested_at"),
        sa.Column("grp", sa.String(64), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("label_status", sa.String(16), nullable=False),
        sa.Column("lease_holder", sa.String(255), nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        _one_of("label_status", ("unlabeled", "labeled"), "ck_images_label_status"),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
    )
    op.create_index("ix_images_label_status_id", "images", ["label_status", "id"])
    op.create_index("ix_images_lease_expires_at", "images", ["lease_expires_at"])

    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("annotator", sa.String(255), nullable=True),
        _timestamp("created_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(80), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_labels_image_id_images", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_labels"),
        sa.UniqueConstraint("image_id", "tag", "version", name="uq_labels_image_id_tag_version"),
    )

    op.create_table(
        "selection_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        _timestamp("created_at"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        _one_of("state", ("building", "ready", "exhausted", "superseded"), "ck_selection_rounds_state"),
        sa.PrimaryKeyConstraint("id", name="pk_selection_rounds"),
    )

    op.create_table(
        "round_items",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_round_items_image_id_images", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["selection_rounds.id"],
            name="fk_round_items_round_id_selection_rounds",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", "image_id", name="pk_round_items"),
    )
    op.create_index("ix_round_items_round_id_rank", "round_items", ["round_id", "rank"])

    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("annotator", sa.String(255), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        _timestamp("claimed_at"),
        _timestamp("lease_expires_at"),
        _timestamp("closed_at", nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        _one_of("state", ("active", "labeled", "skipped", "expired", "released"), "ck_assignments_state"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_assignments_image_id_images", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["selection_rounds.id"],
            name="fk_assignments_round_id_selection_rounds",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
    )
    op.create_index("ix_assignments_annotator_state", "assignments", ["annotator", "state"])
    op.create_index("ix_assignments_image_id_state", "assignments", ["image_id", "state"])
    # At most one active lease per image, enforced by the database.
    op.create_index(
        "uq_assignments_active_image",
        "assignments",
        ["image_id"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )

    op.create_table(
        "embeddings",
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_embeddings_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", "key", name="pk_embeddings"),
    )

    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_scores_image_id_images", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
        sa.UniqueConstraint("image_id", "method", "model_version", name="uq_scores_image_id_method_model_version"),
    )
    op.create_index("ix_scores_method_model_version", "scores", ["method", "model_version"])

    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(64), nullable=False),
        _timestamp("created_at"),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("tunable_params", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        _one_of("kind", ("prompt", "finetune"), "ck_model_versions_kind"),
        _one_of("state", ("published", "failed"), "ck_model_versions_state"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        _one_of("kind", ("train", "scoring", "embedding", "round"), "ck_jobs_kind"),
        _one_of("state", ("queued", "running", "done", "failed"), "ck_jobs_state"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("at"),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_image_id", "audit_events", ["image_id"])


def downgrade() -> None:
    for table in (
        "audit_events",
        "jobs",
        "model_versions",
        "scores",
        "embeddings",
        "assignments",
        "round_items",
        "selection_rounds",
        "labels",
        "images",
    ):
        op.drop_table(table)
