"""Plain streams stored as they are read: what a backup tees a dump into.

A store that takes the plain stream as it is (a deduplicating store, `PlainStore` in
backupctl.targets.store: restic) gives a `StreamSink` per source: its writer context is entered
when the sink is opened (the store's process starts: possibly ahead of the dump,
actions/ahead.py), fed chunk by chunk by `TeeReader` while the dump is read once for every
copy, and left by `close_sinks`: a commit on success, an abort (nothing stored) otherwise.
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

from backupctl.core.pipeline import CHUNK
from backupctl.errors import BackupctlError, TargetError


@dataclass
class StreamSink:
    """One store being fed a plain stream during a dump. `error` is set when it failed (the
    stream goes on to the others); after a commit `result` is what the store reports
    (`StoredPlain`: its snapshot id and the new bytes it added)."""

    name: str
    context: AbstractContextManager[Any]
    writer: Any = None
    error: str | None = None
    result: Any = None


class TeeReader(io.RawIOBase):
    """Reads from `inner` and copies every chunk into each live sink."""

    def __init__(self, inner: BinaryIO, sinks: list[StreamSink]) -> None:
        super().__init__()
        self.inner = inner
        self.sinks = sinks

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size if size and size > 0 else CHUNK)
        if data:
            for sink in self.sinks:
                if sink.error is None:
                    try:
                        sink.writer.write(data)
                    except (TargetError, OSError) as error:
                        sink.error = str(error)  # drop this copy, keep the others going
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def open_sink(name: str, context: AbstractContextManager[Any]) -> StreamSink:
    """Enter a store's writer context (its process starts); a failure to start is kept as the
    sink's error, never raised."""
    sink = StreamSink(name, context)
    try:
        sink.writer = context.__enter__()
    except BackupctlError as error:
        sink.error = str(error)
    return sink


def close_sinks(sinks: list[StreamSink], failure: BaseException | None) -> None:
    """Commit (or, on `failure` or a dropped sink, abort) every sink."""
    for sink in sinks:
        if sink.writer is None:
            continue
        if failure is not None or sink.error is not None:
            error = failure or TargetError(sink.error or "the store failed")
            try:
                sink.context.__exit__(type(error), error, error.__traceback__)
            except BaseException:  # the abort path re-raises what we gave it
                pass
            continue
        try:
            sink.context.__exit__(None, None, None)
            sink.result = sink.writer.result
        except (BackupctlError, OSError) as error:
            sink.error = str(error)
