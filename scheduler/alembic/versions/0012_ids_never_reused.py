"""Ids of runs, experiments, datasets, dataset versions and templates are never reused.

A deleted newest object's id went to the next one: a bookmark, a tuning's trial row or a log link naming
the old object then named a new one (perhaps another user's).  Runs are numbered by the dispatcher (the
largest id plus one at start), so ``id_high_water`` keeps the largest id of a deleted run; the others get
their ids from the database, so SQLite's ``AUTOINCREMENT`` (a high-water mark in ``sqlite_sequence``)
does it, and PostgreSQL's sequences never repeat an id already.  The tables are rebuilt with their rows
and their children kept (``upgrade_to_head`` migrates SQLite with foreign keys off, so a rebuild does not
cascade into the rows that reference it).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

REBUILT = ("experiments", "datasets", "dataset_versions", "training_templates")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in REBUILT:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    op.create_table(
        "id_high_water",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
    op.drop_table("id_high_water")
