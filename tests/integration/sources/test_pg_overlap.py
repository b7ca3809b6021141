"""The overlapped parallel restore (sources/pg_overlap.py) against real pg_dump, pg_restore and
PostgreSQL 15.

The reference is pg_restore itself: the same archive restored by a plain `pg_restore` into a
second database must give the same database, checked as the plain-text `pg_dump` of both (schema,
indexes, constraints, triggers, grants, sequence values and every row).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.errors import SourceError
from backupctl.local_cluster.postgres import LocalPostgres
from backupctl.sources import pg_overlap
from backupctl.sources.pg_overlap import HostSite, peek_toc, restore_overlapped
from backupctl.sources.pg_toc import SECTION_DATA, SECTION_POST_DATA, SECTION_PRE_DATA, DataOffsets
from tests.fixtures.postgres import PgDatabase, new_database

EXTRA_SQL = """
CREATE SEQUENCE invoice_numbers START 1000;
SELECT setval('invoice_numbers', 4242);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE id > 5;
CREATE MATERIALIZED VIEW order_count AS SELECT count(*) AS n FROM orders;
COMMENT ON TABLE customers IS 'people who buy';
CREATE INDEX customers_lower_name ON customers (lower(name));
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE empty_table (id int PRIMARY KEY);
"""


SPECIAL = {"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"}


def pg_dump(database: PgDatabase, *options: str) -> bytes:
    env = {**os.environ, "PGPASSWORD": database.password}
    argv = ["pg_dump", "--format=custom", "--compress=0", *options, f"--dbname={database.url}"]
    return subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE).stdout


def plain_dump(database: PgDatabase) -> str:
    env = {**os.environ, "PGPASSWORD": database.password}
    argv = ["pg_dump", "--format=plain", f"--dbname={database.url}"]
    text = subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    # \restrict and \unrestrict carry a random key per dump (pg_dump 15.14 and later)
    keys = ("\\restrict", "\\unrestrict")
    return "\n".join(line for line in text.splitlines() if not line.startswith(keys))


class Trickle(io.RawIOBase):
    """`data` in reads of at most `size` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = memoryview(data)
        self._size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        count = min(self._size, len(self._data) - self.position if size < 0 else size)
        chunk = bytes(self._data[self.position : self.position + count])
        self.position += len(chunk)
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.fixture
def shop(pg_database: PgDatabase) -> PgDatabase:
    with pg_database.connect() as connection:
        connection.execute(EXTRA_SQL)  # type: ignore[arg-type]
    return pg_database


@pytest.fixture
def reference(postgres_cluster: LocalPostgres, pg_role: tuple[str, str]) -> Iterator[PgDatabase]:
    database = new_database(postgres_cluster, pg_role, prefix="reference")
    yield database
    postgres_cluster.drop_database(database.name)


def site_for(database: PgDatabase, directory: Path) -> HostSite:
    argv = ["pg_restore", "--exit-on-error", f"--dbname={database.url}"]
    return HostSite(argv, {"PGPASSWORD": database.password}, directory)


def test_sections_are_the_ones_pg_restore_uses(shop: PgDatabase, tmp_path: Path) -> None:
    archive = pg_dump(shop)
    (tmp_path / "a.pgdump").write_bytes(archive)
    offsets = DataOffsets()
    offsets.feed(archive)
    toc = offsets.toc
    assert toc is not None
    sections = {SECTION_PRE_DATA: "pre-data", SECTION_DATA: "data", SECTION_POST_DATA: "post-data"}
    for section, name in sections.items():
        listed = subprocess.run(["pg_restore", "-l", f"--section={name}", str(tmp_path / "a.pgdump")],
                                check=True, stdout=subprocess.PIPE, text=True).stdout  # fmt: skip
        ids = {int(line.split(";")[0]) for line in listed.splitlines() if line and not line.startswith(";")}
        # pg_restore applies these itself in every run (DATABASE only with --create): never listed.
        ours = {e.dump_id for e in toc.entries if e.section == section and e.desc not in SPECIAL}
        assert ids == ours, name
    prefix, plan = peek_toc(io.BytesIO(archive))  # type: ignore[arg-type]
    assert plan is not None and archive.startswith(prefix) and plan.head == archive[: toc.end]
    assert "SEQUENCE SET" in {e.desc for e in toc.entries if e.dump_id in plan.other_data}
    assert plan.tables == [e.dump_id for e in toc.entries if e.desc == "TABLE DATA"]
    # Indexes and keys may be built once their table is loaded; foreign keys, triggers and the
    # materialized view's data wait for the post-data section.
    kinds = {e.dump_id: e.desc for e in toc.entries}
    assert {kinds[dump_id] for dump_id in plan.early} == {"INDEX", "CONSTRAINT"}
    assert {kinds[dump_id] for dump_id in plan.post_data} >= {
        "INDEX", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "MATERIALIZED VIEW DATA"}
    tables = {e.dump_id: e for e in toc.entries if e.desc == "TABLE DATA"}
    assert all(needs <= set(tables) for needs in plan.early.values()) and any(plan.early.values())


@pytest.mark.parametrize("job_bytes", [1, 1 << 30], ids=["one-table-per-job", "every-table-in-one-job"])
def test_the_restored_database_is_pg_restores(
    shop: PgDatabase, pg_empty_database: PgDatabase, reference: PgDatabase, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, job_bytes: int, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    archive = pg_dump(shop)
    (tmp_path / "a.pgdump").write_bytes(archive)
    env = {**os.environ, "PGPASSWORD": reference.password}
    subprocess.run(["pg_restore", "--exit-on-error", f"--dbname={reference.url}", str(tmp_path / "a.pgdump")],
                   env=env, check=True)  # fmt: skip

    monkeypatch.setattr(pg_overlap, "JOB_BYTES", job_bytes)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    # Small reads: tables start loading while later ones have not arrived.
    stream = Trickle(archive, 4096)
    with caplog.at_level(logging.DEBUG, logger="backupctl.sources.pg_overlap"):
        replay = restore_overlapped(stream, site_for(pg_empty_database, spool_dir), 2, spool_dir, "shop")  # type: ignore[arg-type]
    assert replay is None
    assert "overlapped restore of shop (2 jobs)" in caplog.text
    assert plain_dump(pg_empty_database) == plain_dump(reference)
    assert list(spool_dir.iterdir()) == []  # spool, TOC and list files removed


def test_an_archive_it_cannot_load_that_way_is_handed_back_whole(shop: PgDatabase, tmp_path: Path) -> None:
    site = site_for(shop, tmp_path)
    for options in (["--compress=5"], ["--schema-only"]):
        archive = pg_dump(shop, *options)
        replay = restore_overlapped(io.BytesIO(archive), site, 2, tmp_path, "shop")  # type: ignore[arg-type]
        assert replay is not None and replay.read() == archive, options
    assert list(tmp_path.iterdir()) == []


def test_a_failing_job_stops_the_restore_with_its_error_and_leaves_nothing(
    shop: PgDatabase, pg_empty_database: PgDatabase, tmp_path: Path
) -> None:
    with pg_empty_database.connect() as connection:  # pre-data's CREATE TABLE orders fails
        connection.execute("CREATE TABLE orders (id int)")
    archive = pg_dump(shop)
    site = site_for(pg_empty_database, tmp_path)
    with pytest.raises(SourceError, match=r'pre-data: pg_restore exited with status 1: .*"orders" already'):
        restore_overlapped(Trickle(archive, 1 << 16), site, 2, tmp_path, "shop")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert not _pg_restores()


def test_a_dump_cut_inside_a_table_is_an_error(
    shop: PgDatabase, pg_empty_database: PgDatabase, tmp_path: Path
) -> None:
    archive = pg_dump(shop)
    site = site_for(pg_empty_database, tmp_path)
    with pytest.raises(SourceError, match="ended inside a table's data"):
        restore_overlapped(io.BytesIO(archive[:-3]), site, 2, tmp_path, "shop")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert not _pg_restores()


def test_a_reading_error_stops_every_job(
    shop: PgDatabase, pg_empty_database: PgDatabase, tmp_path: Path
) -> None:
    archive = pg_dump(shop)

    class Broken(Trickle):
        def read(self, size: int = -1) -> bytes:  # type: ignore[override]
            if self.position > len(archive) // 2:
                raise OSError("decryption failed")
            return super().read(size)

    site = site_for(pg_empty_database, tmp_path)
    with pytest.raises(OSError, match="decryption failed"):
        restore_overlapped(Broken(archive, 1 << 12), site, 2, tmp_path, "shop")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert not _pg_restores()
    assert threading.active_count() < 10


def _pg_restores() -> list[str]:
    """pg_restore processes that are children of this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == "pg_restore" and int(rest[1]) == os.getpid() and rest[0] != "Z":
            found.append(entry)
    return found


def test_free_space_running_out_while_spooling_stops_the_restore_and_says_so(
    shop: PgDatabase, pg_empty_database: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = pg_dump(shop)
    monkeypatch.setattr(pg_overlap, "FREE_CHECK_EVERY", 1)  # statvfs after every chunk
    monkeypatch.setattr(pg_overlap, "reserve_bytes", lambda directory: 1 << 62)  # never enough
    site = site_for(pg_empty_database, tmp_path)
    with pytest.raises(SourceError, match=r"free space on .* fell to .* while spooling .*SPOOL_DIR"):
        restore_overlapped(Trickle(archive, 1 << 12), site, 2, tmp_path, "shop")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert not _pg_restores()
