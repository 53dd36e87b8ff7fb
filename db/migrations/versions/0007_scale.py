"""A hospital-archive pool: volumes registered before their files are read, the indexes the admin views need at
100,000 volumes, and the login guard's counters.

- ``images.shape``, ``spacing`` and ``checksum`` may be empty until the background ingestion job has read the file;
- ``jobs.kind`` takes ``ingestion``;
- indexes: ``images (grp, label_status)`` (totals by group), ``assignments (state, image_id)`` (skipped volumes),
  ``scores (method, model_version, value)`` (the volume list by score; replaces ``(method, model_version)``);
- ``login_limits``: rate-limit and lockout counters shared by every replica.

Revision ID: 0007_scale
Revises: 0006_round_reasons
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_scale"
down_revision: str | Sequence[str] | None = "0006_round_reasons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('train', 'scoring', 'embedding', 'round')"
NEW_KINDS = "kind IN ('train', 'scoring', 'embedding', 'round', 'ingestion')"
ONE_TRAINING = "kind = 'train' AND state IN ('queued', 'running')"


def _set_facts_nullable(nullable: bool) -> None:
    with op.batch_alter_table("images") as batch:
        batch.alter_column("shape", existing_type=sa.JSON(), nullable=nullable)
        batch.alter_column("spacing", existing_type=sa.JSON(), nullable=nullable)
        batch.alter_column("checksum", existing_type=sa.String(80), nullable=nullable)


def _set_job_kinds(kinds: str) -> None:
    # SQLite rebuilds the table to change a CHECK constraint; the partial unique index is made again explicitly.
    op.drop_index("uq_jobs_one_training", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_kind", type_="check")
        batch.create_check_constraint("kind", sa.text(kinds))
    op.create_index("uq_jobs_one_training", "jobs", ["kind"], unique=True, sqlite_where=sa.text(ONE_TRAINING),
                    postgresql_where=sa.text(ONE_TRAINING))


def upgrade() -> None:
    _set_facts_nullable(True)
    _set_job_kinds(NEW_KINDS)
    op.create_index("ix_images_grp_label_status", "images", ["grp", "label_status"])
    op.create_index("ix_assignments_state_image_id", "assignments", ["state", "image_id"])
    op.create_index("ix_scores_method_model_version_value", "scores", ["method", "model_version", "value"])
    op.drop_index("ix_scores_method_model_version", table_name="scores")
    op.create_table(
        "login_limits",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_limits")),
    )
    op.create_index("ix_login_limits_expires_at", "login_limits", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_login_limits_expires_at", table_name="login_limits")
    op.drop_table("login_limits")
    op.create_index("ix_scores_method_model_version", "scores", ["method", "model_version"])
    op.drop_index("ix_scores_method_model_version_value", table_name="scores")
    op.drop_index("ix_assignments_state_image_id", table_name="assignments")
    op.drop_index("ix_images_grp_label_status", table_name="images")
    op.execute("DELETE FROM jobs WHERE kind = 'ingestion'")
    _set_job_kinds(OLD_KINDS)
    op.execute("UPDATE images SET shape = '[]', spacing = '[]', checksum = '' WHERE checksum IS NULL")
    _set_facts_nullable(False)
