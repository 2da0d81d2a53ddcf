"""Tuning ids are never reused: SQLite gave a new tuning the id of the newest deleted one, and its trials'
idempotency keys (``tuning:ID:NUMBER``) then named the old tuning's runs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # PostgreSQL's sequences never hand out an id twice
        with op.batch_alter_table("tunings", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("tunings", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
