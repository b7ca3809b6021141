"""A fresh SQLite catalog is created from `catalog.sqlite_schema`, without Alembic: exactly the
schema the migrations create, and Alembic stays unimported (its ~11 MiB were most of a first
backup's excess peak RSS, issue #17)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from backupctl.catalog import sqlite_schema
from backupctl.catalog.store import HEAD_REVISION, MIGRATIONS, Catalog


def _master(path: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        return [tuple(row) for row in rows]


def _migrated(path: Path) -> Path:
    engine = create_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()
    return path


def test_statements_create_what_the_migrations_create(tmp_path: Path) -> None:
    by_alembic = _migrated(tmp_path / "alembic.sqlite")
    fresh = tmp_path / "fresh.sqlite"
    catalog = Catalog.open(f"sqlite:///{fresh}")
    catalog.engine.dispose()
    with sqlite3.connect(by_alembic) as connection:
        current = [row[0] for row in connection.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
        )]  # fmt: skip
    assert list(sqlite_schema.STATEMENTS) == current, (
        "catalog/sqlite_schema.py is stale (a new migration?): its STATEMENTS must be\n"
        + "\n".join(repr(statement) for statement in current)
    )
    assert _master(fresh) == _master(by_alembic)
    with sqlite3.connect(fresh) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    assert sqlite_schema.REVISION == HEAD_REVISION


def test_a_fresh_catalog_opens_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    for snapshot_id in ("20260101T000000Z-aaaaaa", "20260101T000001Z-bbbbbb"):  # created, then current
        probe = (
            "import sys, datetime\n"
            "from backupctl.catalog.store import Catalog\n"
            f"catalog = Catalog.open({url!r})\n"
            f"catalog.begin_snapshot({snapshot_id!r}, 'p', '0' * 64, datetime.datetime.now())\n"
            "print(catalog.revision(), sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        assert done.stdout.split() == [HEAD_REVISION, "[]"]


def test_a_file_with_tables_but_no_revision_goes_through_alembic(tmp_path: Path) -> None:
    """Anything already in the file (another program's table, a half-made catalog): the fast
    path steps aside and the migrations decide, as before."""
    path = tmp_path / "catalog.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE unrelated (x INTEGER)")
    catalog = Catalog.open(f"sqlite:///{path}")
    assert catalog.revision() == HEAD_REVISION
    catalog.engine.dispose()
    assert ("table", "unrelated", "unrelated", "CREATE TABLE unrelated (x INTEGER)") in _master(path)


def test_first_commands_at_once_create_it_once(tmp_path: Path) -> None:
    """Four processes open the same new catalog file together: one creates it (BEGIN IMMEDIATE),
    the others find it current; all can record a run."""
    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    probe = (
        "import sys, datetime\n"
        "from backupctl.catalog.store import Catalog\n"
        f"catalog = Catalog.open({url!r})\n"
        "catalog.begin_snapshot(sys.argv[1], 'p', '0' * 64, datetime.datetime.now())\n"
        "print(catalog.revision())\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", probe, f"20260101T00000{n}Z-aaaaaa"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]  # fmt: skip
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == [HEAD_REVISION] * 4
    with sqlite3.connect(tmp_path / "catalog.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM snapshots").fetchone() == (4,)
        assert connection.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
