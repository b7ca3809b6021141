from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from backupctl.catalog.store import HEAD_REVISION, MIGRATIONS, Catalog


def test_head_constant_matches_alembic() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_open_twice_and_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    assert Catalog.open(url).revision() == HEAD_REVISION
    assert Catalog.open(url).revision() == HEAD_REVISION


def test_migration_0003_labels_existing_sha256_digests(tmp_path: Path) -> None:
    """A catalog written before version 2 manifests keeps its rows; their digests say sha256."""
    from alembic import command
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(text(
            "INSERT INTO snapshots (id, policy, status, host, policy_sha256, started_at, plain_bytes, "
            "stored_bytes) VALUES ('20260101T000000Z-aaaaaa', 'p', 'complete', 'h', :h, "
            "'2026-01-01 00:00:00', 3, 5)"
        ), {"h": "0" * 64})  # fmt: skip
        connection.execute(text(
            "INSERT INTO artifacts (snapshot_id, source, source_type, file, format, plain_bytes, "
            "stored_bytes, plain_sha256, stored_sha256, facts) VALUES ('20260101T000000Z-aaaaaa', 'db', "
            "'postgres', 'db.pgdump.zst.age', 'pgdump', 3, 5, :plain, :stored, '{}')"
        ), {"plain": "a" * 64, "stored": "b" * 64})  # fmt: skip
    engine.dispose()
    catalog = Catalog.open(url)
    assert catalog.revision() == HEAD_REVISION
    with catalog.engine.connect() as connection:
        row = connection.execute(text("SELECT plain_digest, stored_sha256 FROM artifacts")).one()
    assert tuple(row) == ("sha256:" + "a" * 64, "b" * 64)
