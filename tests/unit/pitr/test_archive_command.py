"""archive_command's shell line, run through `sh -c` as PostgreSQL 15 runs it (%p, %f and %%
substituted): exit 0 only for an acked, unchanged file, without starting Python; everything else
goes on to `backupctl wal push --spool`."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from backupctl.pitr import archive_command as ac
from backupctl.pitr import spool

NAME = "000000010000000000000003"
POLICY, SOURCE = "shop", "main db"  # a space in the source and the spool: quoting


class Server:
    """A data directory with one finished segment, a private spool and a stand-in for the full
    push (a real executable that records its arguments and exits 3, as a failing push would)."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data dir"
        (self.data / "pg_wal").mkdir(parents=True)
        self.segment = self.data / "pg_wal" / NAME
        self.segment.write_bytes(os.urandom(1 << 16))
        self.spool = tmp / "spool 100%"  # a '%' must reach sh as one '%'
        spool.prepare(self.spool, POLICY, SOURCE)
        self.calls = tmp / "calls"
        self.program = tmp / "bin" / "backupctl"
        self.program.parent.mkdir()
        self.program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{self.calls}"\nexit 3\n')
        self.program.chmod(0o755)
        self.line = ac.archive_command(POLICY, SOURCE, str(self.spool), program=str(self.program))

    def ack(self, identity: str | None) -> None:
        ack = spool.Ack(NAME, "blake3:00", self.segment.stat().st_size, ("nas:0",), time.time(), identity)
        spool.write_ack(self.spool, POLICY, SOURCE, ack)

    def stable_identity(self) -> str:
        time.sleep(spool.TICK_NS / 1e9 * 1.5)  # older than a clock tick (spool.stable_identity)
        started = time.time_ns()
        before = os.stat(self.segment)
        identity = spool.stable_identity(before, os.stat(self.segment), started)
        assert identity is not None
        return identity

    def command(self) -> list[str]:
        # PostgreSQL: system() of the substituted line, in the data directory, %p relative to it
        return ["/bin/sh", "-c", ac.substitute(self.line, f"pg_wal/{NAME}", NAME)]

    def run(self) -> subprocess.CompletedProcess[str]:
        # no python and no backupctl on PATH: an exit 0 here cannot come from the Python fast path
        return subprocess.run(
            self.command(), cwd=self.data, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
        )

    def pushed(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_an_acked_unchanged_file_exits_0_with_sh_and_stat_only(server: Server, tmp_path: Path) -> None:
    server.ack(server.stable_identity())
    done = server.run()
    assert (done.returncode, done.stderr, server.pushed()) == (0, "", [])
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: the process count is not checked")  # CI installs it
    trace = tmp_path / "trace"
    subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), *server.command()],
        cwd=server.data, env={"PATH": "/usr/bin:/bin"}, check=True,
    )  # fmt: skip
    programs = [line.split('"')[1] for line in trace.read_text().splitlines() if "execve(" in line]
    assert [os.path.basename(p) for p in programs] == ["sh", "stat"]


def test_no_ack_or_an_ack_without_identity_goes_on_to_the_full_push(server: Server) -> None:
    assert server.run().returncode == 3
    server.ack(None)  # the file changed while the archiver read it: no identity recorded
    assert server.run().returncode == 3
    assert server.pushed() == ["wal", "push", POLICY, "--source", SOURCE, "--spool", str(server.spool),
                               f"pg_wal/{NAME}", NAME] * 2  # fmt: skip


def test_a_file_rewritten_in_place_with_its_mtime_put_back_is_pushed(server: Server) -> None:
    server.ack(server.stable_identity())
    before = server.segment.stat()
    data = bytearray(server.segment.read_bytes())
    data[100] ^= 1
    server.segment.write_bytes(bytes(data))  # same inode, same size
    os.utime(server.segment, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = server.segment.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)  # fmt: skip
    assert server.run().returncode == 3


def test_a_recycled_segment_is_pushed(server: Server) -> None:
    """PostgreSQL recycles an old segment by renaming it to a future name and overwriting it: an
    ack of another file under that name, or of this inode before its rename, is not this file."""
    server.ack(server.stable_identity())
    other = server.data / "pg_wal" / "000000010000000000000009"
    os.rename(server.segment, other)  # recycled: the inode lives on under another name
    server.segment.write_bytes(other.read_bytes())  # and another inode, same content, takes NAME
    assert server.run().returncode == 3
    server.segment.unlink()
    os.rename(other, server.segment)  # the acked inode back under its name: a rename sets ctime
    assert server.run().returncode == 3


def test_a_spool_that_is_not_private_is_not_trusted(server: Server) -> None:
    server.ack(server.stable_identity())
    acks = Path(spool.acks_dir(server.spool, POLICY, SOURCE))
    for directory in (server.spool, acks):
        directory.chmod(0o770)
        assert server.run().returncode == 3
        directory.chmod(0o700)
    assert server.run().returncode == 0


def test_sigterm_while_the_shell_line_runs_exits_1(server: Server) -> None:
    server.ack(server.stable_identity())
    ack = Path(spool.ack_path(server.spool, POLICY, SOURCE, NAME))
    ack.unlink()
    os.mkfifo(ack)  # the shell blocks opening it: a moment to deliver the signal
    for signum in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen(server.command(), cwd=server.data, env={"PATH": "/usr/bin:/bin"})
        time.sleep(0.3)
        assert process.poll() is None
        process.send_signal(signum)
        assert process.wait(timeout=10) == 1
    assert stat.S_ISFIFO(ack.stat().st_mode) and server.pushed() == []


def test_parse_finds_the_push_in_every_form() -> None:
    shell = ac.parse(ac.archive_command("shop", "db", "/srv/pg spool"))
    assert shell is not None and (shell.policy, shell.source, shell.spool, shell.fast) == (
        "shop", "db", "/srv/pg spool", True)  # fmt: skip
    plain = ac.parse("backupctl wal push shop --source db %p %f")
    assert plain is not None and (plain.policy, plain.source, plain.spool) == ("shop", "db", None)
    assert not plain.fast
    spooled = ac.parse("/usr/local/bin/backupctl -q wal push shop --source=db --spool /srv/s %p %f")
    assert spooled is not None and (spooled.spool, spooled.fast) == ("/srv/s", False)
    assert ac.parse("cp %p /mnt/archive/%f") is None
    assert ac.parse("backupctl wal fetch shop --source db %f %p") is None
    assert ac.conf_literal("trap 'exit 1' INT") == "'trap ''exit 1'' INT'"
