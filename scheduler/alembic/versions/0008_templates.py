"""Training templates (EasyMaker's 학습 템플릿): a training's saved settings and code, owned by a user or a group.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_templates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("group", sa.String(255), nullable=False, server_default="", index=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("archive_path", sa.String(4096), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_training_templates_owner_name"),
    )


def downgrade() -> None:
    op.drop_table("training_templates")
