"""Accounts: users, hashed API tokens, the shared signing secret; audit events record the caller's address;
selection rounds can be cancelled; images and labels can be archived; one training job at a time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROUND_STATES = ("building", "ready", "exhausted", "superseded")
NEW_ROUND_STATES = OLD_ROUND_STATES + ("cancelled",)
# 0001 passed full names through the naming convention, which prefixed them again; op.f() marks a name as final.
OLD_ROUND_CHECK = "ck_selection_rounds_ck_selection_rounds_state"
ROUND_CHECK = "ck_selection_rounds_state"
OLD_STATUS_CHECK = "ck_images_ck_images_label_status"
STATUS_CHECK = "ck_images_label_status"


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(_in("role", ("admin", "reviewer", "annotator")), name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        _timestamp("last_used_at", nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("source", sa.String(255), nullable=True))
    _round_states(OLD_ROUND_CHECK, ROUND_CHECK, NEW_ROUND_STATES)
    _label_statuses(OLD_STATUS_CHECK, STATUS_CHECK, ("unlabeled", "labeled", "archived"))
    op.create_table(
        "archived_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("annotator", sa.String(255), nullable=True),
        _timestamp("created_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(80), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        _timestamp("archived_at"),
        sa.Column("archived_by", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_archived_labels_image_id_images",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_archived_labels"),
    )
    op.create_index("ix_archived_labels_image_id_tag", "archived_labels", ["image_id", "tag"])
    # One unfinished training job at a time, across every server process on the database.
    op.execute("UPDATE jobs SET state = 'failed', message = 'interrupted (found unfinished by migration 0003)' "
               "WHERE kind = 'train' AND state IN ('queued', 'running')")
    one_training = sa.text("kind = 'train' AND state IN ('queued', 'running')")
    op.create_index("uq_jobs_one_training", "jobs", ["kind"], unique=True, sqlite_where=one_training,
                    postgresql_where=one_training)


def downgrade() -> None:
    op.drop_index("uq_jobs_one_training", table_name="jobs")
    op.execute("UPDATE selection_rounds SET state = 'superseded' WHERE state = 'cancelled'")
    op.execute(
        "UPDATE images SET label_status = CASE WHEN EXISTS (SELECT 1 FROM labels WHERE labels.image_id = images.id "
        "AND labels.tag = 'final') THEN 'labeled' ELSE 'unlabeled' END WHERE label_status = 'archived'"
    )
    _label_statuses(STATUS_CHECK, OLD_STATUS_CHECK, ("unlabeled", "labeled"))
    _round_states(ROUND_CHECK, OLD_ROUND_CHECK, OLD_ROUND_STATES)
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("source")
    for table in ("archived_labels", "server_secrets", "api_tokens", "users"):
        op.drop_table(table)


def _round_states(drop: str, create: str, allowed: tuple[str, ...]) -> None:
    """Replace the CHECK constraint on ``selection_rounds.state`` (batch mode: SQLite rebuilds the table)."""
    with op.batch_alter_table("selection_rounds") as batch:
        batch.drop_constraint(op.f(drop), type_="check")
        batch.create_check_constraint(op.f(create), _in("state", allowed))


def _label_statuses(drop: str, create: str, allowed: tuple[str, ...]) -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint(op.f(drop), type_="check")
        batch.create_check_constraint(op.f(create), _in("label_status", allowed))
