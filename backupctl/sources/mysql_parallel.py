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
import queue
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
# The options every client of a restore is started with (`backupctl restore`, drills), serial or
# parallel: bytes as they are, no table formatting, the dump's character set, rows up to 1 GiB.
CLIENT_OPTIONS = ["--binary-mode", "--batch", "--default-character-set=utf8mb4", "--max-allowed-packet=1G"]
# Section markers (comment lines of mariadb-dump --comments), recognised outside DELIMITER blocks.
_STRUCTURE = (b"-- Table structure for table ", b"-- Temporary table structure for view ")
_DATA = b"-- Dumping data for table "
_DEFERRED_FOR_GOOD = (
    b"-- Dumping events for database ",
    b"-- Dumping routines for database ",
    b"-- Final view structure for view ",
)
_DATA_END = b"UNLOCK TABLES;"
_DATA_HEAD_LINES = (b"--", b"LOCK TABLES ", b"/*!40000 ALTER TABLE ")
CHUNK_TARGET = 8 << 20  # data chunk size: small enough to balance N connections, large enough to stream

# Starts a client reading SQL from its stdin; the caller closes stdin and waits.
ClientStarter = Callable[[], "subprocess.Popen[bytes]"]


@dataclass
class SplitResult:
    """What the splitter found: the header, the spooled data chunks, the deferred file."""

    header: bytes
    chunks: list[Path] = field(default_factory=list)
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
        self._after_data = False  # between a data section's end and the next table's structure
        self._serial = False
        self._in_data = False  # inside a `-- Dumping data for table` section
        self._data_head = False  # ... before its first INSERT (LOCK TABLES, DISABLE KEYS)
        self._chunk: IO[bytes] | None = None
        self._chunk_path: Path | None = None
        self._chunk_bytes = 0
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
                if self._in_data and not self._data_head:
                    self._spool_statements(pending)
                else:
                    self._line(pending)
            self._close_chunk()
            if self._in_header:
                self._end_header()
        finally:
            for file in (self._chunk, self._deferred):
                if file is not None:
                    file.close()
        return self.result

    def _feed(self, data: bytes) -> bytes:
        """Process the whole lines of `data` (which starts at a line start); return the rest."""
        pos = 0
        while True:
            if self._in_data and not self._data_head:
                end = _data_end(data, pos)
                if end < 0:  # the section goes on: spool its whole lines, keep the partial one
                    last = data.rfind(b"\n", pos) + 1
                    if last > pos:
                        self._spool_statements(data[pos:last])
                        pos = last
                    return data[pos:]
                self._spool_statements(_without_enable_keys(data[pos : end - len(_DATA_END) - 1]))
                self._end_data()
                pos = end
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                return data[pos:]
            if self._in_data and data.startswith(b"INSERT", pos):
                self._data_head = False  # the rows start: bulk mode
                continue
            self._line(data[pos : newline + 1])
            pos = newline + 1

    def _line(self, line: bytes) -> None:
        stripped = line.rstrip(b"\r\n")
        if self._in_data and not self._serial:
            # A data section's head (LOCK TABLES, DISABLE KEYS, comments) is not needed: the
            # statements are spread over connections, and a table lock would serialise them.
            if stripped == _DATA_END:
                self._end_data()  # a table without rows
            elif stripped and not stripped.startswith(_DATA_HEAD_LINES):
                self._spool_statements(line)  # not expected there: kept, in dump order
            return
        if not self._program:
            if stripped.startswith(b"DELIMITER ;;"):
                self._program = True
            elif self._in_header and stripped.startswith((*_STRUCTURE, _DATA, *_DEFERRED_FOR_GOOD)):
                self._end_header()
            if not self._in_header and not self._serial:
                if stripped.startswith(_DEFERRED_FOR_GOOD):
                    self._deferred_for_good = True
                elif not self._deferred_for_good and stripped.startswith(_DATA):
                    self._in_data, self._data_head, self._after_data = True, True, False
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

    # ------------------------------------------------------------------ writing
    def _end_header(self) -> None:
        self._in_header = False
        self.result.header = bytes(self._header)
        self.structure.write(self.result.header)

    def _end_data(self) -> None:
        self._in_data, self._data_head, self._after_data = False, False, True

    def _spool_statements(self, data: bytes) -> None:
        """Append whole lines of INSERT statements to the current chunk file; start a new chunk
        at a statement end once the current one holds CHUNK_TARGET bytes."""
        if self._serial:
            self.structure.write(data)
            return
        if self._chunk is None:
            self._open_chunk()
        assert self._chunk is not None
        if self._chunk_bytes + len(data) >= CHUNK_TARGET:
            cut = data.rfind(b";\n") + 2  # 1 when the block ends no statement
            if cut > 1:
                self._chunk.write(data[:cut])
                self._close_chunk()
                data = data[cut:]
                if not data:
                    return
                self._open_chunk()
                assert self._chunk is not None
        self._chunk.write(data)
        self._chunk_bytes += len(data)
        self._since_check += len(data)
        if self._since_check >= FREE_CHECK_EVERY:
            self._since_check = 0
            self._check_room()

    def _open_chunk(self) -> None:
        self._chunk_path = self.directory / f"data-{len(self.result.chunks):06d}.sql"
        self._chunk = _private_file(self._chunk_path)
        self._chunk_bytes = 0

    def _close_chunk(self) -> None:
        if self._chunk is None or self._chunk_path is None:
            return
        self._chunk.close()
        self.result.chunks.append(self._chunk_path)
        self._chunk, self._chunk_path = None, None

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
        # The open chunk may end inside a statement that the stream continues: it goes first.
        assert self._chunk is not None and self._chunk_path is not None
        self._chunk.close()
        with open(self._chunk_path, "rb") as partial:
            while block := partial.read(CHUNK):
                self.structure.write(block)
        self._chunk_path.unlink()
        self._chunk, self._chunk_path = None, None


def _private_file(path: Path) -> IO[bytes]:
    """A new 0600 file for writing (closed by the splitter)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _without_enable_keys(block: bytes) -> bytes:
    """`block` without a trailing `/*!40000 ALTER TABLE ... ENABLE KEYS */;` line."""
    body = block[:-1] if block.endswith(b"\n") else block
    start = body.rfind(b"\n") + 1
    return block[:start] if body.startswith(b"/*!40000 ALTER TABLE ", start) else block


def _data_end(data: bytes, pos: int) -> int:
    """End (exclusive) of the `UNLOCK TABLES;` line ending a data section at or after the line
    starting at `pos`; -1 when `data` does not hold it yet."""
    line = _DATA_END + b"\n"
    if data.startswith(line, pos):
        return pos + len(line)
    found = data.find(b"\n" + line, pos)
    return -1 if found < 0 else found + 1 + len(line)


def load_chunks(chunks: Sequence[Path], header: bytes, jobs: int, start: ClientStarter, label: str) -> None:
    """Load the spooled chunks over `jobs` connections, each taking the next chunk when done
    with its last (so one slow chunk does not hold up the others' share).

    Raises SourceError for the first connection that failed (all are waited for)."""
    waiting: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for path in chunks:
        waiting.put(path)
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            client = _Client(start, label)
            client.write(header)
            while not client.broken and not errors:
                try:
                    path = waiting.get_nowait()
                except queue.Empty:
                    break
                with open(path, "rb") as chunk:
                    while block := chunk.read(CHUNK):
                        client.write(block)
                path.unlink()  # free the space as soon as the chunk is sent
            client.finish("table data")
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=feed, daemon=True) for _ in range(max(1, min(jobs, len(chunks))))]
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
    load_chunks(result.chunks, result.header, jobs, start, label)
    if result.deferred is not None:
        deferred = _Client(start, label)
        deferred.write(result.header)
        with open(result.deferred, "rb") as file:
            while block := file.read(CHUNK):
                deferred.write(block)
        deferred.finish("triggers, views, routines and events")
    return result.serial_note
