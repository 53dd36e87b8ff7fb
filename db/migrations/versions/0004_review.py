"""Review, double reading and agreement: final labels carry a review state, every review transition is a row,
volumes say how many readers they need, and agreement between two label versions is stored.

Revision ID: 0004_review
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_review"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("readers", sa.Integer(), nullable=False, server_default=sa.text("1")))
    for table in ("labels", "archived_labels"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("review_status", sa.String(24), nullable=True))
        # Every final label saved before review existed waits for review like a new one.
        op.execute(f"UPDATE {table} SET review_status = 'submitted' WHERE tag = 'final'")
    op.create_index("ix_labels_review_status_created_at", "labels", ["review_status", "created_at"])
    op.create_table(
        "label_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(24), nullable=True),
        sa.Column("to_status", sa.String(24), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_label_reviews"),
    )
    op.create_index("ix_label_reviews_image_id_version", "label_reviews", ["image_id", "version"])
    op.create_table(
        "agreements",
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("first_version", sa.Integer(), nullable=False),
        sa.Column("second_version", sa.Integer(), nullable=False),
        sa.Column("first_annotator", sa.String(255), nullable=False),
        sa.Column("second_annotator", sa.String(255), nullable=False),
        sa.Column("reference", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_agreements_image_id_images", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", "first_version", "second_version", name="pk_agreements"),
    )


def downgrade() -> None:
    op.drop_table("agreements")
    op.drop_index("ix_label_reviews_image_id_version", table_name="label_reviews")
    op.drop_table("label_reviews")
    op.drop_index("ix_labels_review_status_created_at", table_name="labels")
    for table in ("archived_labels", "labels"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("review_status")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("readers")
