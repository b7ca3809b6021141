"""The evidence bundle's PDF: WeasyPrint lays out the report's HTML in a forked worker.

`evidence export` forks the worker first, before it imports the catalog, policy and document
modules (this module imports none of them), and tells it to import WeasyPrint only once the
ledger audit's process has ended: the three processes' peaks no longer add up (the export's
whole process tree peaked at 275-290 MB PSS with a worker forked from the loaded parent that
imported WeasyPrint at once; docs/evidence.md "Performance").

WeasyPrint finds Pango and its companions by trying several names per library with cffi's
`dlopen`, which falls back to `ctypes.util.find_library` for each name that is not a file name;
on Linux that runs `ldconfig -p` and, for a name ldconfig does not know, `gcc` and `ld`: 16 gcc
and 22 ldconfig runs per import on Debian bookworm with gcc installed (Windows and macOS names
such as `libgobject-2.0-0`, and HarfBuzz's optional vector library, which bookworm lacks).
`import_weasyprint` answers those lookups from one `ldconfig -p` instead.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        import_weasyprint()
        message = inbox()
    html, path = message
    write_pdf(html, Path(path))


def write_pdf(html: str, path: Path) -> None:
    """The same HTML as a PDF a person can print and sign (WeasyPrint, through Pango)."""
    # Imported here: WeasyPrint takes about a second to import, paid only by an export.
    import_weasyprint()
    from weasyprint import HTML

    HTML(string=html).write_pdf(str(path))


def import_weasyprint() -> None:
    """Import WeasyPrint with its libraries found from one `ldconfig -p` (the first thing
    `find_library` tries) instead of one ldconfig, gcc and ld run per candidate name: the import
    0.41-0.47 -> 0.25-0.30 s wall at load ~2.5 on the reference VM. Should that not find a library
    WeasyPrint needs (it raises OSError), the import is retried with the real `find_library`."""
    if "weasyprint" in sys.modules:
        return
    try:
        with _find_library_from_ldconfig():
            importlib.import_module("weasyprint")
    except OSError:
        importlib.import_module("weasyprint")  # every lookup as ctypes does it, gcc included


# ctypes.util's own table (_findSoname_ldconfig): the ABI tag ldconfig -p prints for this
# interpreter's libraries, e.g. "libgobject-2.0.so.0 (libc6,x86-64) => /usr/lib/...".
_LDCONFIG_ABI = {
    "x86_64-64": "libc6,x86-64",
    "ppc64-64": "libc6,64bit",
    "sparc64-64": "libc6,64bit",
    "s390x-64": "libc6,64bit",
    "ia64-64": "libc6,IA-64",
}


@contextmanager
def _find_library_from_ldconfig() -> Iterator[None]:
    """`ctypes.util.find_library` answered from one `ldconfig -p` while the block runs: the same
    answer as its first step (the same regular expression), without its gcc/ld fallback, which
    finds nothing ldconfig did not for the libraries WeasyPrint loads from the system."""
    try:
        listing = subprocess.run(
            ["/sbin/ldconfig", "-p"], capture_output=True, check=True, env={"LC_ALL": "C", "LANG": "C"}
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        yield  # no ldconfig (e.g. musl): find_library as it is
        return
    machine = f"{os.uname().machine}-{struct.calcsize('l') * 8}"
    abi = _LDCONFIG_ABI.get(machine, "libc6")

    def find_library(name: str) -> str | None:
        pattern = rf"\s+(lib{re.escape(name)}\.[^\s]+)\s+\({abi}"
        found = re.search(os.fsencode(pattern), listing)
        return os.fsdecode(found.group(1)) if found else None

    original = ctypes.util.find_library
    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original
