"""The evidence bundle's PDF: WeasyPrint lays out the report's HTML in a forked worker.

`evidence export` forks the worker first, before it imports the catalog, policy and document
modules (this module imports none of them), and tells it to import WeasyPrint only once the
ledger audit's process has ended: the three processes' peaks no longer add up (the export's
whole process tree peaked at 275-290 MB PSS with a worker forked from the loaded parent that
imported WeasyPrint at once; docs/evidence.md "Performance").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from backupctl.core.forked import Forked

_PREPARE = "prepare"


class PdfWorker:
    """A forked process that renders one HTML document to a PDF file. Use as a context manager
    (leaving it without `result()` kills the worker)."""

    def __init__(self) -> None:
        self._child: Forked[None] = Forked(_work)
        self._prepared = False

    def prepare(self) -> None:
        """Import WeasyPrint now (about a second: it runs gcc/ld to find Pango), ahead of
        `render`; once."""
        if not self._prepared:
            self._child.send(_PREPARE)
            self._prepared = True

    def render(self, html: str, path: Path) -> None:
        """Start laying out `html` into `path` (`result()` waits for it)."""
        self.prepare()
        self._child.send((html, str(path)))

    def result(self) -> None:
        """Wait for the PDF; raises ChildFailed with the worker's error."""
        self._child.result()

    def __enter__(self) -> PdfWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._child.kill()


def _work(inbox: Callable[[], Any]) -> None:
    message = inbox()
    if message == _PREPARE:
        from weasyprint import HTML  # noqa: F401 - imported ahead, used by write_pdf

        message = inbox()
    html, path = message
    write_pdf(html, Path(path))


def write_pdf(html: str, path: Path) -> None:
    """The same HTML as a PDF a person can print and sign (WeasyPrint, through Pango)."""
    # Imported here: WeasyPrint takes about a second to import, paid only by an export.
    from weasyprint import HTML

    HTML(string=html).write_pdf(str(path))
