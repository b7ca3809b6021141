"""How actions tell the outside world what happens: a small event sink the CLI renders."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from backupctl.core.units import human_bytes

log = logging.getLogger("backupctl")

# Off a terminal a long transfer logs where it stands at most this often (cron mail, journald).
PROGRESS_LOG_INTERVAL = 30.0


class Events(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def progress(self, label: str, total: int | None) -> ProgressHandle:
        """Start reporting one transfer (`total` bytes, None when unknown or an estimate is
        missing). The caller advances it by the bytes that pass and closes it when done,
        also when it failed (from a `finally`)."""
        ...


class ProgressHandle(Protocol):
    def advance(self, amount: int) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """A progress handle that shows nothing."""

    def advance(self, amount: int) -> None:
        return None

    def close(self) -> None:
        return None


class LoggedProgress:
    """Progress as plain log lines: at most one INFO line per `interval` seconds.

    Short transfers log nothing here (the action logs the finished transfer itself); a dump
    that runs for an hour under cron says where it stands every half minute. `advance` may be
    called from a worker thread: it only reads the clock and sometimes logs.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        interval: float = PROGRESS_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last = self._started

    def advance(self, amount: int) -> None:
        self.done += amount
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        rate = self.done / (now - self._started) if now > self._started else 0.0
        if self.total and self.done <= self.total:
            where = (
                f"{human_bytes(self.done)} of {human_bytes(self.total)} ({self.done * 100 // self.total}%)"
            )
        else:
            where = human_bytes(self.done)
        log.info("%s: %s so far, %s/s", self.label, where, human_bytes(rate))

    def close(self) -> None:
        return None


class LogEvents:
    """Default sink: one log line per event (what cron and journald want)."""

    def info(self, message: str) -> None:
        log.info(message)

    def warning(self, message: str) -> None:
        log.warning(message)

    def progress(self, label: str, total: int | None) -> ProgressHandle:
        return LoggedProgress(label, total)
