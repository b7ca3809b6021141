"""`wal push --spool`'s fast path: which command lines it answers, and what it loads."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from backupctl.cli.fastpath import parse_push


def test_the_archive_command_with_a_spool_is_recognised_with_global_options_anywhere() -> None:
    argv = ["--state-dir", "/s", "wal", "push", "shop", "--source=db", "--spool", "/sp", "pg_wal/X", "X"]
    assert parse_push(argv) == ("shop", "db", "/sp", "pg_wal/X", "X")
    assert parse_push(["wal", "push", "shop", "--source", "db", "--spool", "/sp", "pg_wal/Y"]) == (
        "shop",
        "db",
        "/sp",
        "pg_wal/Y",
        "Y",
    )


def test_anything_else_goes_to_the_full_cli() -> None:
    assert parse_push(["wal", "push", "shop", "--source", "db", "p", "n"]) is None  # no spool
    assert parse_push(["wal", "push", "shop", "--source", "db", "--spool", "/s", "p", "n", "--help"]) is None
    assert parse_push(["wal", "fetch", "shop", "--source", "db", "--spool", "/s", "n", "p"]) is None
    assert parse_push(["--json", "wal", "push", "shop", "--source", "db", "--spool", "/s", "p"]) is None
    assert parse_push(["wal", "push", "--source", "db", "--spool", "/s"]) is None


def test_an_acked_push_loads_nothing_but_the_standard_library_core_and_blake3(tmp_path: Path) -> None:
    """Measured with `python -S -X importtime`: pathlib, json, typing, dataclasses and signal each
    cost the fast path more than hashing the segment; click, pydantic and boto3 far more."""
    from backupctl.pitr import spool

    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(b"x" * 100_000)
    spool.prepare(tmp_path / "spool", "shop", "db")
    digest, size = spool.plain_digest(segment)
    spool.write_ack(tmp_path / "spool", "shop", "db", spool.Ack(segment.name, digest, size, ("nas",), 0.0))
    heavy = (
        "click",
        "pydantic",
        "boto3",
        "yaml",
        "pathlib",
        "json",
        "typing",
        "dataclasses",
        "signal",
        "enum",
    )
    code = (
        "import sys; from backupctl.cli.fastpath import fast_push; "
        f"ok = fast_push(['wal', 'push', 'shop', '--source', 'db', '--spool', {str(tmp_path / 'spool')!r}, "
        f"{str(segment)!r}]); "
        f"print(ok, sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    path = os.pathsep.join([str(Path(__file__).resolve().parents[3]), sysconfig.get_paths()["purelib"]])
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": path},
    )
    assert result.stdout.strip() == "True []"
