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
