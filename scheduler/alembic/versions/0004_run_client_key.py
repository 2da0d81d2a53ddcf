"""A run's client key (the submission's Idempotency-Key), unique per owner, so a retried submission is one run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("client_key", sa.String(200), nullable=True))
        # NULLs never collide: runs submitted without a key (and every run before this revision) are unaffected.
        batch.create_index("uq_runs_owner_client_key", ["owner", "client_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("uq_runs_owner_client_key")
        batch.drop_column("client_key")
