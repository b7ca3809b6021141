"""Which Console log lines go through: the progress display's while it is live, else none
(stderr). Its own module so that the display (`live`) and the log handler (`output`) share it
without importing each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_live_console: Console | None = None


def current() -> Console | None:
    """The live display's Console, or None when no display is live."""
    return _live_console


def started(console: Console) -> None:
    """Called by the progress display when it goes live: log lines go through its Console."""
    global _live_console
    _live_console = console


def stopped(console: Console) -> None:
    """Called by the progress display when it stops: log lines go to stderr again."""
    global _live_console
    if _live_console is console:
        _live_console = None
