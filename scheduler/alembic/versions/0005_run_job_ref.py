"""A run's job reference, in its executor's own words ("PID START" locally, a Slurm job id), to re-attach after a restart.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("job_ref", sa.String(200), nullable=True))
    # Runs started before this revision were local processes: their reference is "PID START".
    op.execute("UPDATE runs SET job_ref = CAST(pid AS VARCHAR(20)) || ' ' || COALESCE(process_start, '') "
               "WHERE pid IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("job_ref")
