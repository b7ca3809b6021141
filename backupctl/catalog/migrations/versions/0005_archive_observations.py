"""Observations of the point-in-time archives (issue #14): `archive_observations`.

Rows are appended by the commands that read a PITR source's archive (`status`, `wal status`,
`binlog status|verify|collect`); each is also a `pitr` record of the run ledger. The table starts
empty: there is nothing to backfill (no command recorded these facts before).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_observations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("archive", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("via", sa.String(32), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("newest_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restorable_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("continuous", sa.Boolean(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_archive_observations_source", "archive_observations", ["policy", "source", "observed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_archive_observations_source", "archive_observations")
    op.drop_table("archive_observations")
