"""A parallel pg_restore that starts loading while the dump is still arriving.

`pg_restore --jobs N FILE` needs the whole archive in a file before its first worker starts: on
the 1 GiB shop database the decryption and spooling of the plain dump took ~2 s during which the
server did nothing (docs/benchmarks.md, issue #17). Here the dump is still spooled to a private
file, but the restore runs in pg_restore's own three sections and the data section is split:

1. as soon as the header and table of contents (TOC) have arrived: `pg_restore --section=pre-data`
   of a file holding just them (tables, types, functions: no data is needed);
2. the data, N jobs at a time: each job is a `pg_restore -L LIST` of one or more consecutive
   tables that reads the TOC and then exactly those tables' data blocks on its stdin, fed from the
   spool (`os.sendfile`) as soon as they are there; a table that is still arriving is fed as it
   arrives. The data-section entries without a data block (sequence values) are one more job,
   from the TOC file;
3. when every table is loaded: `pg_restore --section=post-data --jobs N` of the TOC file (indexes,
   constraints, triggers, ACLs: pg_restore's own parallel scheduler).

Which entry belongs to which section is pg_restore's rule (`sources/pg_toc.py`: an entry without
a section joins the section before it), and within each section pg_restore itself decides what
to run; the only thing decided here is which tables' data go to which job. Data blocks are found
by `DataOffsets` (uncompressed archives whose blocks follow the TOC's order, as pg_dump writes
them); for any other archive `peek_toc` answers None and the caller restores as before.

Where pg_restore runs is a `PgRestoreSite`: this host, or a staging container through
`docker exec` (staging/docker.py). The spool is on this host in either case, private (0600 in a
0700 directory), checked for room first and removed afterwards (core/spool.py). A job that fails
stops every other job; the restore then raises SourceError with the failing job's stderr tail.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from backupctl.core import runner
from backupctl.core.spool import FREE_CHECK_EVERY, concatenated, private_spool, reserve_bytes
from backupctl.errors import SourceError
from backupctl.sources.pg_toc import (
    HEAD_LIMIT,
    SECTION_DATA,
    SECTION_POST_DATA,
    SECTION_PRE_DATA,
    DataOffsets,
    TocEntry,
)

log = logging.getLogger("backupctl.sources.pg_overlap")

CHUNK = 1 << 20
# A job takes consecutive tables until their data reaches this size: thousands of small tables
# must not mean thousands of pg_restore processes, and one job must not take everything spooled.
JOB_BYTES = 32 << 20
SENDFILE_BYTES = 8 << 20  # per sendfile call: a job stops promptly when another one fails

Phase = Literal["pre-data", "data", "post-data"]


class PgRestoreSite(Protocol):
    """Where pg_restore runs: this host or a staging container."""

    def put_toc(self, head: bytes) -> str:
        """Write the archive's header and TOC into a private file at the site; its path there."""
        ...

    def start(
        self, phase: Phase, args: list[str], listing: list[int] | None, feed: bool
    ) -> subprocess.Popen[bytes]:
        """Start pg_restore with the restore's connection and options for `phase`, plus `args`;
        with `listing`, `-L` a list file of those dump ids (written at the site); `feed`: its
        archive comes on stdin (a pipe), else stdin is /dev/null. stderr is a pipe."""
        ...

    def cleanup(self) -> None:
        """Remove what `put_toc` and `start` wrote at the site."""
        ...


# Post-data entries that may run as soon as the data of the tables they depend on is loaded,
# while other tables still load (pg_restore --jobs does the same): building an index or adding a
# primary key or unique constraint touches that table only. Everything else in post-data (foreign
# keys, triggers, materialized view data, grants, comments...) waits for the post-data section.
EARLY_KINDS = frozenset({"INDEX", "CONSTRAINT"})
# Entries pg_restore applies in every run and never lists (DATABASE only with --create).
ALWAYS = frozenset({"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"})


@dataclass(frozen=True)
class TocPlan:
    """What the restore needs from the archive's TOC."""

    head: bytes  # header + TOC as pg_dump wrote them
    tables: list[int]  # TABLE DATA dump ids, in the order of their data blocks
    other_data: list[int]  # data-section entries without a data block (SEQUENCE SET, ...)
    post_data: list[int] = field(default_factory=list)  # every post-data entry, in TOC order
    # post-data entries that may run early -> the TABLE DATA ids they wait for
    early: dict[int, frozenset[int]] = field(default_factory=dict)


def peek_toc(stream: BinaryIO) -> tuple[bytes, TocPlan | None]:
    """Read the start of `stream` until its TOC is parsed: (the bytes read, the plan), the plan
    None when the archive is not one this module restores (then the caller replays the bytes)."""
    offsets = DataOffsets()
    prefix = bytearray()
    while offsets.toc is None and not offsets.failed and len(prefix) <= HEAD_LIMIT:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        prefix += chunk
        offsets.feed(chunk)
    toc = offsets.toc
    if toc is None or offsets.failed or not toc.order:
        return bytes(prefix), None
    blocks = set(toc.order)
    plan = TocPlan(
        head=offsets.head,
        tables=list(toc.order),
        other_data=[e.dump_id for e in toc.entries if e.section == SECTION_DATA and e.dump_id not in blocks],
        post_data=[e.dump_id for e in toc.entries if e.section == SECTION_POST_DATA and e.desc not in ALWAYS],
        early=_early_entries(toc.entries, blocks),
    )
    return bytes(prefix), plan


def _early_entries(entries: list[TocEntry], blocks: set[int]) -> dict[int, frozenset[int]]:
    """The post-data entries of EARLY_KINDS whose every dependency is in pre-data, each with the
    TABLE DATA entries of the tables among those dependencies (a TABLE DATA entry's one
    dependency is its TABLE: pg_backup_archiver.c)."""
    section = {entry.dump_id: entry.section for entry in entries}
    data_of = {entry.deps[0]: entry.dump_id for entry in entries if entry.dump_id in blocks and entry.deps}
    early: dict[int, frozenset[int]] = {}
    for entry in entries:
        if entry.section != SECTION_POST_DATA or entry.desc not in EARLY_KINDS:
            continue
        if all(section.get(dependency) == SECTION_PRE_DATA for dependency in entry.deps):
            early[entry.dump_id] = frozenset(data_of[d] for d in entry.deps if d in data_of)
    return early


@dataclass
class _Job:
    what: str
    process: subprocess.Popen[bytes]
    tail: runner.StderrTail
    ids: list[int] = field(default_factory=list)  # TABLE DATA dump ids fed on stdin, consecutive
    start: int = 0  # spool position of the first one's block


@dataclass
class _State:
    written: int = 0
    eof: bool = False
    starts: dict[int, int] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    error: str = ""
    running: list[_Job] = field(default_factory=list)
    claimed: int = 0  # slots taken by jobs being started


class OverlappedRestore:
    """Restore one archive (see the module docstring); `run` from the thread that reads it."""

    def __init__(
        self, site: PgRestoreSite, jobs: int, spool_dir: Path, label: str,
        after_data: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self._after_data = after_data
        self._site = site
        self._jobs = max(1, jobs)
        self._spool_dir = spool_dir
        self._label = label
        self._state = _State()
        self._cond = threading.Condition()
        self._t0 = time.monotonic()
        self._timings: dict[str, float] = {}
        self._loaded: set[int] = set()  # TABLE DATA ids whose job ended well

    # ---------------------------------------------------------------- the reading thread
    def run(self, plan: TocPlan, prefix: bytes, rest: BinaryIO) -> None:
        """Spool `prefix` + `rest` while the jobs restore it. Raises SourceError."""
        self._t0 = time.monotonic()
        offsets = DataOffsets(listener=self)
        with private_spool(self._spool_dir, suffix=".pgdump") as spool:
            reader = os.open(spool.path, os.O_RDONLY)
            worker = threading.Thread(
                target=self._orchestrate, args=(plan, reader), name="pg-restore-overlap", daemon=True
            )
            worker.start()
            try:
                self._fill(spool.file, spool.path.parent, offsets, prefix, rest)
            except BaseException as error:
                self._abort(f"reading the dump failed: {error}")
                raise
            finally:
                with self._cond:
                    self._state.eof = True
                    self._cond.notify_all()
                worker.join()
                os.close(reader)
        if self._state.error:
            raise SourceError(f"pg_restore of {self._label} failed: {self._state.error}")
        log.debug(
            "overlapped restore of %s (%d jobs): %s", self._label, self._jobs,
            ", ".join(f"{name} at {at:.2f}s" for name, at in self._timings.items()),
        )  # fmt: skip

    def _fill(
        self, file: BinaryIO, directory: Path, offsets: DataOffsets, prefix: bytes, rest: BinaryIO
    ) -> None:
        reserve = reserve_bytes(directory)
        since_check = 0
        chunk = prefix
        while chunk:
            file.write(chunk)
            file.flush()  # what `written` counts must be in the file for sendfile
            offsets.feed(chunk)
            since_check += len(chunk)
            with self._cond:
                self._state.written += len(chunk)
                self._cond.notify_all()
                if self._state.error:
                    return
            if offsets.failed:
                self._abort(
                    "the dump's data blocks do not follow its table of contents "
                    "(restore it with --jobs 1, which reads it as a stream)"
                )
                return
            if since_check >= FREE_CHECK_EVERY:
                since_check = 0
                free = shutil.disk_usage(directory).free
                if free < reserve:
                    self._abort(
                        f"free space on {directory} fell to {free / (1 << 30):.2f} GiB while spooling "
                        "the dump; "
                        "the database holds a partial restore: drop it and restore again with "
                        "BACKUPCTL_SPOOL_DIR on a larger file system, or with --jobs 1"
                    )
                    return
            chunk = rest.read(CHUNK)
        self._mark("spooled")
        if not offsets.complete:
            self._abort("the dump ended inside a table's data, or did not end after the last table")

    # listener of DataOffsets (called in the reading thread, inside offsets.feed)
    def block_started(self, dump_id: int, position: int) -> None:
        with self._cond:
            self._state.starts[dump_id] = position
            self._cond.notify_all()

    def block_ended(self, dump_id: int, position: int) -> None:
        with self._cond:
            self._state.ends[dump_id] = position
            self._cond.notify_all()

    # ---------------------------------------------------------------- the orchestrating thread
    def _orchestrate(self, plan: TocPlan, reader: int) -> None:
        try:
            toc_path = self._site.put_toc(plan.head)
            self._wait(self._start("pre-data", "pre-data", ["--section=pre-data", toc_path], None))
            self._mark("pre-data done")
            threads: list[threading.Thread] = []
            if plan.other_data and self._claim():
                job = self._start("data", "sequence values", [toc_path], plan.other_data)
                threads.append(self._in_thread(lambda job=job: self._wait(job)))  # type: ignore[misc]
            unassigned = list(plan.tables)
            early = dict(plan.early)
            done_early: set[int] = set()
            while work := self._next_work(unassigned, early):
                kind, ids = work
                if kind == "early":
                    if not done_early:
                        self._mark("early post-data")
                    done_early.update(ids)
                    job = self._start("data", f"indexes of loaded tables ({_ids(ids)})", [toc_path], ids)
                    threads.append(self._in_thread(lambda job=job: self._wait(job)))  # type: ignore[misc]
                    continue
                job = self._start("data", f"data of TOC entries {_ids(ids)}", [], ids, feed=True)
                job.ids, job.start = ids, self._state.starts[ids[0]]
                threads.append(self._in_thread(lambda job=job: self._feed_and_wait(job, plan.head, reader)))  # type: ignore[misc]
            for thread in threads:
                thread.join()
            self._mark("data done")
            if self._failed():
                return
            # What only needs the data (the row counts) runs beside post-data's index builds.
            beside = self._in_thread(self._run_after_data) if self._after_data is not None else None
            if self._claim(every=True):
                if done_early:
                    rest = [dump_id for dump_id in plan.post_data if dump_id not in done_early]
                    post = self._start("post-data", "post-data", [f"--jobs={self._jobs}", toc_path], rest)
                else:
                    every = ["--section=post-data", f"--jobs={self._jobs}", toc_path]
                    post = self._start("post-data", "post-data", every, None)
                self._wait(post)
                self._mark("post-data done")
            if beside is not None:
                beside.join()
        except BaseException as error:  # reported by run(), never lost in the thread
            self._abort(str(error) or type(error).__name__)

    def _next_work(
        self, unassigned: list[int], early: dict[int, frozenset[int]]
    ) -> tuple[Literal["data", "early"], list[int]] | None:
        """Wait for a free slot and something to run in it; take it (removed from `unassigned`
        or `early`). Data first, the largest table whose data is complete (as pg_restore --jobs
        orders its work), small ones together with the complete ones after them up to
        JOB_BYTES; else the table arriving now, fed as it arrives; else the early post-data
        entries of loaded tables. None when nothing is left, or on failure."""
        state = self._state
        with self._cond:
            while True:
                if state.error:
                    return None
                if len(state.running) + state.claimed < self._jobs:
                    taken = self._take_tables(unassigned)
                    if taken:
                        state.claimed += 1
                        return "data", taken
                    ready = [dump_id for dump_id, needs in early.items() if needs <= self._loaded]
                    if ready:
                        for dump_id in ready:
                            del early[dump_id]
                        state.claimed += 1
                        return "early", ready
                loading = any(job.ids for job in state.running) or state.claimed > 0
                if not unassigned and not (early and loading):
                    return None
                if unassigned and state.eof and unassigned[0] not in state.starts:
                    self._abort_locked(f"the dump ended before the data of TOC entry {unassigned[0]}")
                    return None
                self._cond.wait()

    def _run_after_data(self) -> None:
        assert self._after_data is not None
        try:
            self._after_data()
            self._mark("after data done")
        except BaseException as error:
            self._abort(f"after the data: {error}")

    def _claim(self, every: bool = False) -> bool:
        """Wait for a free slot (`every`: for all of them) and take it; False on failure."""
        with self._cond:
            while not self._state.error:
                busy = len(self._state.running) + self._state.claimed
                if (busy == 0) if every else (busy < self._jobs):
                    self._state.claimed += 1
                    return True
                self._cond.wait()
            return False

    def _take_tables(self, unassigned: list[int]) -> list[int]:
        """(Under the lock) the tables for the next data job, removed from `unassigned`."""
        state = self._state
        complete = [dump_id for dump_id in unassigned if dump_id in state.ends]
        if complete:
            first = max(complete, key=lambda dump_id: state.ends[dump_id] - state.starts[dump_id])
            at = unassigned.index(first)
            taken = [first]
            while at + len(taken) < len(unassigned):
                following = unassigned[at + len(taken)]
                if following not in state.ends or state.ends[following] - state.starts[first] > JOB_BYTES:
                    break
                if state.starts[following] != state.ends[taken[-1]]:
                    break  # not the next block in the stream (one in between is taken)
                taken.append(following)
        else:
            arriving = [dump_id for dump_id in unassigned if dump_id in state.starts]
            if not arriving:
                return []
            taken = arriving[:1]
        for dump_id in taken:
            unassigned.remove(dump_id)
        return taken

    def _start(
        self, phase: Phase, what: str, args: list[str], listing: list[int] | None, feed: bool = False
    ) -> _Job:
        """Start a pg_restore in a claimed slot (pre-data: none needed) and count it as running."""
        try:
            process = self._site.start(phase, args, listing, feed)
        finally:
            with self._cond:
                if phase != "pre-data":
                    self._state.claimed -= 1
        assert process.stderr is not None
        job = _Job(what, process, runner.StderrTail(process.stderr))
        with self._cond:
            self._state.running.append(job)
            if self._state.error:
                process.terminate()
        return job

    @staticmethod
    def _in_thread(target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True, name="pg-restore-job")
        thread.start()
        return thread

    def _feed_and_wait(self, job: _Job, head: bytes, reader: int) -> None:
        stdin = job.process.stdin
        assert stdin is not None
        try:
            self._feed(job, stdin.fileno(), head, reader)
        except BaseException as error:
            self._abort(f"{job.what}: {error}")
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass
        self._wait(job)

    def _feed(self, job: _Job, pipe: int, head: bytes, reader: int) -> None:
        """The TOC, then the job's blocks from the spool as they arrive. A pipe closed by
        pg_restore ends the feeding: its exit status says why."""
        try:
            _write_all(pipe, head)
            position, last = job.start, job.ids[-1]
            while True:
                with self._cond:
                    while True:
                        state = self._state
                        if state.error:
                            return
                        end = state.ends.get(last)
                        limit = end if end is not None else state.written
                        if end is not None and position >= end:
                            return
                        if position < limit:
                            break
                        if state.eof:
                            return  # the reading thread says why the data is incomplete
                        self._cond.wait()
                while position < limit:
                    sent = os.sendfile(pipe, reader, position, min(limit - position, SENDFILE_BYTES))
                    if sent == 0:
                        raise SourceError(f"the spool ended at {position} bytes")
                    position += sent
        except BrokenPipeError:
            return
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise

    def _wait(self, job: _Job) -> None:
        """Wait for the job's pg_restore; a failure stops everything."""
        status = None
        try:
            status = job.process.wait()
            if status != 0:
                self._abort(f"{job.what}: pg_restore exited with status {status}: {job.tail.text('error:')}")
            job.tail.join()
        finally:
            with self._cond:
                if status == 0:
                    self._loaded.update(job.ids)
                if job in self._state.running:
                    self._state.running.remove(job)
                self._cond.notify_all()

    def _mark(self, name: str) -> None:
        self._timings[name] = time.monotonic() - self._t0

    # ---------------------------------------------------------------- failure
    def _failed(self) -> bool:
        with self._cond:
            return bool(self._state.error)

    def _abort(self, reason: str) -> None:
        with self._cond:
            self._abort_locked(reason)

    def _abort_locked(self, reason: str) -> None:
        if not self._state.error:
            self._state.error = reason
        for job in self._state.running:
            if job.process.poll() is None:
                job.process.terminate()
        self._cond.notify_all()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


class HostSite:
    """pg_restore on this host (`argv` up to its connection and options; --create, if any, only
    for the pre-data section, `restored_argv` for the others), list and TOC files in a private
    directory under `directory`."""

    def __init__(
        self, argv: list[str], env: dict[str, str] | None, directory: Path,
        pre_data_argv: list[str] | None = None,
    ) -> None:  # fmt: skip
        self._argv = argv
        self._pre_data_argv = pre_data_argv or argv
        self._env = env
        self._directory = directory
        self._private: Path | None = None
        self._lists = 0

    def _dir(self) -> Path:
        if self._private is None:
            import tempfile

            self._private = Path(tempfile.mkdtemp(prefix="backupctl-toc-", dir=self._directory))
        return self._private

    def put_toc(self, head: bytes) -> str:
        path = self._dir() / "toc.pgdump"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(head)
        return str(path)

    def start(
        self, phase: Phase, args: list[str], listing: list[int] | None, feed: bool
    ) -> subprocess.Popen[bytes]:
        argv = [*(self._pre_data_argv if phase == "pre-data" else self._argv), *args]
        if listing is not None:
            self._lists += 1
            path = self._dir() / f"list-{self._lists}"
            path.write_text("".join(f"{dump_id}\n" for dump_id in listing))
            argv += [f"--use-list={path}"]
        return runner.start(argv, env=self._env, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)  # fmt: skip

    def cleanup(self) -> None:
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None


def restore_overlapped(
    stream: BinaryIO, site: PgRestoreSite, jobs: int, spool_dir: Path, label: str,
    after_data: Callable[[], None] | None = None,
) -> BinaryIO | None:  # fmt: skip
    """Restore `stream` with `OverlappedRestore` when its archive allows it and return None;
    else return the stream to restore another way (what was read of it replayed first).
    `after_data` runs once every table is loaded, beside the post-data section. Raises
    SourceError when the restore fails."""
    prefix, plan = peek_toc(stream)
    if plan is None:
        log.debug("%s: not an archive whose data can load while it arrives; spooled first", label)
        return concatenated(prefix, stream)
    try:
        OverlappedRestore(site, jobs, spool_dir, label, after_data).run(plan, prefix, stream)
    finally:
        site.cleanup()
    return None
