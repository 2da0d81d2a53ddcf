"""Experiments as objects, metric time series, storage accounting, checkpoint inputs and multi-node shapes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("group", sa.String(255), nullable=False, server_default=""),
        # The metric rules of its runs that name none (EasyMaker's 지표 at the experiment's level).
        sa.Column("metric_rules", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_experiments_owner_name"),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("group", sa.String(255), nullable=False, server_default=""),
        sa.Column("namespace", sa.String(300), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("namespace", "name", name="uq_datasets_namespace_name"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("source_path", sa.String(4096), nullable=True),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
    )
    op.create_table(
        "metric_points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
    )
    op.create_index("ix_metric_points_run_name_step", "metric_points", ["run_id", "name", "step"])
    with op.batch_alter_table("runs") as batch:
        # Metrics: how to read them from the log, and what was read so far (offsets move with the points).
        batch.add_column(sa.Column("metric_rules", sa.JSON, nullable=True))
        batch.add_column(sa.Column("metric_summary", sa.JSON, nullable=True))
        batch.add_column(sa.Column("metric_points", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("log_read_offset", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("report_read_offset", sa.BigInteger, nullable=False, server_default="0"))
        # Checkpoints registered with nothing.save(name, step): {name: step}.
        batch.add_column(sa.Column("checkpoint_steps", sa.JSON, nullable=True))
        # Bytes the run's folder takes on disk, measured; what storage quotas count.
        batch.add_column(sa.Column("disk_bytes", sa.BigInteger, nullable=False, server_default="0"))
        # --checkpoint RUN[:CHECKPOINT]: the run (and checkpoint) a new run starts from.
        batch.add_column(sa.Column("checkpoint_run", sa.Integer, nullable=True))
        batch.add_column(sa.Column("checkpoint_name", sa.String(1024), nullable=True))
        # Multi-node runs: nodes x GPUs per node, processes per node, torchrun; where each part runs.
        batch.add_column(sa.Column("nodes", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("gpus_per_node", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("procs_per_node", sa.Integer, nullable=True))
        batch.add_column(sa.Column("torchrun", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("placement", sa.JSON, nullable=True))
        # --dataset NAME=REF: [{"name", "dataset_id", "dataset", "version"}], the exact versions it reads.
        batch.add_column(sa.Column("datasets", sa.JSON, nullable=True))
    # Every run belongs to an experiment: make one for each (owner, experiment name) already used.
    op.execute(
        "INSERT INTO experiments (owner, name, description, \"group\", created_at, updated_at) "
        "SELECT owner, experiment, '', MIN(\"group\"), MIN(submitted_at), MAX(submitted_at) FROM runs "
        "GROUP BY owner, experiment"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in ("metric_rules", "metric_summary", "metric_points", "log_read_offset", "report_read_offset",
                       "checkpoint_steps", "disk_bytes", "checkpoint_run", "checkpoint_name", "nodes", "gpus_per_node",
                       "procs_per_node", "torchrun", "placement", "datasets"):
            batch.drop_column(column)
    op.drop_index("ix_metric_points_run_name_step", "metric_points")
    op.drop_table("metric_points")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
    op.drop_table("experiments")
