"""Models, endpoints with stages and stage resources, their API statistics, batch inferences; runs get a kind.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _owned() -> list:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("group", sa.String(255), nullable=False, server_default="", index=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
        batch.add_column(sa.Column("parent_id", sa.Integer, nullable=True))
        batch.create_index("ix_runs_kind", ["kind"])
    op.create_table(
        "models", *_owned(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("framework", sa.String(32), nullable=False),
        sa.Column("framework_version", sa.String(64), nullable=False, server_default=""),
        sa.Column("artifact_format", sa.String(32), nullable=False),
        sa.Column("artifact_path", sa.String(4096), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source_run_id", sa.Integer, nullable=True, index=True),
        sa.Column("source_tuning_id", sa.Integer, nullable=True, index=True),
        sa.Column("source_path", sa.String(4096), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_models_owner_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "endpoints", *_owned(),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("default_stage_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sqlite_autoincrement=True,  # ids never reused: a deleted object's runs, statistics, keys stay its own
    )
    op.create_table(
        "endpoint_stages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("endpoint_id", "name", name="uq_endpoint_stages_endpoint_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "stage_resources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stage_id", sa.Integer, sa.ForeignKey("endpoint_stages.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("model_id", sa.Integer, nullable=False, index=True),
        sa.Column("resource_path", sa.String(1024), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_failure_log", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("stage_id", "resource_path", name="uq_stage_resources_stage_path"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "endpoint_stats",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stage_id", sa.Integer, nullable=False, index=True),
        sa.Column("minute", sa.DateTime, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("latency_buckets", sa.JSON, nullable=False),
        sa.UniqueConstraint("stage_id", "minute", name="uq_endpoint_stats_stage_minute"),
    )
    op.create_table(
        "batch_inferences", *_owned(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("model_id", sa.Integer, nullable=False, index=True),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("input_path", sa.String(4096), nullable=False),
        sa.Column("input_type", sa.String(8), nullable=False),
        sa.Column("include_glob", sa.JSON, nullable=False),
        sa.Column("exclude_glob", sa.JSON, nullable=False),
        sa.Column("output_path", sa.String(4096), nullable=False, server_default=""),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("timeout_seconds", sa.Float, nullable=False),
        sa.Column("max_seconds", sa.Integer, nullable=True),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("state", sa.String(40), nullable=False, index=True),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("summary", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    for table in ("batch_inferences", "endpoint_stats", "stage_resources", "endpoint_stages", "endpoints", "models"):
        op.drop_table(table)
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_kind")
        batch.drop_column("parent_id")
        batch.drop_column("kind")
