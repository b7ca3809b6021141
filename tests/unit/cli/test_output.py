"""The terminal display: progress rows rendered to a real rich Console (a forced terminal
writing into a StringIO), and when there must be no progress output at all."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import click
import pytest
from rich.console import Console

from backupctl.actions.events import LoggedProgress, NoProgress
from backupctl.cli.live import TransferDisplay
from backupctl.cli.output import CliEvents, setup_logging

MiB = 1 << 20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, color_system=None, width=120), buffer


def text(buffer: io.StringIO) -> str:
    """What was written, without control sequences, one entry per line or redraw."""
    return ANSI.sub("", buffer.getvalue().replace("\r", "\n"))


@pytest.fixture
def display() -> Iterator[tuple[TransferDisplay, io.StringIO, Clock]]:
    console, buffer = terminal()
    clock = Clock()
    shown = TransferDisplay(console, clock)
    yield shown, buffer, clock
    shown.stop()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("backupctl")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_a_row_shows_bytes_rate_eta_and_elapsed_then_its_final_size(
    display: tuple[TransferDisplay, io.StringIO, Clock],
) -> None:
    shown, buffer, clock = display
    bar = shown.start("shop-db → local", 8 * MiB)
    for _ in range(2):
        clock.now += 1
        bar.advance(2 * MiB)
    shown.progress.refresh()
    frame = text(buffer).splitlines()[-1]
    assert "shop-db → local" in frame
    assert "4.0/8.0 MiB" in frame  # bytes done / total
    assert "2.0 MiB/s" in frame  # rate
    assert "eta 0:00:02" in frame  # 4 MiB to go at 2 MiB/s
    assert "0:00:02" in frame  # elapsed
    assert "━" in frame

    clock.now += 2
    bar.advance(4 * MiB)
    bar.close()
    final = [line for line in text(buffer).splitlines() if "done" in line]
    assert len(final) == 1
    # The final size and the average rate over the whole transfer: 8 MiB in 4 s.
    assert re.search(r"shop-db → local\s+━+\s+8\.0 MiB\s+2\.0 MiB/s\s+done\s+0:00:04", final[0])
    assert not shown.progress.live.is_started  # nothing runs: the display is not live


def test_unknown_total_pulses_with_bytes_and_rate(
    display: tuple[TransferDisplay, io.StringIO, Clock],
) -> None:
    shown, buffer, clock = display
    bar = shown.start("uploads → nas", None)
    for _ in range(3):
        clock.now += 1
        bar.advance(3 * MiB)
    shown.progress.refresh()
    frame = text(buffer).splitlines()[-1]
    assert "9.0 MiB" in frame and "3.0 MiB/s" in frame
    assert "eta" not in frame and "/?" not in frame
    bar.close()
    assert re.search(r"uploads → nas\s+━+\s+9\.0 MiB\s+3\.0 MiB/s\s+done", text(buffer))


def test_a_low_estimate_turns_into_an_unknown_total(
    display: tuple[TransferDisplay, io.StringIO, Clock],
) -> None:
    shown, buffer, clock = display
    bar = shown.start("app-db → local", 1 * MiB)
    clock.now += 1
    bar.advance(1 * MiB)
    clock.now += 1
    bar.advance(1 * MiB)  # more than estimated: not "done" at 100 % while still running
    shown.progress.refresh()
    frame = text(buffer).splitlines()[-1]
    assert "2.0 MiB" in frame and "done" not in frame and "eta" not in frame
    bar.close()
    assert re.search(r"app-db → local\s+━+\s+2\.0 MiB\s+1\.0 MiB/s\s+done", text(buffer))


def test_a_transfer_closed_by_an_error_is_shown_failed(
    display: tuple[TransferDisplay, io.StringIO, Clock],
) -> None:
    shown, buffer, clock = display
    bar = shown.start("shop-db → s3", 10 * MiB)
    with pytest.raises(OSError, match="disk full"):
        try:
            clock.now += 2
            bar.advance(3 * MiB)
            raise OSError("disk full")
        finally:
            bar.close()
    assert re.search(r"shop-db → s3\s+━+╸?\s+3\.0 MiB\s+1\.5 MiB/s\s+failed\s+0:00:02", text(buffer))


def test_rows_of_one_command_share_one_live_display(
    display: tuple[TransferDisplay, io.StringIO, Clock],
) -> None:
    shown, buffer, clock = display
    first = shown.start("db → local", 4 * MiB)
    second = shown.start("uploads → local", None)
    clock.now += 1
    first.advance(MiB)
    second.advance(MiB)
    shown.progress.refresh()
    lines = text(buffer).splitlines()
    assert "db → local" in lines[-2] and "uploads → local" in lines[-1]  # one frame, two rows
    first.close()
    assert shown.progress.live.is_started  # the other row still runs
    second.close()
    assert not shown.progress.live.is_started


def test_log_lines_go_through_the_console_while_bars_are_live(
    display: tuple[TransferDisplay, io.StringIO, Clock], capsys: pytest.CaptureFixture[str]
) -> None:
    shown, buffer, _ = display
    setup_logging(0)
    log = logging.getLogger("backupctl")
    bar = shown.start("db → local", 4 * MiB)
    log.warning("target nas is slow")
    bar.close()
    log.info("source db: 4194304 bytes stored")
    assert "target nas is slow" in text(buffer)
    captured = capsys.readouterr().err
    assert "target nas is slow" not in captured  # not written past the live display
    assert "source db: 4194304 bytes stored" in captured  # after it, plain stderr again


def test_cli_events_draw_bars_on_a_terminal() -> None:
    console, buffer = terminal()
    events = CliEvents(0, console=console, as_json=False, log_json=False)
    assert events.interactive
    bar = events.progress("db → local", 2 * MiB)
    bar.advance(2 * MiB)
    bar.close()
    assert re.search(r"db → local\s+━+\s+2\.0 MiB", text(buffer))


@pytest.mark.parametrize(
    ("verbosity", "as_json", "log_json", "handle"),
    [
        (-1, False, False, NoProgress),  # -q: errors only
        (0, True, False, LoggedProgress),  # --json
        (0, False, True, LoggedProgress),  # --log-json
    ],
)
def test_no_progress_output_with_quiet_or_json_flags(
    verbosity: int, as_json: bool, log_json: bool, handle: type
) -> None:
    console, buffer = terminal()
    events = CliEvents(verbosity, console=console, as_json=as_json, log_json=log_json)
    assert not events.interactive
    bar = events.progress("db → local", 2 * MiB)
    assert isinstance(bar, handle)
    bar.advance(2 * MiB)
    bar.close()
    assert buffer.getvalue() == ""


def test_no_progress_output_when_not_a_terminal() -> None:
    buffer = io.StringIO()
    events = CliEvents(0, console=Console(file=buffer), as_json=False, log_json=False)
    assert not events.interactive
    bar = events.progress("db → local", 2 * MiB)
    assert isinstance(bar, LoggedProgress)
    bar.advance(2 * MiB)
    bar.close()
    assert buffer.getvalue() == ""


def test_json_flags_are_read_from_the_running_click_command() -> None:
    console, _ = terminal()
    group = click.Group("backupctl")
    command = click.Command("backup")
    with click.Context(group) as parent, click.Context(command, parent=parent) as context:
        assert CliEvents(0, console=console).interactive
        context.params["as_json"] = True
        assert not CliEvents(0, console=console).interactive
        context.params["as_json"] = False
        parent.params["log_json"] = True
        assert not CliEvents(0, console=console).interactive


def test_terminal_log_lines_name_warnings_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(0)
    log = logging.getLogger("backupctl")
    log.info("plain")
    log.warning("careful")
    err = capsys.readouterr().err
    # stderr is not a terminal under pytest: timestamped lines with the level.
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} INFO plain$", err, re.MULTILINE)
    assert re.search(r" WARNING careful$", err, re.MULTILINE)


def test_quiet_logs_only_errors(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(-1)
    log = logging.getLogger("backupctl")
    log.info("hidden")
    log.warning("hidden too")
    log.error("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "ERROR shown" in err


def test_log_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    setup_logging(0, log_json=True)
    logging.getLogger("backupctl.sources.files").warning("skipping a: socket not archived")
    line = json.loads(capsys.readouterr().err)
    assert line["level"] == "warning" and line["logger"] == "backupctl.sources.files"
    assert line["message"] == "skipping a: socket not archived" and "time" in line


def test_stop_ends_rows_left_open_as_failed(display: tuple[TransferDisplay, io.StringIO, Clock]) -> None:
    shown, buffer, clock = display
    bar = shown.start("restore app-db", 8 * MiB)
    clock.now += 1
    bar.advance(MiB)
    shown.stop()  # the command ended (an error) without closing the row
    assert re.search(r"restore app-db\s+━+╸?\s+1\.0 MiB\s+1\.0 MiB/s\s+failed", text(buffer))
    assert not shown.progress.live.is_started and shown.progress.tasks == []
    bar.advance(MiB)  # a worker thread still feeding it: ignored, no error
    bar.close()


def test_the_display_stops_when_the_click_command_ends() -> None:
    console, buffer = terminal()
    with click.Context(click.Command("restore")):
        events = CliEvents(0, console=console, as_json=False, log_json=False)
        bar = events.progress("restore app-db", 8 * MiB)
        bar.advance(MiB)
        assert events._display is not None and events._display.progress.live.is_started
    # Leaving the context (before main() prints the error) stopped it.
    assert not events._display.progress.live.is_started
    assert "failed" in text(buffer)
