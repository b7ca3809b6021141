"""Progress off a terminal: a long transfer logs where it stands at most every 30 seconds."""

from __future__ import annotations

import logging

import pytest

from backupctl.actions.events import LogEvents, LoggedProgress

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "backupctl"]


@pytest.fixture(autouse=True)
def capture_backupctl(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("backupctl").propagate = True
    caplog.set_level(logging.INFO, logger="backupctl")


def test_at_most_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = LoggedProgress("shop-db → s3", 100 * MiB, interval=30, clock=clock)
    for _ in range(90):  # 90 MiB over 90 s, a chunk a second
        clock.now += 1
        progress.advance(MiB)
    progress.close()
    assert messages(caplog) == [
        "shop-db → s3: 30.0 MiB of 100.0 MiB (30%) so far, 1.0 MiB/s",
        "shop-db → s3: 60.0 MiB of 100.0 MiB (60%) so far, 1.0 MiB/s",
        "shop-db → s3: 90.0 MiB of 100.0 MiB (90%) so far, 1.0 MiB/s",
    ]


def test_short_transfers_and_unknown_totals(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    short = LoggedProgress("a → local", None, clock=clock)
    clock.now += 5
    short.advance(MiB)
    assert messages(caplog) == []  # the action logs the finished transfer itself
    long = LoggedProgress("b → local", 10 * MiB, clock=clock)
    clock.now += 40
    long.advance(20 * MiB)  # past a (low) estimate: no percentage
    assert messages(caplog) == ["b → local: 20.0 MiB so far, 512.0 KiB/s"]


def test_log_events_report_progress_as_log_lines() -> None:
    assert isinstance(LogEvents().progress("a → local", None), LoggedProgress)
