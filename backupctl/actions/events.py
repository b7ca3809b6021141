"""How actions tell the outside world what happens: a small event sink the CLI renders."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("backupctl")


class Events(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def progress(self, label: str, total: int | None) -> ProgressHandle: ...


class ProgressHandle(Protocol):
    def advance(self, amount: int) -> None: ...
    def close(self) -> None: ...


class _NoProgress:
    def advance(self, amount: int) -> None:
        return None

    def close(self) -> None:
        return None


class LogEvents:
    """Default sink: one log line per event (what cron and journald want)."""

    def info(self, message: str) -> None:
        log.info(message)

    def warning(self, message: str) -> None:
        log.warning(message)

    def progress(self, label: str, total: int | None) -> ProgressHandle:
        return _NoProgress()
