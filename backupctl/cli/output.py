"""Rendering: JSON for machines, rich tables/progress on a terminal, plain lines under cron.

Who sees what (stderr; stdout carries only a command's result):

- a terminal: short log lines, and one live rich progress display per command with a row per
  transfer (bytes, rate, ETA, elapsed); log lines go through the same Console, so they print
  above the bars instead of tearing them;
- not a terminal (cron, systemd, a pipe): timestamped one-line-per-event logs, no bars; a long
  transfer adds a line every 30 s (`LoggedProgress`);
- `--log-json`: the same events as JSON lines; `--json`: no bars; `-q`: errors only;
  `NO_COLOR`: no colours.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Column
from rich.text import Text

from backupctl.actions.events import LoggedProgress, NoProgress, ProgressHandle
from backupctl.core.secrets import mask
from backupctl.core.units import human_bytes as human_bytes  # re-exported for the commands

log = logging.getLogger("backupctl")

# The Console of the progress display while it is live: log records are printed through it.
_live_console: Console | None = None


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))  # https://no-color.org: set and not empty


def stderr_console() -> Console:
    return Console(stderr=True, no_color=_no_color(), highlight=False)


def stdout_console() -> Console:
    # Off a terminal (pipes, cron mail) rich would squeeze tables into 80 columns: don't.
    width = None if sys.stdout.isatty() else 240
    return Console(no_color=_no_color(), highlight=False, soft_wrap=True, width=width)


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal that can draw progress bars."""
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True


class _TerminalFormatter(logging.Formatter):
    """Bare messages for a person at a terminal; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class _LogHandler(logging.StreamHandler[TextIO]):
    """Writes to stderr, or through the progress display's Console while bars are live."""

    def emit(self, record: logging.LogRecord) -> None:
        console = _live_console
        if console is None:
            super().emit(record)
            return
        try:
            console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


def setup_logging(verbosity: int, log_json: bool = False) -> None:
    """-q: errors only; default: info; -v: debug. Timestamped plain lines when not on a TTY."""
    level = logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = _LogHandler(sys.stderr)
    if log_json:
        handler.setFormatter(_JsonFormatter())
    elif stderr_is_terminal():
        handler.setFormatter(_TerminalFormatter("%(message)s"))
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
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")


def _command_flags() -> tuple[bool, bool]:
    """(`--json`, `--log-json`) as given to the click command running now (False outside one)."""
    context = click.get_current_context(silent=True)
    as_json = log_json = False
    while context is not None:
        as_json = as_json or bool(context.params.get("as_json"))
        log_json = log_json or bool(context.params.get("log_json"))
        context = context.parent
    return as_json, log_json


class CliEvents:
    """Events for the terminal: log lines, plus rich progress bars when stderr is a TTY.

    Bars only when stderr is a terminal and neither -q, `--json` nor `--log-json` was given
    (both flags are read from the running click command unless passed); otherwise transfers
    are reported as occasional log lines (`LoggedProgress`), which -q silences.
    """

    def __init__(
        self,
        verbosity: int,
        *,
        as_json: bool | None = None,
        log_json: bool | None = None,
        console: Console | None = None,
    ) -> None:
        command_json, command_log_json = _command_flags()
        as_json = command_json if as_json is None else as_json
        log_json = command_log_json if log_json is None else log_json
        terminal = (console.is_terminal and not console.is_dumb_terminal) if console else stderr_is_terminal()
        self.verbosity = verbosity
        self.interactive = terminal and verbosity >= 0 and not as_json and not log_json
        self._console = console
        self._display: TransferDisplay | None = None

    def info(self, message: str) -> None:
        log.info(message)

    def warning(self, message: str) -> None:
        log.warning(message)

    def progress(self, label: str, total: int | None) -> ProgressHandle:
        if self.verbosity < 0:
            return NoProgress()
        if not self.interactive:
            return LoggedProgress(label, total)
        if self._display is None:
            self._display = TransferDisplay(self._console or stderr_console())
            context = click.get_current_context(silent=True)
            if context is not None:
                # Before main() prints the error of a failed command: a row left open (a
                # transfer whose caller did not close it on the way out) must not tear it.
                context.call_on_close(self._display.stop)
        return self._display.start(label, total)


# ---------------------------------------------------------------------- the progress display
class _Bar(BarColumn):
    """rich's bar; pulsing while the total is unknown, full for a finished empty transfer."""

    def render(self, task: Task) -> ProgressBar:
        if task.total == 0:  # rich divides by the total
            return ProgressBar(total=1, completed=1, width=self.bar_width, finished_style=self.finished_style)
        return super().render(task)


class _Bytes(ProgressColumn):
    """`done/total unit` while running (DownloadColumn, binary units); the size when unknown or done."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(width=_BYTES_WIDTH, justify="right", no_wrap=True))
        self._download = DownloadColumn(binary_units=True)

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished or task.fields.get("failed"):
            return Text(human_bytes(task.completed), style="progress.download")
        return self._download.render(task)


class _Rate(ProgressColumn):
    """Current transfer rate while running; the average over the whole transfer once ended."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(width=_RATE_WIDTH, justify="right", no_wrap=True))

    def render(self, task: Task) -> Text:
        ended = task.finished or task.fields.get("failed")
        seconds = task.finished_time if task.finished else task.elapsed
        if ended and seconds:
            speed: float | None = task.completed / seconds
        else:
            speed = None if ended else task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(f"{human_bytes(speed)}/s", style="progress.data.speed")


class _Remaining(TimeRemainingColumn):
    """`eta H:MM:SS` while running with a known total; `done` or `failed` once ended."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(width=_ETA_WIDTH, justify="right", no_wrap=True))

    def render(self, task: Task) -> Text:
        if task.fields.get("failed"):
            return Text("failed", style="red")
        if task.finished:
            return Text("done", style="green")
        remaining = super().render(task)
        return Text.assemble("eta ", remaining) if remaining.plain else remaining


_BYTES_WIDTH, _RATE_WIDTH, _ETA_WIDTH, _ELAPSED_WIDTH = 19, 12, 12, 8
_FIXED_WIDTH = _BYTES_WIDTH + _RATE_WIDTH + _ETA_WIDTH + _ELAPSED_WIDTH + 5  # 5 gaps between 6 columns


def _columns(width: int) -> list[ProgressColumn]:
    """The columns for a terminal `width` wide. Every width is fixed, so rows printed one by one
    line up with each other and with the live ones; a longer description is cut with "…"."""
    description = max(15, min(36, width - _FIXED_WIDTH - 20))
    bar = max(8, min(40, width - _FIXED_WIDTH - description))
    return [
        TextColumn(
            "{task.description}",
            markup=False,
            table_column=Column(width=description, no_wrap=True, overflow="ellipsis"),
        ),
        _Bar(bar_width=bar),
        _Bytes(),
        _Rate(),
        _Remaining(),
        TimeElapsedColumn(table_column=Column(width=_ELAPSED_WIDTH, justify="right", no_wrap=True)),
    ]


class TransferDisplay:
    """One rich Progress for a whole command, with a row per transfer.

    It is live only while a transfer runs. A row that ends (done or failed) is printed once
    above the live rows, with its final size and average rate, so finished rows stay in the
    scrollback in the order things happened, between the log lines printed meanwhile.
    `stop()` ends it all, marking rows never closed as failed: CliEvents calls it when the
    click command ends, before an error message is printed (else it would tear the bars).
    """

    def __init__(self, console: Console, clock: Callable[[], float] | None = None) -> None:
        self.console = console
        self.progress = Progress(
            *_columns(console.width),
            console=console,
            get_time=clock,
            refresh_per_second=4,
            speed_estimate_period=10.0,
            redirect_stdout=False,  # stdout carries the result (maybe into a file): leave it alone
            redirect_stderr=True,  # print()s and warnings to sys.stderr while live: above the bars
        )
        self.lock = threading.RLock()  # advance() runs on worker threads (pipeline, restic)
        self._open: list[_RichTransfer] = []
        self._exit_hook = False

    def start(self, label: str, total: int | None) -> _RichTransfer:
        with self.lock:
            task_id = self.progress.add_task(label, total=total, failed=False)
            task = next(task for task in self.progress.tasks if task.id == task_id)
            if not self._open:
                self.progress.columns = tuple(_columns(self.console.width))  # the terminal's width now
                self._go_live()
            transfer = _RichTransfer(self, task)
            self._open.append(transfer)
            return transfer

    def finish(self, transfer: _RichTransfer, failed: bool) -> None:
        """Print the transfer's final row above the live ones; stop when none runs any more."""
        with self.lock:
            if transfer not in self._open:
                return
            self._open.remove(transfer)
            task = transfer.task
            self._end(task, failed)
            row = self.progress.make_tasks_table([task])
            self.progress.remove_task(task.id)
            self.progress.refresh()  # else printing the row would repeat the last live frame
            self.console.print(row)
            if not self._open:
                self.stop()

    def stop(self) -> None:
        """Stop the live display; rows still open end as failed (idempotent)."""
        global _live_console
        with self.lock:
            for transfer in self._open:
                transfer.closed = True
                self._end(transfer.task, failed=True)
            self._open.clear()
            self.progress.stop()  # renders the last frame, with those rows, and leaves it
            for task in self.progress.tasks:
                self.progress.remove_task(task.id)
            if _live_console is self.console:
                _live_console = None

    def _end(self, task: Task, failed: bool) -> None:
        if failed:
            self.progress.stop_task(task.id)
            self.progress.update(task.id, failed=True)
        else:
            self.progress.update(task.id, total=int(task.completed))  # marks it finished

    def _go_live(self) -> None:
        global _live_console
        if not self._exit_hook:
            atexit.register(self.stop)  # a row never closed outside a click command
            self._exit_hook = True
        self.progress.start()
        _live_console = self.console


class _RichTransfer:
    """The ProgressHandle of one row of a TransferDisplay."""

    def __init__(self, display: TransferDisplay, task: Task) -> None:
        self.task = task
        self.closed = False
        self._display = display

    def advance(self, amount: int) -> None:
        with self._display.lock:
            if self.closed:
                return
            task = self.task
            if task.total is not None and task.completed + amount >= task.total:
                # Reaching the total proves nothing (it may be an estimate, and a low one):
                # until close() says it is done, show bytes and rate only. rich has no call for it.
                task.total = None
            self._display.progress.advance(task.id, amount)

    def close(self) -> None:
        """End the row: `failed` when called while an exception propagates (from a finally)."""
        with self._display.lock:
            if self.closed:
                return
            self.closed = True
            self._display.finish(self, failed=sys.exc_info()[1] is not None)
