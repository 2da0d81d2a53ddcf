"""Runs and their transition log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RUN_STATES = (
    "CREATE REQUESTED", "QUEUED", "CREATE IN PROGRESS", "RUNNING", "STOP IN PROGRESS",
    "COMPLETE", "STOPPED", "FAIL TRAIN", "CREATE FAILED",
)
STOP_CAUSES = ("cancel", "max_time", "preempt", "zombie")


def _state(name="run_state"):
    return sa.Enum(*RUN_STATES, name=name, native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("experiment", sa.String(255), nullable=False),
        sa.Column("entry_point", sa.String(1024), nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("snapshot_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("max_seconds", sa.Integer, nullable=True),
        sa.Column("state", _state(), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("stop_cause", sa.Enum(*STOP_CAUSES, name="stop_cause", native_enum=False, length=32), nullable=True),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.Column("node", sa.String(255), nullable=True),
        sa.Column("assigned_gpus", sa.JSON, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("run_dir", sa.String(4096), nullable=False),
        sa.Column("log_path", sa.String(4096), nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("process_start", sa.String(64), nullable=True),
    )
    op.create_index("ix_runs_owner", "runs", ["owner"])
    op.create_index("ix_runs_experiment", "runs", ["experiment"])
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_index("ix_runs_owner_state", "runs", ["owner", "state"])
    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("from_state", _state(), nullable=True),
        sa.Column("to_state", _state(), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_run_events_run_id", "run_events", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_run_events_run_id", table_name="run_events")
    op.drop_table("run_events")
    for name in ("ix_runs_owner_state", "ix_runs_state", "ix_runs_experiment", "ix_runs_owner"):
        op.drop_index(name, table_name="runs")
    op.drop_table("runs")
