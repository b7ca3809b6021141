"""The private spool used by parallel restores: room checks, privacy, and running out of room."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from backupctl.core import spool
from backupctl.core.spool import SpoolPlan, default_jobs, private_spool


def test_default_jobs_is_one_per_usable_cpu_capped_at_eight() -> None:
    assert default_jobs() == max(1, min(len(os.sched_getaffinity(0)), 8))


def test_plan_refuses_a_spool_larger_than_the_free_space(tmp_path: Path) -> None:
    plan = SpoolPlan.decide(1 << 60, tmp_path)
    assert not plan.possible
    assert str(tmp_path) in plan.reason and "BACKUPCTL_SPOOL_DIR" in plan.reason


def test_plan_accepts_a_small_spool_and_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(tmp_path))
    plan = SpoolPlan.decide(1024)
    assert plan.possible and plan.directory == tmp_path


def test_spool_is_private_and_removed_afterwards(tmp_path: Path) -> None:
    with private_spool(tmp_path, suffix=".pgdump") as spooled:
        assert spooled.fill(io.BytesIO(b"x" * 3000))
        assert spooled.written == 3000
        assert stat.S_IMODE(spooled.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(spooled.path.parent.stat().st_mode) == 0o700
        assert spooled.path.read_bytes() == b"x" * 3000
    assert list(tmp_path.iterdir()) == []


def test_spool_removed_after_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), private_spool(tmp_path) as spooled:
        spooled.fill(io.BytesIO(b"abc"))
        raise RuntimeError("pg_restore failed")
    assert list(tmp_path.iterdir()) == []


def test_running_out_of_room_stops_spooling_and_replays_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reserve larger than the file system: the first free-space check after 1 MiB stops it.
    monkeypatch.setattr(spool, "RESERVE_BYTES", 1 << 62)
    monkeypatch.setattr(spool, "FREE_CHECK_EVERY", 1 << 20)
    data = os.urandom(5 << 20)
    stream = io.BytesIO(data)
    with private_spool(tmp_path) as spooled:
        assert not spooled.fill(stream)
        assert 0 < spooled.written < len(data)
        assert "continued as a stream" in spooled.stopped_reason
        assert spooled.replay(stream).read() == data


class _UpperHead:
    """A head patch that upper-cases the first 4 bytes it saw (or declines: None)."""

    def __init__(self, decline: bool = False) -> None:
        self.seen = bytearray()
        self.decline = decline

    def feed(self, chunk: bytes) -> None:
        self.seen += chunk

    def patched_head(self) -> bytes | None:
        return None if self.decline else bytes(self.seen[:4]).upper()


@pytest.mark.parametrize("decline", [False, True])
def test_a_head_patch_sees_every_spooled_byte_and_rewrites_only_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decline: bool
) -> None:
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(tmp_path))
    data = b"abcd" + os.urandom(3 << 20)
    patch = _UpperHead(decline)
    restored: list[bytes] = []
    used = spool.restore_with_spool(
        io.BytesIO(data), 2, len(data),
        serial=lambda stream: pytest.fail("streamed"),
        parallel=lambda path, jobs: restored.append(path.read_bytes()),
        notes=[], patch=patch,
    )  # fmt: skip
    assert used == 2 and bytes(patch.seen) == data
    assert restored == [data if decline else b"ABCD" + data[4:]]
    assert list(tmp_path.iterdir()) == []


def test_a_head_cannot_grow_the_spool(tmp_path: Path) -> None:
    with private_spool(tmp_path) as spooled:
        assert spooled.fill(io.BytesIO(b"abc"))
        with pytest.raises(ValueError):
            spooled.overwrite_head(b"abcd")
