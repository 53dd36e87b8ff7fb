"""Why each volume of a selection round was picked (its score; TESLA's cluster): a JSON column on round items.

Revision ID: 0006_round_reasons
Revises: 0005_quality
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_round_reasons"
down_revision: str | Sequence[str] | None = "0005_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("round_items") as batch:
        batch.add_column(sa.Column("reason", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("round_items") as batch:
        batch.drop_column("reason")
