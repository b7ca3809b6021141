"""Drill results: one row per drill run.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("drill", sa.String(64), nullable=False),
        sa.Column("snapshot_id", sa.String(40), nullable=True),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("runtime", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("rto_seconds", sa.Float, nullable=True),
        sa.Column("rto_objective_seconds", sa.Float, nullable=True),
        sa.Column("rpo_seconds", sa.Float, nullable=True),
        sa.Column("rpo_objective_seconds", sa.Float, nullable=True),
        sa.Column("stages", sa.JSON, nullable=False),
        sa.Column("checks", sa.JSON, nullable=False),
        sa.Column("report_paths", sa.JSON, nullable=False),
    )
    op.create_index("ix_drills_policy", "drills", ["policy"])


def downgrade() -> None:
    op.drop_index("ix_drills_policy", "drills")
    op.drop_table("drills")
