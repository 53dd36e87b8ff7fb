"""Images get a dense integer ``seq`` (ingestion order) so a random claim is one index range scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    # Existing rows are numbered in id order (portable: a correlated count, run once).
    op.execute("UPDATE images SET seq = (SELECT COUNT(*) FROM images AS earlier WHERE earlier.id <= images.id)")
    with op.batch_alter_table("images") as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint("uq_images_seq", ["seq"])
    op.create_index("ix_images_label_status_seq", "images", ["label_status", "seq"])


def downgrade() -> None:
    op.drop_index("ix_images_label_status_seq", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint("uq_images_seq", type_="unique")
        batch.drop_column("seq")
