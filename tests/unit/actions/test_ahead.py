"""Work started ahead of need (actions/ahead.py): what is taken is used once, what is not is
stopped without effect, and an error while starting surfaces where the work is taken. The
catalog row is written in a thread; nothing reaches a target before it is (`gated`).

The restic side runs against the real binary in tests/integration/targets/test_restic.py and
tests/e2e/test_restic_only.py; here fakes record what happens to each piece.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backupctl.actions import ahead
from backupctl.actions.ahead import (
    CatalogAhead,
    CatalogNotReady,
    DumpAhead,
    PendingSinks,
    StartedAhead,
    StreamOf,
    gated,
)
from backupctl.errors import ConfigError, SourceError, TargetError
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


class RecordingTarget:
    """A target writer that records what it received and how its context ended."""

    def __init__(self) -> None:
        self.opened = 0
        self.received = io.BytesIO()
        self.ended: list[str] = []

    @contextmanager
    def writer(self) -> Iterator[io.BytesIO]:
        self.opened += 1
        try:
            yield self.received
        except BaseException as error:
            self.ended.append(type(error).__name__)  # a real writer discards here
            raise
        self.ended.append("committed")


def test_gated_writes_wait_in_memory_until_the_gate_opens_then_reach_the_target_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ahead, "GATE_BUFFER", 10)
    target, gate = RecordingTarget(), {"open": False, "waited": 0}

    def open_gate() -> None:
        gate["waited"] += 1
        gate["open"] = True

    with gated(target.writer, lambda: bool(gate["open"]), open_gate) as sink:
        sink.write(b"abcd")
        sink.write(memoryview(b"efgh"))
        assert target.opened == 0 and gate["waited"] == 0  # held: 8 bytes <= 10
        sink.write(b"ijkl")  # would exceed the buffer: waits for the gate, then flushes
        assert target.opened == 1 and gate["waited"] == 1
        sink.write(b"mn")
    assert target.received.getvalue() == b"abcdefghijklmn" and target.ended == ["committed"]


def test_a_small_artifact_held_whole_is_written_when_the_context_ends() -> None:
    target = RecordingTarget()
    opened: list[bool] = []
    with gated(target.writer, lambda: False, lambda: opened.append(True)) as sink:
        sink.write(b"tiny")
    assert opened == [True] and target.received.getvalue() == b"tiny" and target.ended == ["committed"]


def test_an_error_before_the_gate_opens_never_touches_the_target_and_after_it_discards() -> None:
    target = RecordingTarget()
    with pytest.raises(SourceError), gated(target.writer, lambda: False, lambda: None) as sink:
        sink.write(b"held")
        raise SourceError("the dump failed")
    assert target.opened == 0
    with pytest.raises(SourceError), gated(target.writer, lambda: True, lambda: None) as sink:
        sink.write(b"written")
        raise SourceError("the dump failed")
    assert target.ended == ["SourceError"]


def test_a_catalog_that_fails_makes_the_gate_raise_and_nothing_reach_the_target() -> None:
    catalog: CatalogAhead[str] = CatalogAhead()
    catalog.start(lambda: (_ for _ in ()).throw(ConfigError("catalog locked")))
    target = RecordingTarget()
    failing = pytest.raises(CatalogNotReady, match="catalog locked")
    with failing as raised, gated(target.writer, catalog.ready, catalog.wait) as sink:
        sink.write(b"x" * (ahead.GATE_BUFFER + 1))
    assert isinstance(raised.value.original, ConfigError) and target.opened == 0
    assert catalog.settle() is None and isinstance(catalog.error, ConfigError)


def test_the_catalog_begins_in_a_thread_and_is_announced_once_by_the_first_waiter() -> None:
    release = threading.Event()
    announced: list[tuple[str, str]] = []
    catalog: CatalogAhead[str] = CatalogAhead()
    catalog.start(lambda: release.wait(10) and "catalog",
                  then=lambda value: announced.append((value, threading.current_thread().name)))  # fmt: skip
    assert not catalog.ready()
    release.set()
    assert catalog.wait() == "catalog" and catalog.ready()
    assert catalog.wait() == "catalog" and catalog.settle() == "catalog"
    assert announced == [("catalog", threading.current_thread().name)]


def test_held_bytes_wait_in_an_unlinked_spool_file_and_without_one_the_write_waits_for_the_gate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(tmp_path))
    target, opened = RecordingTarget(), []
    with gated(target.writer, lambda: False, lambda: opened.append(True)) as sink:
        sink.write(b"x" * 100_000)
        links = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
        assert any(link.startswith(str(tmp_path)) for link in links)  # an O_TMPFILE, or unlinked
        assert list(tmp_path.iterdir()) == [] and opened == []  # unlinked, gate not yet waited for
    assert target.received.getvalue() == b"x" * 100_000 and opened == [True]

    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(tmp_path / "missing"))
    target, opened = RecordingTarget(), []
    with gated(target.writer, lambda: False, lambda: opened.append(True)) as sink:
        sink.write(b"abc")
        assert opened == [True] and target.opened == 1  # no place to hold it: waited at once
        sink.write(b"def")
    assert target.received.getvalue() == b"abcdef"
