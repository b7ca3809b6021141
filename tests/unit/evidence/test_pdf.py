"""The PDF worker's WeasyPrint import: its libraries found from one `ldconfig -p`, no gcc/ld."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

from backupctl.evidence import pdf

ROOT = Path(__file__).resolve().parents[3]


def test_lookup_answers_as_ctypes_ldconfig_step_and_is_undone() -> None:
    """Inside the block, find_library gives what ctypes' own ldconfig step gives (the names
    WeasyPrint resolves on Linux) and None where ctypes would go on to gcc; after it, the real
    find_library is back."""
    original = ctypes.util.find_library
    names = ["c", "gobject-2.0", "pango-1.0", "harfbuzz", "fontconfig", "pangoft2-1.0"]
    expected = {name: ctypes.util._findSoname_ldconfig(name) for name in names}  # type: ignore[attr-defined]
    assert all(expected.values()), expected  # the system libraries WeasyPrint needs are there
    with pdf._find_library_from_ldconfig():
        assert ctypes.util.find_library is not original
        assert {name: ctypes.util.find_library(name) for name in names} == expected
        assert ctypes.util.find_library("libgobject-2.0-0") is None  # a Windows name
        assert ctypes.util.find_library("harfbuzz-vector") is None  # not on bookworm
    assert ctypes.util.find_library is original


def _import_with_recording_compiler(tmp_path: Path, code: str) -> list[str]:
    """Run `code` in a fresh interpreter whose PATH starts with a `gcc`, `cc` and `ld` that log
    their arguments (and fail, as the real ones do for a library that does not exist)."""
    tools, log = tmp_path / "bin", tmp_path / "calls.log"
    tools.mkdir()
    for tool in ("gcc", "cc", "ld"):
        script = tools / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit 1\n')
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
    return log.read_text().splitlines() if log.exists() else []


def test_import_weasyprint_runs_no_compiler(tmp_path: Path) -> None:
    calls = _import_with_recording_compiler(
        tmp_path,
        "from backupctl.evidence.pdf import import_weasyprint\n"
        "import_weasyprint()\n"
        "from weasyprint.text import ffi\n"
        "assert ffi.pango is not None and ffi.harfbuzz is not None\n",
    )
    assert calls == []


def test_plain_import_runs_the_compiler(tmp_path: Path) -> None:
    """What the test above guards against: WeasyPrint's own import asks gcc/ld for names that
    ldconfig does not know."""
    calls = _import_with_recording_compiler(tmp_path, "import weasyprint\n")
    assert any(call.startswith("gcc ") and "-llibgobject-2.0-0" in call for call in calls), calls
