"""Artifacts record their plain digest as `algorithm:hex` (manifest version 2: BLAKE3).

Existing rows held a bare sha256 in plain_sha256; they become `sha256:<hex>`, which is how a
version 1 manifest reads since (backupctl.core.digests).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot rename or widen a column in place; Alembic copies the table.
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column(
            "plain_sha256", new_column_name="plain_digest", type_=sa.String(80), existing_nullable=False
        )
    op.execute("UPDATE artifacts SET plain_digest = 'sha256:' || plain_digest")


def downgrade() -> None:
    op.execute(
        "UPDATE artifacts SET plain_digest = substr(plain_digest, 8) WHERE plain_digest LIKE 'sha256:%'"
    )
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column(
            "plain_digest", new_column_name="plain_sha256", type_=sa.String(64), existing_nullable=False
        )
