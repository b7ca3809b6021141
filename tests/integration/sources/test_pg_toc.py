"""The data positions of a piped pg_dump archive (sources/pg_toc.py), against real pg_dump output.

The reference is pg_dump itself: the same database dumped with `-f FILE` (seekable) gets its data
positions written by pg_dump; the piped dump with the patched head must be that file, byte for
byte, apart from the creation time in the header. Everything the module does not fully
understand must leave the archive alone (None).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from pathlib import Path

import pytest

from backupctl.sources.pg_toc import DataOffsets
from tests.fixtures.postgres import PgDatabase

# Header: magic 5, version 3, int size, offset size, format, compression int (5 bytes), then the
# creation time (7 ints of 5 bytes), which differs between two dumps.
TIME_FIELDS = slice(16, 16 + 7 * 5)


def pg_dump(database: PgDatabase, *options: str, to: Path | None = None) -> bytes:
    env = {**os.environ, "PGPASSWORD": database.password}
    argv = ["pg_dump", "--format=custom", *options, f"--dbname={database.url}"]
    if to is not None:
        subprocess.run([*argv, f"--file={to}"], env=env, check=True)
        return to.read_bytes()
    return subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE).stdout


def patched(archive: bytes, sizes: list[int] | None = None) -> bytes | None:
    """The archive with the patched head, fed in chunks of `sizes` (cycled), or None."""
    offsets = DataOffsets()
    position = 0
    for size in itertools.cycle(sizes or [1 << 20]):
        if position >= len(archive):
            break
        offsets.feed(archive[position : position + size])
        position += size
    head = offsets.patched_head()
    return None if head is None else head + archive[len(head) :]


def without_time(archive: bytes) -> bytes:
    return archive[: TIME_FIELDS.start] + archive[TIME_FIELDS.stop :]


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--inserts"],
        ["--column-inserts", "--rows-per-insert=7"],
        ["--data-only"],
        ["--table=public.customers"],
        ["--exclude-table-data=orders", "--no-owner"],
    ],
)
def test_patched_head_is_what_pg_dump_writes_to_a_file(
    pg_database: PgDatabase, tmp_path: Path, options: list[str]
) -> None:
    piped = pg_dump(pg_database, "--compress=0", *options)
    reference = pg_dump(pg_database, "--compress=0", *options, to=tmp_path / "file.pgdump")
    assert piped != reference  # the piped one has no data positions

    result = patched(piped)
    assert result is not None
    assert without_time(result) == without_time(reference)
    # Chunk boundaries anywhere (inside the TOC, a block header, an end marker) change nothing.
    assert patched(piped, [1, 7, 4096, 3, 65536, 2]) == result


def test_awkward_rows_and_a_parallel_restore_of_the_patched_spool(
    pg_database: PgDatabase, pg_empty_database: PgDatabase, tmp_path: Path
) -> None:
    # An empty table; a row of exactly 16 MiB + newline (its chunk length is 00 00 00 00 01 after
    # a block header whose dump id ends in zero bytes: a run of zeros that is not an end marker);
    # a row whose length is a multiple of 256.
    with pg_database.connect() as connection:
        connection.execute("CREATE TABLE empty (id int)")
        connection.execute("CREATE TABLE big (body text)")
        connection.execute("INSERT INTO big SELECT repeat('x', (1 << 24) - 1)")
        connection.execute("CREATE TABLE round (body text)")
        connection.execute("INSERT INTO round SELECT repeat('y', 255)")
    piped = pg_dump(pg_database, "--compress=0")
    reference = pg_dump(pg_database, "--compress=0", to=tmp_path / "file.pgdump")
    result = patched(piped)
    assert result is not None and without_time(result) == without_time(reference)

    spool = tmp_path / "spool.pgdump"
    spool.write_bytes(result)
    env = {**os.environ, "PGPASSWORD": pg_empty_database.password}
    subprocess.run(
        ["pg_restore", "--exit-on-error", "--jobs=2", f"--dbname={pg_empty_database.url}", str(spool)],
        env=env, check=True,
    )  # fmt: skip
    query = "SELECT md5(string_agg(body, ',' ORDER BY body)), count(*) FROM big"
    with pg_database.connect() as source, pg_empty_database.connect() as restored:
        for table in ("customers", "orders", '"Order Items"', "archive.attachments", "events"):
            count = f"SELECT count(*) FROM {table}"
            assert restored.execute(count).fetchone() == source.execute(count).fetchone()  # type: ignore[arg-type]
        assert restored.execute(query).fetchone() == source.execute(query).fetchone()
        assert restored.execute("SELECT length(body) FROM round").fetchone() == (255,)
        assert restored.execute("SELECT count(*) FROM empty").fetchone() == (0,)


def test_archives_it_does_not_fully_understand_are_left_alone(
    pg_database: PgDatabase, tmp_path: Path
) -> None:
    piped = pg_dump(pg_database, "--compress=0")
    head = DataOffsets()
    head.feed(piped)
    good = head.patched_head()
    assert good is not None
    toc_end = len(good)

    declined = {
        "compressed": pg_dump(pg_database, "--compress=5"),
        "written to a file": pg_dump(pg_database, "--compress=0", to=tmp_path / "file.pgdump"),
        "schema only: no data": pg_dump(pg_database, "--compress=0", "--schema-only"),
        "cut inside the TOC": piped[: toc_end // 2],
        "cut inside the data": piped[: (toc_end + len(piped)) // 2],
        "cut before the last end marker": piped[:-1],
        "bytes after the last block": piped + b"\x01",
        "a data entry that is not TABLE DATA": piped.replace(b"TABLE DATA", b"TABLE DATB", 1),
        "not an archive": b"-- PostgreSQL database dump\n" + piped,
        "a broken integer sign in the TOC": piped[:16] + b"\x07" + piped[17:],
        "empty": b"",
    }
    for why, archive in declined.items():
        assert patched(archive) is None, why


def test_large_objects_are_left_alone(pg_database: PgDatabase) -> None:
    with pg_database.connect() as connection:
        connection.execute("SELECT lo_from_bytea(0, '\\x00010200'::bytea)")
    piped = pg_dump(pg_database, "--compress=0")
    assert b"BLOBS" in piped or b"LARGE OBJECTS" in piped
    assert patched(piped) is None


def test_a_block_out_of_the_tocs_order_is_left_alone(pg_database: PgDatabase) -> None:
    piped = pg_dump(pg_database, "--compress=0")
    offsets = DataOffsets()
    offsets.feed(piped)
    head = offsets.patched_head()
    assert head is not None
    # Swap the first two data blocks: every byte is still there, the order is not the TOC's.
    blocks = _data_blocks(piped, len(head))
    (first, between), (_, after) = blocks[0], blocks[1]
    swapped = piped[:first] + piped[between:after] + piped[first:between] + piped[after:]
    assert hashlib.sha256(swapped).digest() != hashlib.sha256(piped).digest()
    assert patched(swapped) is None


def _data_blocks(archive: bytes, start: int) -> list[tuple[int, int]]:
    """(start, end) of each data block, found the slow way: walking every chunk length."""
    blocks = []
    position = start
    while position < len(archive):
        begin = position
        position += 1 + 5  # block type, dump id
        while True:
            length = int.from_bytes(archive[position + 1 : position + 5], "little")
            position += 5 + length
            if length == 0:
                break
        blocks.append((begin, position))
    return blocks
