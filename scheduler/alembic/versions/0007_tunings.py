"""Hyperparameter tunings and their trials (the Optuna study lives in its own SQLite file).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tunings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("group", sa.String(255), nullable=False, server_default=""),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("experiment", sa.String(255), nullable=False),
        sa.Column("state", sa.String(64), nullable=False, index=True),
        sa.Column("state_detail", sa.String(64), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("trial_fields", sa.JSON, nullable=False),
        sa.Column("owner_groups", sa.JSON, nullable=False),
        sa.Column("archive_path", sa.String(4096), nullable=False),
        sa.Column("study_name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("ended_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "tuning_trials",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tuning_id", sa.Integer, sa.ForeignKey("tunings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=True, index=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("early_stop", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("tuning_id", "number", name="uq_tuning_trials_tuning_number"),
    )


def downgrade() -> None:
    op.drop_table("tuning_trials")
    op.drop_table("tunings")
