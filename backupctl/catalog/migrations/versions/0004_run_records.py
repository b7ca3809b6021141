"""The hash-chained run ledger (issue #14): `run_records`, backfilled from existing rows.

Rows that exist when the migration runs are appended in time order (snapshots with their copies,
verifications, drills) with trigger `migration-0004`, so the chain covers them from here on.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_records",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(160), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_run_records_at", "run_records", ["at"])
    op.create_index("ix_run_records_kind_subject", "run_records", ["kind", "subject"])
    _backfill()


def _backfill() -> None:
    from backupctl.catalog.ledger import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_run_records_kind_subject", "run_records")
    op.drop_index("ix_run_records_at", "run_records")
    op.drop_table("run_records")
