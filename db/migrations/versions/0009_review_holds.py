"""Who is reviewing a label, and until when: two columns on labels, so two reviewers are not served the same label.

Revision ID: 0009_review_holds
Revises: 0008_work_batches
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_review_holds"
down_revision: str | Sequence[str] | None = "0008_work_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("review_holder", sa.String(255), nullable=True))
        batch.add_column(sa.Column("review_held_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("review_held_until")
        batch.drop_column("review_holder")
