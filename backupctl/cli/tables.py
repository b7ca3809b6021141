"""Big tables on stdout: rich's `Table(box=None)` layout without rich's cost per cell.

rich builds, measures and wraps a Text object for every cell: a fraction of a millisecond each,
seconds for the thousands of rows that a prune plan or a snapshot listing reaches after years of
backups. When every cell is plain text (no markup, no emoji code, no control character, no
surrounding blanks) and the table fits the console, `print_table` writes the rows itself, laid
out exactly as rich would lay them out (one blank of padding on each side of every cell); the
header line still goes through rich, so it keeps its style on a terminal. Any other table is
handed to rich unchanged, so the output is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import render
from rich.table import Column, Table


def print_table(console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print `rows` under `headers` as `console.print(Table(*headers, box=None))` would."""
    widths = _widths(headers, rows)
    if widths is None or sum(widths) + 2 * len(widths) > console.width:
        table = Table(*headers, box=None)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    console.print(Table(*(Column(header, width=width) for header, width in zip(headers, widths, strict=True)),
                        box=None))  # fmt: skip
    lines = [
        "".join(f" {cell}{' ' * (width - cell_len(cell))} " for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    if lines:
        console.file.write("\n".join(lines) + "\n")
        console.file.flush()


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int] | None:
    """Each column's width (the widest cell), or None when some cell is not plain text."""
    widths = [0] * len(headers)
    for row in [headers, *rows]:
        if len(row) != len(headers):
            return None
        for index, cell in enumerate(row):
            if not _plain(cell):
                return None
            widths[index] = max(widths[index], cell_len(cell))
    return widths


def _plain(cell: str) -> bool:
    """True when rich would print `cell` as it is: nothing to interpret, wrap or strip."""
    if not cell.isprintable() or cell != cell.strip():
        return False
    if "[" in cell or ":" in cell:  # possible markup or emoji code: ask rich (rare, slower)
        try:
            return render(cell).plain == cell
        except MarkupError:
            return False  # rich raises when it prints it: leave that to rich
    return True
