"""Prospective quality: one row per final label, comparing it with the serving model's pre-segmentation.

Revision ID: 0005_quality
Revises: 0004_review
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_quality"
down_revision: str | Sequence[str] | None = "0004_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quality_records",
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("annotator", sa.String(255), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("liver_dice", sa.Float(), nullable=True),
        sa.Column("tumour_dice", sa.Float(), nullable=True),
        sa.Column("lesion_f1", sa.Float(), nullable=True),
        sa.Column("edit_fraction", sa.Float(), nullable=True),
        sa.Column("minutes", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["label_id"], ["labels.id"], name=op.f("fk_quality_records_label_id_labels"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_quality_records_image_id_images"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("label_id", name=op.f("pk_quality_records")),
    )
    op.create_index(op.f("ix_quality_records_model_version"), "quality_records", ["model_version"])


def downgrade() -> None:
    op.drop_index(op.f("ix_quality_records_model_version"), table_name="quality_records")
    op.drop_table("quality_records")
