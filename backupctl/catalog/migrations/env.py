"""Alembic environment: the catalog runs migrations itself on open (see catalog/store.py)."""

from __future__ import annotations

from alembic import context

from backupctl.catalog.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
