"""Work spread over replicas: embedding and scoring batches that every replica leases through the database.

- ``work_batches``: one batch of volumes to embed (target: the embedding key) or to score (target: the model
  version), its state (``pending``, ``leased``, ``done``, ``failed``) and lease (holder, expiry);
- ``work_items``: the volumes of each batch.

See docs/design.md, "Work spread over replicas".

Revision ID: 0008_work_batches
Revises: 0007_scale
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_work_batches"
down_revision: str | Sequence[str] | None = "0007_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "work_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(255), nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("claimed_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.CheckConstraint("kind IN ('embedding', 'scoring')", name=op.f("ck_work_batches_kind")),
        sa.CheckConstraint("state IN ('pending', 'leased', 'done', 'failed')", name=op.f("ck_work_batches_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_batches")),
    )
    op.create_index(
        "ix_work_batches_kind_target_state_priority_id", "work_batches", ["kind", "target", "state", "priority", "id"]
    )
    op.create_table(
        "work_items",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["work_batches.id"], name=op.f("fk_work_items_batch_id_work_batches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_work_items_image_id_images"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_id", "image_id", name=op.f("pk_work_items")),
    )
    op.create_index("ix_work_items_image_id", "work_items", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_work_items_image_id", table_name="work_items")
    op.drop_table("work_items")
    op.drop_index("ix_work_batches_kind_target_state_priority_id", table_name="work_batches")
    op.drop_table("work_batches")
