"""The cluster's history for the admin page's charts: per node GPUs held and busy, the queue and its waits.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False, index=True),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("gpus_total", sa.Integer, nullable=False),
        sa.Column("gpus_allocated", sa.Integer, nullable=False),
        sa.Column("utilization", sa.Float, nullable=True),
    )
    op.create_table(
        "cluster_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False, index=True),
        sa.Column("queue_length", sa.Integer, nullable=False),
        sa.Column("wait_p50_seconds", sa.Float, nullable=True),
        sa.Column("wait_p95_seconds", sa.Float, nullable=True),
        sa.Column("running_runs", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_samples")
    op.drop_table("node_samples")
