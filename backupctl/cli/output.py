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

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import click

from backupctl.actions.events import LoggedProgress, NoProgress, ProgressHandle
from backupctl.cli import live_console
from backupctl.core.secrets import mask
from backupctl.core.units import human_bytes as human_bytes  # re-exported for the commands

# rich is imported where it is used, never here: it costs ~30 ms of every command's start-up,
# and most runs (cron, --json, --help) draw no bars. The progress display lives in `live`.
if TYPE_CHECKING:
    from rich.console import Console

    from backupctl.cli.live import TransferDisplay

log = logging.getLogger("backupctl")

# The Console of the progress display while it is live (cli/live_console.py): log records are
# printed through it.


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))  # https://no-color.org: set and not empty


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, no_color=_no_color(), highlight=False)


def stdout_console() -> Console:
    # Off a terminal (pipes, cron mail) rich would squeeze tables into 80 columns: don't.
    from rich.console import Console

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
        console = live_console.current()
        if console is None:
            super().emit(record)
            return
        try:
            from rich.text import Text

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
                "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                **getattr(record, "json_fields", {}),
            }
        )


# Whether this process has printed its --json result (main() then prints no error object).
json_printed = False


def print_json(data: Any) -> None:
    """Print a command's `--json` result: versioned and with RFC 3339 UTC times (docs/json.md)."""
    from backupctl.cli.contract import current_command_path, versioned

    global json_printed
    json_printed = True
    document = versioned(data, current_command_path())
    sys.stdout.write(json.dumps(document, indent=2, default=str, sort_keys=False) + "\n")


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
            from backupctl.cli.live import TransferDisplay  # rich: only once bars are drawn

            self._display = TransferDisplay(self._console or stderr_console())
            context = click.get_current_context(silent=True)
            if context is not None:
                # Before main() prints the error of a failed command: a row left open (a
                # transfer whose caller did not close it on the way out) must not tear it.
                context.call_on_close(self._display.stop)
        return self._display.start(label, total)
