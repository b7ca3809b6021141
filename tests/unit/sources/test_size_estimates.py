"""estimate_size of the sqlite and files sources against the streams their dumps really make.

The estimate is the total of a progress bar counting the *plain* bytes of the dump, so it is
compared with the length of `dump().stream`.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from backupctl.policy.schema import FilesSource, SqliteSource
from backupctl.sources import files as files_module
from backupctl.sources.base import Source, build_source
from tests.fixtures.core import streamed_bytes


# ---------------------------------------------------------------------------------- sqlite
def sqlite_source(path: Path) -> Source:
    return build_source(SqliteSource(name="app-db", type="sqlite", path=str(path)))


def test_sqlite_estimate_is_the_size_of_the_copy_wal_included(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA wal_autocheckpoint=0")  # keep the new pages in the WAL
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany("INSERT INTO events (body) VALUES (?)", [("x" * 500,)] * 2000)
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > path.stat().st_size  # most of the data is in the WAL only
        source = sqlite_source(path)
        estimate = source.estimate_size()
        assert estimate == streamed_bytes(source)
        assert estimate is not None and estimate > 1_000_000


def test_sqlite_estimate_falls_back_to_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.sqlite"
    path.write_bytes(b"garbage" * 1000)
    assert sqlite_source(path).estimate_size() == 7000


def test_sqlite_estimate_of_a_missing_database_is_none(tmp_path: Path) -> None:
    assert sqlite_source(tmp_path / "missing.sqlite").estimate_size() is None
    assert not (tmp_path / "missing.sqlite").exists()  # looking did not create it


# ----------------------------------------------------------------------------------- files
def files_source(root: Path, exclude: list[str] | None = None) -> Source:
    return build_source(FilesSource(name="uploads", type="files", path=str(root), exclude=exclude or []))


def make_tree(root: Path) -> None:
    (root / "products").mkdir(parents=True)
    for index in range(40):
        (root / "products" / f"p{index:03d}.jpg").write_bytes(os.urandom(700 + index * 997))
    (root / "invoices" / "2026" / "q1").mkdir(parents=True)
    (root / "invoices" / "2026" / "q1" / ("long-name-" * 12 + ".pdf")).write_bytes(b"%PDF" * 300)
    (root / "empty").write_bytes(b"")
    (root / "latest.jpg").symlink_to("products/p001.jpg")
    (root / "cache").mkdir()
    (root / "cache" / "big.tmp").write_bytes(bytes(5 << 20))


def test_files_estimate_matches_the_tar_stream(tmp_path: Path) -> None:
    make_tree(tmp_path / "uploads")
    source = files_source(tmp_path / "uploads", exclude=["cache/*"])
    estimate = source.estimate_size()
    assert estimate == streamed_bytes(source)


def test_files_estimate_honours_excludes(tmp_path: Path) -> None:
    make_tree(tmp_path / "uploads")
    everything = files_source(tmp_path / "uploads").estimate_size()
    without_cache = files_source(tmp_path / "uploads", exclude=["cache"]).estimate_size()
    assert everything is not None and without_cache is not None
    assert everything - without_cache >= 5 << 20


def test_files_estimate_gives_up_on_huge_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "uploads")
    monkeypatch.setattr(files_module, "ESTIMATE_ENTRY_LIMIT", 10)
    assert files_source(tmp_path / "uploads").estimate_size() is None


def test_files_estimate_of_a_missing_tree_is_none(tmp_path: Path) -> None:
    assert files_source(tmp_path / "nowhere").estimate_size() is None
