"""A run's group (for quotas and fair share) and whether it may be preempted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("group", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("preemptible", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.create_index("ix_runs_group", ["group"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_group")
        batch.drop_column("preemptible")
        batch.drop_column("group")
