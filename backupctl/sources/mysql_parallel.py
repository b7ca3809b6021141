"""Parallel restore of a mariadb-dump stream: structure, then table data over N connections.

A dump of one database is one SQL stream that a single `mariadb` client replays statement by
statement: one server thread inserts every row. mariadb-dump writes it in sections we can tell
apart by their comment lines (`--comments` is part of the dump options):

    header             SET @OLD_...=...; SET FOREIGN_KEY_CHECKS=0, UNIQUE_CHECKS=0, NAMES, TIME_ZONE
    per table          -- Table structure for table `t`      DROP/CREATE TABLE
                       -- Dumping data for table `t`         LOCK TABLES; INSERT ...; UNLOCK TABLES;
                       (then the table's triggers, in DELIMITER ;; blocks)
    views              -- Temporary table structure for view / -- Final view structure for view
    events, routines   -- Dumping events / routines for database
    trailer            SET ...=@OLD_...;  -- Dump completed

The splitter replays it in three phases, each connection starting with the header so that it has
the dump's session settings (character set, time zone, SQL mode, foreign key and unique checks
off):

1. *structure*: every CREATE TABLE and temporary view structure, streamed to one connection while
   the dump is read; each table's data section is spooled to its own private file instead;
2. *data*: the spooled tables, largest first, spread over `jobs` connections in parallel;
3. *deferred*: triggers, views, events, routines and the trailer, on one connection. Triggers
   must come after the data, or they would fire while it is loaded (mariadb-dump puts each table's
   triggers after its rows for the same reason).

Foreign key checks are off in every connection (the header), so tables load in any order, as they
do in a serial replay. If free space runs low while spooling, the splitter stops spooling: the
current table's spooled part and everything after it go to the structure connection in dump
order (a serial replay of the rest), and the tables spooled so far still load in phase 2 — the
restore completes, with a note.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from backupctl.core import runner
from backupctl.core.spool import FREE_CHECK_EVERY, reserve_bytes
from backupctl.errors import SourceError

CHUNK = 1 << 20
# Section markers (comment lines of mariadb-dump --comments), recognised outside DELIMITER blocks.
_STRUCTURE = (b"-- Table structure for table ", b"-- Temporary table structure for view ")
_DATA = b"-- Dumping data for table "
_DEFERRED_FOR_GOOD = (
    b"-- Dumping events for database ",
    b"-- Dumping routines for database ",
    b"-- Final view structure for view ",
)
_DATA_END = b"UNLOCK TABLES;"

# Starts a client reading SQL from its stdin; the caller closes stdin and waits.
ClientStarter = Callable[[], "subprocess.Popen[bytes]"]


@dataclass
class SplitResult:
    """What the splitter found: the header, the spooled tables, the deferred file."""

    header: bytes
    tables: list[Path] = field(default_factory=list)
    deferred: Path | None = None
    serial_note: str = ""  # why the rest of the dump went through the structure connection


class _Client:
    """One mariadb client fed from this process; remembers the first failure."""

    def __init__(self, start: ClientStarter, label: str) -> None:
        self.label = label
        self.process = start()
        assert self.process.stdin is not None and self.process.stderr is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stderr = runner.StderrTail(self.process.stderr)
        self.broken = False

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            self.broken = True  # the client stopped: its status and stderr say why

    def finish(self, what: str) -> None:
        """Close stdin, wait; raise SourceError naming `what` unless the client succeeded."""
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass
        try:
            status = self.process.wait()
        finally:
            runner.stop(self.process)
        if status != 0:
            raise SourceError(f"{self.label} ({what}) exited with status {status}: {self.stderr.text()}")
        self.stderr.join()


class DumpSplitter:
    """Reads a dump stream; see the module docstring for what goes where."""

    def __init__(self, directory: Path, structure: _Client) -> None:
        self.directory = directory
        self.structure = structure
        self.result = SplitResult(header=b"")
        self._header = bytearray()
        self._in_header = True
        self._program = False  # inside DELIMITER ;; ... DELIMITER ;
        self._deferred_for_good = False
        self._serial = False
        self._table: IO[bytes] | None = None
        self._table_path: Path | None = None
        self._deferred: IO[bytes] | None = None
        self._since_check = 0

    # ------------------------------------------------------------------ reading
    def split(self, stream: BinaryIO) -> SplitResult:
        """Consume the whole stream. The structure connection has received its part when this
        returns (its stdin is still open: the caller finishes it)."""
        pending = b""
        try:
            while chunk := stream.read(CHUNK):
                pending = self._feed(pending + chunk)
            if pending:  # a dump cut short: let the client report the incomplete statement
                if self._table is not None:
                    self._spool_data(pending)
                else:
                    self._line(pending)
            if self._table is not None:
                self._close_table()
            if self._in_header:
                self._end_header()
        finally:
            for file in (self._table, self._deferred):
                if file is not None:
                    file.close()
        return self.result

    def _feed(self, data: bytes) -> bytes:
        """Process the whole lines of `data` (which starts at a line start); return the rest."""
        pos = 0
        while True:
            if self._table is not None:
                end = _data_end(data, pos)
                if end < 0:  # the section goes on: spool its whole lines, keep the partial one
                    last = data.rfind(b"\n", pos) + 1
                    if last > pos:
                        self._spool_data(data[pos:last])
                        pos = last
                    return data[pos:]
                self._spool_data(data[pos:end])
                if self._table is not None:  # (None when spooling just stopped for lack of room)
                    self._close_table()
                pos = end
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                return data[pos:]
            self._line(data[pos : newline + 1])
            pos = newline + 1

    def _line(self, line: bytes) -> None:
        stripped = line.rstrip(b"\r\n")
        if not self._program:
            if stripped.startswith(b"DELIMITER ;;"):
                self._program = True
            elif self._in_header and stripped.startswith((*_STRUCTURE, _DATA, *_DEFERRED_FOR_GOOD)):
                self._end_header()
            if not self._in_header and not self._serial:
                if stripped.startswith(_DEFERRED_FOR_GOOD):
                    self._deferred_for_good = True
                elif not self._deferred_for_good and stripped.startswith(_DATA):
                    self._open_table()
                    self._spool_data(line)
                    return
                elif not self._deferred_for_good and stripped.startswith(_STRUCTURE):
                    self._after_data = False
        elif stripped.startswith(b"DELIMITER ;") and not stripped.startswith(b"DELIMITER ;;"):
            self._program = False
        if self._in_header:
            self._header += line
        elif self._serial or not (self._deferred_for_good or self._after_data):
            self.structure.write(line)
        else:
            self._write_deferred(line)

    _after_data = False

    # ------------------------------------------------------------------ writing
    def _end_header(self) -> None:
        self._in_header = False
        self.result.header = bytes(self._header)
        self.structure.write(self.result.header)

    def _open_table(self) -> None:
        self._table_path = self.directory / f"table-{len(self.result.tables):06d}.sql"
        self._table = _private_file(self._table_path)
        self._after_data = False

    def _close_table(self) -> None:
        assert self._table is not None and self._table_path is not None
        self._table.close()
        self.result.tables.append(self._table_path)
        self._table, self._table_path = None, None
        self._after_data = True

    def _spool_data(self, data: bytes) -> None:
        if self._serial:
            self.structure.write(data)
            return
        assert self._table is not None
        self._table.write(data)
        self._since_check += len(data)
        if self._since_check >= FREE_CHECK_EVERY:
            self._since_check = 0
            self._check_room()

    def _write_deferred(self, data: bytes) -> None:
        if self._deferred is None:
            self.result.deferred = self.directory / "deferred.sql"
            self._deferred = _private_file(self.result.deferred)
        self._deferred.write(data)

    def _check_room(self) -> None:
        free = shutil.disk_usage(self.directory).free
        if free >= reserve_bytes(self.directory):
            return
        self.result.serial_note = (
            f"free space on {self.directory} fell to {free / (1 << 30):.2f} GiB while spooling; "
            "the rest of the dump was replayed on one connection"
        )
        self._serial = True
        assert self._table is not None and self._table_path is not None
        self._table.close()
        with open(self._table_path, "rb") as partial:
            while block := partial.read(CHUNK):
                self.structure.write(block)
        self._table_path.unlink()
        self._table = None
        self._table_path = None


def _private_file(path: Path) -> IO[bytes]:
    """A new 0600 file for writing (closed by the splitter)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _data_end(data: bytes, pos: int) -> int:
    """End (exclusive) of the `UNLOCK TABLES;` line ending a data section at or after the line
    starting at `pos`; -1 when `data` does not hold it yet."""
    line = _DATA_END + b"\n"
    if data.startswith(line, pos):
        return pos + len(line)
    found = data.find(b"\n" + line, pos)
    return -1 if found < 0 else found + 1 + len(line)


def load_tables(tables: Sequence[Path], header: bytes, jobs: int, start: ClientStarter, label: str) -> None:
    """Load spooled table files over `jobs` connections, largest first (greedy balance).

    Raises SourceError for the first connection that failed (all are waited for)."""
    buckets: list[list[Path]] = [[] for _ in range(max(1, min(jobs, len(tables))))]
    loads = [0] * len(buckets)
    for path in sorted(tables, key=lambda p: p.stat().st_size, reverse=True):
        smallest = loads.index(min(loads))
        buckets[smallest].append(path)
        loads[smallest] += path.stat().st_size
    errors: list[BaseException] = []

    def feed(bucket: list[Path]) -> None:
        try:
            client = _Client(start, label)
            client.write(header)
            for path in bucket:
                with open(path, "rb") as table:
                    while block := table.read(CHUNK):
                        client.write(block)
                path.unlink()  # free the space as soon as the table is sent
            client.finish("table data")
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=feed, args=(bucket,), daemon=True) for bucket in buckets if bucket]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def restore_parallel(stream: BinaryIO, directory: Path, jobs: int, start: ClientStarter, label: str) -> str:
    """Run the three phases; return a note when part of the dump had to go serially ("" else).

    `directory` is a private spool directory the caller removes; `label` starts error messages
    ("mariadb restore of shop-db"). Raises SourceError."""
    structure = _Client(start, label)
    try:
        result = DumpSplitter(directory, structure).split(stream)
    except BaseException:
        runner.stop(structure.process)
        raise
    structure.finish("table structure")
    load_tables(result.tables, result.header, jobs, start, label)
    if result.deferred is not None:
        deferred = _Client(start, label)
        deferred.write(result.header)
        with open(result.deferred, "rb") as file:
            while block := file.read(CHUNK):
                deferred.write(block)
        deferred.finish("triggers, views, routines and events")
    return result.serial_note
