"""`wal push --spool`'s fast path: which command lines it answers, and what it loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from backupctl.cli.fastpath import parse_push


def test_the_archive_command_with_a_spool_is_recognised_with_global_options_anywhere() -> None:
    argv = ["--state-dir", "/s", "wal", "push", "shop", "--source=db", "--spool", "/sp", "pg_wal/X", "X"]
    assert parse_push(argv) == ("shop", "db", Path("/sp"), Path("pg_wal/X"), "X")
    assert parse_push(["wal", "push", "shop", "--source", "db", "--spool", "/sp", "pg_wal/Y"]) == (
        "shop",
        "db",
        Path("/sp"),
        Path("pg_wal/Y"),
        "Y",
    )


def test_anything_else_goes_to_the_full_cli() -> None:
    assert parse_push(["wal", "push", "shop", "--source", "db", "p", "n"]) is None  # no spool
    assert parse_push(["wal", "push", "shop", "--source", "db", "--spool", "/s", "p", "n", "--help"]) is None
    assert parse_push(["wal", "fetch", "shop", "--source", "db", "--spool", "/s", "n", "p"]) is None
    assert parse_push(["--json", "wal", "push", "shop", "--source", "db", "--spool", "/s", "p"]) is None
    assert parse_push(["wal", "push", "--source", "db", "--spool", "/s"]) is None


def test_the_fast_path_loads_neither_click_nor_pydantic_nor_boto3(tmp_path: Path) -> None:
    code = (
        "import sys; from backupctl.cli.fastpath import fast_push; "
        f"fast_push(['wal', 'push', 'shop', '--source', 'db', '--spool', {str(tmp_path)!r}, 'p', 'n']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'pydantic', 'boto3', 'yaml')))"
    )
    tmp_path.chmod(0o700)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
