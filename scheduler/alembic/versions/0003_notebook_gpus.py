"""GPUs held by notebook servers, so they count in scheduling and quotas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notebook_gpus",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("gpus", sa.JSON, nullable=False),
        sa.Column("allocated_at", sa.DateTime, nullable=False),
        sa.Column("release_token", sa.String(64), nullable=False),
        sa.UniqueConstraint("owner", "server", name="uq_notebook_gpus_owner_server"),
    )


def downgrade() -> None:
    op.drop_table("notebook_gpus")
