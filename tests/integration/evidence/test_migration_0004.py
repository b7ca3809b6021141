"""Migration 0004: a catalog from before the ledger gets one chained record per existing row."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from backupctl.catalog.ledger import audit, read_ledger
from backupctl.catalog.store import HEAD_REVISION, MIGRATIONS, Catalog


def test_existing_rows_are_backfilled_and_audit_clean(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(text(
            "INSERT INTO snapshots (id, policy, status, host, policy_sha256, started_at, finished_at, "
            "plain_bytes, stored_bytes) VALUES ('s1', 'p', 'complete', 'h', :h, '2026-01-01 00:00:00', "
            "'2026-01-01 00:05:00.250000', 3, 5)"
        ), {"h": "0" * 64})  # fmt: skip
        connection.execute(text(
            "INSERT INTO snapshot_copies (snapshot_id, target, status, stored_bytes, updated_at) "
            "VALUES ('s1', 'nas', 'complete', 5, '2026-01-01 00:05:00')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO verifications (snapshot_id, target, at, ok, problems) "
            "VALUES ('s1', 'nas', '2026-01-02 00:00:00', 1, '[]')"
        ))  # fmt: skip
    engine.dispose()
    catalog = Catalog.open(url)
    assert catalog.revision() == HEAD_REVISION
    with catalog.engine.connect() as connection:
        result, records = audit(connection), read_ledger(connection)
    assert result.ok, result.problems
    # In time order: the copy (updated 00:05:00) before the snapshot (finished 00:05:00.25).
    assert [(r.kind, r.subject, r.trigger) for r in records] == [
        ("copy", "s1/nas", "migration-0004"),
        ("snapshot", "s1", "migration-0004"),
        ("verification", "1", "migration-0004"),
    ]
    catalog.fail_snapshot("s1", "edited through the API: recorded, so still clean")
    with catalog.engine.connect() as connection:
        assert audit(connection).ok
