"""Rendering: JSON for machines, rich tables/progress on a terminal, plain lines under cron."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from backupctl.actions.events import ProgressHandle
from backupctl.core.secrets import mask

log = logging.getLogger("backupctl")


def stderr_console() -> Console:
    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def stdout_console() -> Console:
    # Off a terminal (pipes, cron mail) rich would squeeze tables into 80 columns: don't.
    width = None if sys.stdout.isatty() else 240
    return Console(no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True, width=width)


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True


def setup_logging(verbosity: int, log_json: bool = False) -> None:
    """-q: errors only; default: info; -v: debug. Timestamped plain lines when not on a TTY."""
    level = logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if log_json:
        handler.setFormatter(_JsonFormatter())
    elif sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    handler.addFilter(_MaskingFilter())
    root = logging.getLogger("backupctl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created).astimezone().isoformat(),
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")


def human_bytes(count: int | float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class CliEvents:
    """Events for the terminal: log lines, plus rich progress bars when stderr is a TTY."""

    def __init__(self, verbosity: int) -> None:
        self.interactive = sys.stderr.isatty() and verbosity >= 0

    def info(self, message: str) -> None:
        log.info(message)

    def warning(self, message: str) -> None:
        log.warning(message)

    def progress(self, label: str, total: int | None) -> ProgressHandle:
        if not self.interactive:
            return _Silent()
        return _RichBar(label, total)


class _Silent:
    def advance(self, amount: int) -> None:
        return None

    def close(self) -> None:
        return None


class _RichBar:
    def __init__(self, label: str, total: int | None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=stderr_console(),
            transient=True,
        )
        self._task: TaskID = self._progress.add_task(label, total=total)
        self._progress.start()

    def advance(self, amount: int) -> None:
        self._progress.update(self._task, advance=amount)

    def close(self) -> None:
        self._progress.stop()
