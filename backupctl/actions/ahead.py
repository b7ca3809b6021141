"""Work a backup starts before it needs it, so that slow start-ups overlap.

A backup's critical path is its dump: until the dump tool and every restic process reading
the stream are running, nothing moves. Each has a slow start: `restic backup` derives the
repository key (scrypt, about 0.5 s of CPU) and loads the index before it reads a byte;
pg_dump reads the database's catalog before it writes data. backupctl itself needs about
0.2 s to import SQLAlchemy and open its catalog. Done one after the other, these start-ups
add up to most of a second that plain `pg_dump | restic backup --stdin` does not pay, because
there the two start side by side. So `run_backup` starts the restic processes and the first
source's dump ahead, then opens its catalog while they get ready.

Only the first source's: started any earlier, a later source's restic process would sit idle
through the sources before it, holding its own copy of the repository index in memory (that
can be hundreds of MiB for a large repository), to save half a second once.

Anything started ahead and not taken is stopped without effect: restic commits nothing for an
aborted process, and a dump that is not read is killed.

The catalog is opened in a thread (`CatalogAhead`) while the first dump already streams: its
~0.3 s of CPU (importing SQLAlchemy, opening and migrating the catalog, recording the run as
running; `python -X importtime`, docs/benchmarks.md) used to hold the dump's pipe unread. The
rule that nothing reaches a target before the run is recorded as running (so a killed run is
always found and swept, actions/sweep.py) is kept by `GatedWriter`: the first stored (compressed
and encrypted) bytes wait in an unlinked spool file, at most `GATE_BUFFER`, until the catalog
row is written; only then is the target's writer opened. Stores that take the plain stream
(restic) wait for the row before the first byte (actions/backup_fanout.py).
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, TypeVar

from backupctl.core.spool import spool_directory
from backupctl.errors import TargetError
from backupctl.sources.base import DumpStream, Source
from backupctl.targets.store import PlainStore
from backupctl.targets.stream_sinks import StreamSink, close_sinks


@dataclass(frozen=True)
class StreamOf:
    """Which plain stream a sink stores: one source's dump in one backupctl snapshot."""

    policy: str
    snapshot_id: str
    source: str
    extension: str

    def open(self, stores: dict[str, PlainStore]) -> list[StreamSink]:
        return [
            store.open_stream_sink(self.policy, self.snapshot_id, self.source, self.extension)
            for store in stores.values()
        ]


class PendingSinks:
    """Store processes (restic) started ahead of the dump that will feed them, keyed by source.

    Each `restic backup` spends about 0.5 s of CPU deriving the repository key (scrypt) and then
    loads the index before it reads a byte. Started ahead, that overlaps with the work before
    the dump (opening the catalog, connecting to the database) instead of holding back the
    dump's first bytes. Whatever is not taken is aborted by `abort()`, so a process started
    ahead never commits a snapshot. They are opened through the store interface
    (`PlainStore.open_stream_sink`): nothing here knows which kind of store it starts.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[StreamSink]] = {}

    def start(self, stream: StreamOf, stores: dict[str, PlainStore]) -> None:
        if stores and stream.source not in self._waiting:
            self._waiting[stream.source] = stream.open(stores)

    def take(self, stream: StreamOf, stores: dict[str, PlainStore]) -> list[StreamSink]:
        """The sinks for `stream`'s source, one per store: those started ahead, new ones for
        the rest. Sinks started ahead for a store no longer wanted (its target failed
        meanwhile) are aborted."""
        ready = {sink.name: sink for sink in self._waiting.pop(stream.source, [])}
        unwanted = [sink for name, sink in ready.items() if name not in stores]
        close_sinks(unwanted, TargetError("not needed any more"))
        missing = {name: store for name, store in stores.items() if name not in ready}
        fresh = {sink.name: sink for sink in stream.open(missing)}
        return [ready.get(name) or fresh[name] for name in stores]

    def abort(self) -> None:
        """Stop every process not taken: restic commits nothing for them."""
        for sinks in self._waiting.values():
            close_sinks(sinks, TargetError("not needed any more"))
        self._waiting.clear()


class DumpAhead:
    """One source's dump, started before the catalog is opened.

    An error while starting it (the database is down, a wrong password) is kept and raised
    where the dump is taken, so the run fails at the same point, and is recorded the same way,
    as when the dump starts there.
    """

    def __init__(self) -> None:
        self._source: str | None = None
        self._stack = ExitStack()
        self._dump: DumpStream | None = None
        self._error: Exception | None = None

    def start(self, name: str, source: Source) -> None:
        self._source = name
        try:
            self._dump = self._stack.enter_context(source.dump())
        except Exception as error:  # raised by take(); KeyboardInterrupt etc. go through now
            self._error = error

    @contextmanager
    def take(self, name: str, source: Source) -> Iterator[DumpStream]:
        """The dump started ahead for source `name`, or a new one."""
        if name != self._source:
            with source.dump() as dump:
                yield dump
            return
        self._source = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        assert self._dump is not None
        with self._stack:  # leaving it (normally or by an error) ends the dump as usual
            yield self._dump

    def abort(self) -> None:
        """End a dump that was not taken (the run failed before it): its context is left
        unread, which stops the dump tool (the contract of `Source.dump`)."""
        self._source = None
        self._stack.close()


T = TypeVar("T")
# Stored bytes held while the catalog opens: ~3 s of the 1 GiB benchmark's dump (3.2:1 at zstd
# level 1, ~64 MB/s of plain dump), far more than the ~0.35 s the catalog needs on an idle
# 2-CPU machine (docs/benchmarks.md, issue #17 session 6).
GATE_BUFFER = 64 << 20


class CatalogAhead(Generic[T]):
    """`begin()` (open the catalog, record the run as running) in a thread, started first thing.

    `wait()` returns what it returned or raises what it raised (`CatalogNotReady` wraps it, so
    no caller mistakes a catalog error for a target's); `settle()` waits and returns None on
    failure (the failure paths: nothing to record the failure in)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._value: T | None = None
        self._error: BaseException | None = None
        self._then: Callable[[T], object] | None = None

    def start(self, begin: Callable[[], T], then: Callable[[T], object] | None = None) -> None:
        """Run `begin()` in a thread; `then(value)` runs once, in the first thread that waits
        for it successfully (e.g. to log what `begin` found)."""
        self._then = then

        def run() -> None:
            try:
                self._value = begin()
            except BaseException as error:  # re-raised where it is waited for
                self._error = error

        self._thread = threading.Thread(target=run, name="catalog-begin", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What `begin()` raised (after `wait`/`settle`)."""
        return self._error

    def wait(self) -> T:
        assert self._thread is not None, "CatalogAhead.start was not called"
        self._thread.join()
        if self._error is not None:
            raise CatalogNotReady(self._error)
        return self._announced()

    def settle(self) -> T | None:
        if self._thread is None:
            return None
        self._thread.join()
        return None if self._error is not None else self._announced()

    def _announced(self) -> T:
        assert self._value is not None
        then, self._then = self._then, None
        if then is not None:
            then(self._value)
        return self._value


class CatalogNotReady(Exception):
    """The catalog could not record the run (`original` says why); raised where a write waits."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class GatedWriter(io.RawIOBase):
    """A target writer opened only once `ready()` (the run is in the catalog): until then the
    bytes written wait in an unlinked 0600 file in the spool directory (page cache, not this
    process's memory; the bytes are age-encrypted already), up to `GATE_BUFFER`; beyond that,
    or when that file cannot be written, `write` waits for the gate. See `gated`."""

    def __init__(self, opener: Callable[[], AbstractContextManager[BinaryIO]], ready: Callable[[], bool],
                 open_gate: Callable[[], object], stack: ExitStack) -> None:  # fmt: skip
        self._opener, self._ready, self._open_gate, self._stack = opener, ready, open_gate, stack
        self._sink: BinaryIO | None = None
        self._held: BinaryIO | None = None
        self._held_bytes = 0
        self._holding = True

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(data)
        if self._sink is None:
            if self._holding and not self._ready() and self._held_bytes + size <= GATE_BUFFER:
                try:
                    if self._held is None:
                        # Unbuffered: a full disk shows at this write, never at a later flush.
                        held = tempfile.TemporaryFile(  # noqa: SIM115 (closed by the stack)
                            prefix="backupctl-gate-", dir=spool_directory(), buffering=0
                        )
                        self._held = self._stack.enter_context(held)
                    if self._held.write(data) == size:
                        self._held_bytes += size
                        return size
                except OSError:  # no room or no spool directory: wait for the catalog instead
                    pass
                self._holding = False  # (what a short write left after `_held_bytes` is ignored)
            self.open()
        assert self._sink is not None
        self._sink.write(data)
        return size

    def open(self) -> BinaryIO:
        """Wait for the gate, open the target's writer, copy what was held into it."""
        if self._sink is None:
            self._open_gate()
            self._sink = self._stack.enter_context(self._opener())
            if self._held is not None:
                self._held.seek(0)
                left = self._held_bytes  # (a failed write may have left a partial block after)
                while left and (block := self._held.read(min(left, 1 << 20))):
                    self._sink.write(block)
                    left -= len(block)
                if left:  # (never seen; the stored re-hash would catch it too)
                    raise OSError(f"{left} held bytes could not be read back from the spool")
                self._held.close()
                self._held, self._held_bytes = None, 0
        return self._sink


@contextmanager
def gated(opener: Callable[[], AbstractContextManager[BinaryIO]], ready: Callable[[], bool],
          open_gate: Callable[[], object]) -> Iterator[GatedWriter]:  # fmt: skip
    """A writer for one stored artifact that reaches the target only after `open_gate()`
    returned (it waits for the catalog row and raises when it could not be written); `ready()`
    says whether that would wait. Leaving normally opens the target's writer if no write did
    (a small artifact held whole) and commits it; leaving with an error discards what the
    target's writer holds, as the writer itself does."""
    with ExitStack() as stack:
        writer = GatedWriter(opener, ready, open_gate, stack)
        yield writer
        writer.open()


@dataclass
class StartedAhead:
    """What one backup run started ahead: the catalog row, restic processes per source and the
    first dump."""

    sinks: PendingSinks = field(default_factory=PendingSinks)
    dump: DumpAhead = field(default_factory=DumpAhead)
    catalog: CatalogAhead[Any] = field(default_factory=CatalogAhead)

    def abort(self) -> None:
        self.dump.abort()
        self.sinks.abort()
