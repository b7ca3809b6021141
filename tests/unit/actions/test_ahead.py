"""Work started ahead of need (actions/ahead.py): what is taken is used once, what is not is
stopped without effect, and an error while starting surfaces where the work is taken.

The restic side runs against the real binary in tests/integration/targets/test_restic.py and
tests/e2e/test_restic_only.py; here fakes record what happens to each piece.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from backupctl.actions.ahead import DumpAhead, PendingSinks, StartedAhead, StreamOf
from backupctl.errors import SourceError, TargetError
from backupctl.sources.base import DumpStream


class FakeSource:
    """Counts dumps; each yields its own stream and records how it ended."""

    extension = "pgdump"

    def __init__(self, name: str, fail: Exception | None = None) -> None:
        self.name = name
        self.fail = fail
        self.ended: list[str] = []  # "left" or the exception type, per dump whose context ended

    @contextmanager
    def dump(self) -> Iterator[DumpStream]:
        if self.fail is not None:
            raise self.fail
        stream = io.BytesIO(f"dump {len(self.ended) + 1} of {self.name}".encode())
        try:
            yield DumpStream(stream, "pgdump", "pgdump", lambda: {})
        except BaseException as error:
            self.ended.append(type(error).__name__)
            raise
        self.ended.append("left")


class FakeRepository:
    """Stands for a PlainStore (targets.restic_store.ResticSnapshotStore): records the life of
    each stream sink it opens."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started: list[str] = []
        self.committed: list[str] = []
        self.aborted: list[str] = []

    @contextmanager
    def stdin_writer(self, filename: str, tags: list[str], **_: Any) -> Iterator[io.BytesIO]:
        self.started.append(filename)
        writer = io.BytesIO()
        writer.result = f"snapshot of {filename}"  # type: ignore[attr-defined]
        try:
            yield writer
        except BaseException:
            self.aborted.append(filename)
            raise
        self.committed.append(filename)

    def open_stream_sink(
        self, policy: str, snapshot_id: str, source: str, extension: str, *, background: bool = False
    ) -> Any:
        from backupctl.targets.stream_sinks import open_sink

        return open_sink(self.name, self.stdin_writer(f"{source}.{extension}", [f"snapshot={snapshot_id}"]))


DB = StreamOf("shop", "20260101T000000Z-abcdef", "db", "pgdump")
LATER = StreamOf("shop", "20260101T000000Z-abcdef", "later", "sql")


def test_a_dump_started_ahead_is_the_one_taken_and_ends_once() -> None:
    source = FakeSource("db")
    ahead = DumpAhead()
    ahead.start("db", source)  # type: ignore[arg-type]
    with ahead.take("db", source) as dump:  # type: ignore[arg-type]
        assert dump.stream.read() == b"dump 1 of db"
    assert source.ended == ["left"]
    with ahead.take("db", source) as dump:  # type: ignore[arg-type]  # a retry: a new dump
        assert dump.stream.read() == b"dump 2 of db"
    ahead.abort()
    assert source.ended == ["left", "left"]


def test_an_error_inside_the_taken_dump_ends_it_with_that_error() -> None:
    source = FakeSource("db")
    ahead = DumpAhead()
    ahead.start("db", source)  # type: ignore[arg-type]
    with pytest.raises(TargetError), ahead.take("db", source):  # type: ignore[arg-type]
        raise TargetError("disk full")
    assert source.ended == ["TargetError"]


def test_a_dump_that_failed_to_start_raises_where_it_is_taken() -> None:
    source = FakeSource("db", fail=SourceError("cannot connect to the database"))
    ahead = DumpAhead()
    ahead.start("db", source)  # no error yet: the run records it when it takes the dump
    with pytest.raises(SourceError, match="cannot connect"), ahead.take("db", source):  # type: ignore[arg-type]
        pytest.fail("no dump to use")


def test_a_dump_never_taken_is_ended_by_abort() -> None:
    first, second = FakeSource("db"), FakeSource("other")
    ahead = DumpAhead()
    ahead.start("db", first)  # type: ignore[arg-type]
    with ahead.take("other", second) as dump:  # type: ignore[arg-type]  # another source: its own
        assert dump.stream.read() == b"dump 1 of other"
    assert first.ended == []
    ahead.abort()
    assert first.ended == ["left"]  # its context is left: the source stops its tool
    ahead.abort()  # twice is harmless
    assert first.ended == ["left"]


def test_pending_sinks_are_taken_once_per_repository_and_the_rest_aborted() -> None:
    one, two, three = FakeRepository("one"), FakeRepository("two"), FakeRepository("three")
    pending = PendingSinks()
    pending.start(DB, {"one": one, "two": two})  # type: ignore[dict-item]
    pending.start(DB, {"one": one})  # type: ignore[dict-item]  # already started: nothing new
    assert one.started == ["db.pgdump"] and two.started == ["db.pgdump"]

    # "two" failed meanwhile, "three" is new: one is reused, two aborted, three started now.
    sinks = pending.take(DB, {"one": one, "three": three})  # type: ignore[dict-item]
    assert [sink.name for sink in sinks] == ["one", "three"]
    assert one.started == ["db.pgdump"] and three.started == ["db.pgdump"]
    assert two.aborted == ["db.pgdump"] and two.committed == []

    pending.start(LATER, {"one": one})  # type: ignore[dict-item]
    pending.abort()
    assert one.aborted == ["later.sql"] and one.committed == []
    assert pending.take(LATER, {}) == []  # nothing left waiting


def test_started_ahead_aborts_both_kinds() -> None:
    source, repository = FakeSource("db"), FakeRepository("one")
    ahead = StartedAhead()
    ahead.dump.start("db", source)  # type: ignore[arg-type]
    ahead.sinks.start(DB, {"one": repository})  # type: ignore[dict-item]
    ahead.abort()
    assert source.ended == ["left"]
    assert repository.aborted == ["db.pgdump"] and repository.committed == []
