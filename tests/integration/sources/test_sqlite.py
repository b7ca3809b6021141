"""SQLite source: online backup of a database another process keeps writing to."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

import pytest

from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import SqliteSource
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.sources.sqlite import SqliteBackupSource

# Inserts rows in small transactions until killed; prints "ready" once it has written.
WRITER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
n = 0
while True:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT INTO events (body) VALUES (?)", [("w" * 200,)] * 20)
    connection.execute("UPDATE counters SET value = value + 1")
    connection.execute("COMMIT")
    n += 1
    if n == 5:
        print("ready", flush=True)
"""


def make_source(path: Path) -> SqliteBackupSource:
    source = build_source(SqliteSource(name="app-db", type="sqlite", path=str(path)))
    assert isinstance(source, SqliteBackupSource)
    return source


def create_database(path: Path, journal_mode: str) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute('CREATE TABLE "odd ""name""" (x BLOB)')
        connection.execute("CREATE TABLE counters (value INTEGER)")
        connection.execute("INSERT INTO counters VALUES (0)")
        connection.executemany("INSERT INTO events (body) VALUES (?)", [("x" * 500,)] * 20000)
        connection.executemany('INSERT INTO "odd ""name""" VALUES (?)', [(b"\0\1",)] * 7)
        connection.commit()


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_backup_during_concurrent_writes_restores_consistently(tmp_path: Path, journal_mode: str) -> None:
    live = tmp_path / "live.db"
    create_database(live, journal_mode)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        source = make_source(live)
        with source.dump() as dump, open(tmp_path / "artifact.sqlite", "wb") as out:
            assert (dump.format, dump.extension) == ("sqlite3", "sqlite")
            shutil.copyfileobj(dump.stream, out)
            facts = dump.finish()
        time.sleep(0.1)  # let the writer go on after the copy
        assert writer.poll() is None, "the writer must still be running"
    finally:
        writer.kill()
        writer.wait()

    assert facts["row_counts"]["events"] > 20000
    assert facts["row_counts"]['odd "name"'] == 7
    assert facts["bytes"] == (tmp_path / "artifact.sqlite").stat().st_size
    assert facts["page_size"] > 0 and facts["sqlite_version"] == sqlite3.sqlite_version

    restored = tmp_path / "restored" / "app.db"
    restored.parent.mkdir()
    with open(tmp_path / "artifact.sqlite", "rb") as artifact:
        outcome = source.restore(artifact, RestoreRequest(to_file=restored))
    assert outcome.facts["row_counts"] == facts["row_counts"]
    assert source.compare(facts, outcome.facts) == []
    with closing(sqlite3.connect(restored)) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Every writer transaction adds 20 events and bumps the counter once: a torn copy shows.
        (counter,) = check.execute("SELECT value FROM counters").fetchone()
        assert facts["row_counts"]["events"] == 20000 + 20 * counter
    assert sorted(p.name for p in restored.parent.iterdir()) == ["app.db"]  # no temp files left


def test_missing_database_is_a_source_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(SourceError, match="does not exist"), make_source(missing).dump():
        pytest.fail("dump should not start")
    assert not missing.exists()


def test_restore_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    create_database(live, "delete")
    source = make_source(live)
    with source.dump() as dump:
        artifact = dump.stream.read()
        facts = dump.finish()
    with pytest.raises(ConfigError, match="already exists"), _stream(tmp_path, artifact) as stream:
        source.restore(stream, RestoreRequest(to_file=live))

    target = tmp_path / "other.db"
    target.write_bytes(b"old content")
    (tmp_path / "other.db-wal").write_bytes(b"stale wal of the replaced database")
    with _stream(tmp_path, artifact) as stream:
        outcome = source.restore(stream, RestoreRequest(to_file=target, force=True))
    assert outcome.facts["row_counts"] == facts["row_counts"]
    assert not (tmp_path / "other.db-wal").exists()


def test_restore_of_a_corrupt_stream_leaves_nothing_behind(tmp_path: Path) -> None:
    source = make_source(tmp_path / "unused.db")
    target = tmp_path / "out" / "app.db"
    target.parent.mkdir()
    garbage = b"SQLite format 3\0" + b"\xff" * 8192
    with (
        pytest.raises(SourceError, match="not a usable SQLite database"),
        _stream(tmp_path, garbage) as stream,
    ):
        source.restore(stream, RestoreRequest(to_file=target))
    assert list(target.parent.iterdir()) == []


def _stream(tmp_path: Path, data: bytes) -> BinaryIO:
    path = tmp_path / "stream.bin"
    path.write_bytes(data)
    return open(path, "rb")
