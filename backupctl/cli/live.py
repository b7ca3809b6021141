"""The live progress display: one rich Progress per command, a row per transfer.

Kept apart from `output` because it needs rich when its classes are defined, and rich costs
tens of milliseconds of start-up: `CliEvents.progress()` imports this module when it first draws
bars on a terminal, so commands that draw none (cron, --json, --help) never load rich.
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections.abc import Callable

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

from backupctl.cli import live_console
from backupctl.core.units import human_bytes


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
        with self.lock:
            for transfer in self._open:
                transfer.closed = True
                self._end(transfer.task, failed=True)
            self._open.clear()
            self.progress.stop()  # renders the last frame, with those rows, and leaves it
            for task in self.progress.tasks:
                self.progress.remove_task(task.id)
            live_console.stopped(self.console)

    def _end(self, task: Task, failed: bool) -> None:
        if failed:
            self.progress.stop_task(task.id)
            self.progress.update(task.id, failed=True)
        else:
            self.progress.update(task.id, total=int(task.completed))  # marks it finished

    def _go_live(self) -> None:
        if not self._exit_hook:
            atexit.register(self.stop)  # a row never closed outside a click command
            self._exit_hook = True
        self.progress.start()
        live_console.started(self.console)


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
