"""`print_table` prints exactly what rich's `Table(box=None)` prints, fast path or not."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
from rich.console import Console
from rich.table import Table

from backupctl.cli import tables
from backupctl.cli.tables import print_table

HEADERS = ("snapshot", "action", "why")
ROWS = [
    ("20261121T134512Z-3f9a1c", "keep", "newest, last 1, daily 2026-11-21, weekly 2026-W47"),
    ("20261120T020000Z-0a1b2c", "retained-by-lock", "locked until 2026-12-01T00:00:00+00:00"),
    ("20261119T020000Z-0a1b2d", "keep", "only copy (wanted by nas: daily 2026-11-19)"),
    ("20261118T020000Z-0a1b2e", "remove", "no rule keeps it"),
    ("20261117T020000Z-0a1b2f", "FAILED", "[Errno 13] Permission denied: '/backups/x'"),
    ("20261116T020000Z-0a1b30", "keep", "日本語 wide, é accented"),
]


def _render(rows: Sequence[Sequence[str]], *, width: int, terminal: bool, fast: bool) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, force_terminal=terminal, no_color=True, highlight=False, soft_wrap=True
    )
    if fast:
        print_table(console, HEADERS, rows)
    else:
        table = Table(*HEADERS, box=None)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    return buffer.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
@pytest.mark.parametrize("width", [40, 80, 240])
@pytest.mark.parametrize(
    "rows",
    [ROWS, ROWS[:1], [], [row for row in ROWS if "[" not in row[2]], [("a", "b", "[bold]x[/bold]")]],
)
def test_same_output_as_rich(rows: list[tuple[str, str, str]], width: int, terminal: bool) -> None:
    assert _render(rows, width=width, terminal=terminal, fast=True) == _render(
        rows, width=width, terminal=terminal, fast=False
    )


def test_plain_cells_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = [row for row in ROWS if "[" not in row[2]]
    assert tables._widths(HEADERS, plain) is not None
    assert tables._widths(HEADERS, [("a", "b", "[bold]x[/bold]")]) is None  # markup: rich decides
    assert tables._widths(HEADERS, [("a", "b", "two\nlines")]) is None
    assert tables._widths(HEADERS, [("a", "b", "c :smile: d")]) is None  # an emoji code
    assert tables._widths(HEADERS, [("a", "b", "[/nothing open]")]) is None  # rich would raise
