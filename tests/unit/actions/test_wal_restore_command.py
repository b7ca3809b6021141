"""The restored server's restore_command (actions.wal_restore): answered by the shell from the
prefetch spool and its absent markers, backupctl started only for anything else. The command
runs for real through `sh -c`, with PostgreSQL's %f / %p substituted as the server does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from backupctl.actions.wal_restore import (
    ABSENT,
    RestorePlan,
    RestoreRequest,
    absent_names,
    mark_absent,
    spooled_restore_command,
)
from backupctl.pitr.postgres_base import BaseBackup

LAST = "000000010000000000000007"


def _run(command: str, name: str, destination: Path) -> int:
    line = command.replace("%f", name).replace("%p", str(destination))
    return subprocess.run(["sh", "-c", line], check=False).returncode


def _plan(timeline: int = 1, last: str | None = LAST) -> RestorePlan:
    first = "000000010000000000000002"
    base = BaseBackup(
        "b1", "shop", "db", "t0", "t1", "0/2000028", "0/2000100", timeline, first, first, 1, "d", 1, "s", "h"
    )
    return RestorePlan("shop", "db", "nas", base, "000000010000000000000002", last, None, {}, "/x")


def _request(latest: bool) -> RestoreRequest:
    return RestoreRequest(policy=None, source="db", to_dir=Path("/x"), command=[], latest=latest)  # type: ignore[arg-type]


def test_the_shell_moves_copies_refuses_or_falls_back(tmp_path: Path) -> None:
    spool, pg_wal = tmp_path / "spool", tmp_path / "pg_wal"
    pg_wal.mkdir()
    spool.mkdir()
    fallback = tmp_path / "fallback.log"
    command = spooled_restore_command(spool, f"echo %f >> {fallback}; exit 1", keep=LAST)
    for name in ("000000010000000000000006", LAST, "00000002.history"):
        (spool / name).write_bytes(name.encode())
    mark_absent(spool, ["00000003.history", "000000010000000000000008"])
    # a prefetched segment is moved: PostgreSQL gets it, the spool no longer holds it
    assert _run(command, "000000010000000000000006", pg_wal / "RECOVERYXLOG") == 0
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == b"000000010000000000000006"
    assert not (spool / "000000010000000000000006").exists()
    # history files and the plan's last segment are copied: asked for twice, served twice
    for name in ("00000002.history", LAST):
        for _ in range(2):
            assert _run(command, name, pg_wal / "RECOVERYTMP") == 0
            assert (pg_wal / "RECOVERYTMP").read_bytes() == name.encode()
    # absent markers answer "not archived" without running backupctl
    assert _run(command, "00000003.history", pg_wal / "X") == 1
    assert _run(command, "000000010000000000000008", pg_wal / "X") == 1
    assert not (pg_wal / "X").exists() and not fallback.exists()
    # anything else goes to `backupctl wal fetch` (here: a logging stand-in that says "missing")
    assert _run(command, "000000010000000000000009", pg_wal / "X") == 1
    assert fallback.read_text() == "000000010000000000000009\n"
    assert {path.name for path in (spool / ABSENT).iterdir()} == {
        "00000003.history",
        "000000010000000000000008",
    }


def test_absent_names_are_the_history_probes_and_with_latest_the_end_of_the_archive() -> None:
    fetched = ["000000010000000000000002", LAST]
    assert absent_names(fetched, _plan(), _request(latest=False)) == ["00000001.history", "00000002.history"]
    assert absent_names(fetched, _plan(), _request(latest=True)) == [
        "00000001.history",
        "00000002.history",
        "000000010000000000000008",
    ]
    # an archived history (a promoted restore's timeline 2) is never marked absent; the probes go on
    on_two = ["00000002.history", "000000020000000000000009"]
    names = absent_names(on_two, _plan(timeline=1, last="000000020000000000000009"), _request(latest=True))
    assert names == ["00000001.history", "00000003.history", "00000002000000000000000A"]
