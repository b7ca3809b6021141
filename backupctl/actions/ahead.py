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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

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


@dataclass
class StartedAhead:
    """What one backup run started ahead: restic processes per source and the first dump."""

    sinks: PendingSinks = field(default_factory=PendingSinks)
    dump: DumpAhead = field(default_factory=DumpAhead)

    def abort(self) -> None:
        self.dump.abort()
        self.sinks.abort()
