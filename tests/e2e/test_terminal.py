"""The CLI at a terminal and under cron: stderr on a real pseudo-terminal, or on a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
from contextlib import closing
from pathlib import Path

import pytest

from tests.fixtures.core import Workspace

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def app(workspace: Workspace, tmp_path: Path) -> Workspace:
    database = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
        connection.executemany(
            "INSERT INTO blobs (body) VALUES (?)", [(os.urandom(2000),) for _ in range(3000)]
        )
        connection.commit()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for index in range(8):
        (uploads / f"clip{index}.bin").write_bytes(os.urandom(1 << 20))
    workspace.write_policy(
        "app",
        workspace.base_policy(
            "app",
            [
                {"name": "app-db", "type": "sqlite", "path": str(database)},
                {"name": "uploads", "type": "files", "path": str(uploads)},
            ],
        ),
    )
    return workspace


def run_at_terminal(space: Workspace, *args: str) -> tuple[int, str, str]:
    """Run `backupctl ARGS` with stderr on a 120x40 pseudo-terminal: (exit code, stdout, screen bytes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, **space.env, "TERM": "xterm-256color"}
    env.pop("FORCE_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "backupctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = process.stdout.read().decode() if process.stdout else ""
    code = process.wait(timeout=120)
    os.close(master)
    return code, stdout, b"".join(chunks).decode("utf-8", "replace")


def test_bars_on_a_terminal(app: Workspace) -> None:
    code, stdout, screen = run_at_terminal(app, "backup", "app")
    assert code == 0, screen
    assert "snapshot" in stdout and "━" not in stdout  # stdout carries only the result
    lines = ANSI.sub("", screen.replace("\r", "\n")).splitlines()
    # The final row of each transfer, with its size, average rate and elapsed time.
    for source in ("app-db", "uploads"):
        assert any(
            re.search(rf"{source} → local\s+━+\s+\d+\.\d MiB\s+[\d.]+ [KMG]iB/s\s+done\s+0:00:\d\d", line)
            for line in lines
        ), screen
    # Log lines at a terminal: no timestamps, and printed between the bars, not over them.
    assert any(re.fullmatch(r"source uploads: \d+ bytes → \d+ stored .*", line) for line in lines)
    assert not any(re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines)
    # The cursor is hidden while bars are live and shown again after each time.
    assert screen.count("\x1b[?25l") >= 1 and screen.rfind("\x1b[?25h") > screen.rfind("\x1b[?25l")


@pytest.mark.parametrize(
    "flags", [["-q", "backup", "app"], ["--log-json", "backup", "app"], ["backup", "app", "--json"]]
)
def test_no_bars_at_a_terminal_with_quiet_or_json(app: Workspace, flags: list[str]) -> None:
    code, _, screen = run_at_terminal(app, *flags)
    assert code == 0, screen
    assert "━" not in screen and "\x1b[?25l" not in screen
    if flags[0] == "-q":
        assert screen == ""  # errors only, and there were none


def test_plain_timestamped_lines_under_cron(app: Workspace) -> None:
    done = app.run("backup", "app")  # stdout and stderr are pipes, as under cron
    assert done.returncode == 0, done.stderr
    assert "━" not in done.stderr and "\x1b[" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (INFO|WARNING) ", line) for line in lines
    )
    assert sum("bytes →" in line for line in lines) == 2  # one line per finished transfer


def test_quiet_prints_nothing_on_success_and_only_the_error_on_failure(app: Workspace) -> None:
    """`-q` under cron: a successful run mails nothing; a failed one mails the error alone."""
    done = app.run("-q", "backup", "app")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    snapshot = app.run_json("snapshots", "app")[0]["id"]
    for args in (("verify", "app", snapshot), ("prune", "app", "--dry-run"), ("replicate", "app")):
        done = app.run("-q", *args)
        assert done.returncode == 0 and done.stdout == "" and done.stderr == "", (args, done)
    broken = app.root / "backups" / "app" / snapshot
    artifact = next(broken.glob("app-db.*"))
    artifact.write_bytes(artifact.read_bytes()[:-10])  # truncated
    done = app.run("-q", "verify", "app", snapshot)
    assert done.returncode == 1 and done.stdout == ""
    assert "app-db" in done.stderr and "truncated" in done.stderr, done.stderr
