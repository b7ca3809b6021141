"""A real PostgreSQL 15 whose archive_command is the shell line of `wal archive-command`, with the
asynchronous archiver running: segments the archiver acked are answered by `sh` + `stat` alone,
the others by `wal push --spool`, and the archive is a continuous, verified chain."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.pitr import spool as spool_lib
from backupctl.pitr.archive_command import archive_command, conf_literal
from tests.integration.pitr.conftest import POLICY, SOURCE, PitrSetup, archiving_cluster


def _record_calls(setup: PitrSetup) -> None:
    """The full push, recorded: which segments archive_command could not answer by itself."""
    recorder = setup.root / "recorded" / "backupctl"
    recorder.parent.mkdir()
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {setup.root / "calls"}\nexec {setup.wrapper} "$@"\n')
    recorder.chmod(0o755)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (recorder.parent, recorder):
            os.chown(path, owner.pw_uid, owner.pw_gid)


@pytest.fixture(scope="module")
def paused_cluster() -> Iterator[tuple[PitrSetup, Path]]:
    """A server with archive_mode = on and an empty archive_command (PostgreSQL keeps the
    `.ready` backlog until one is set), and a policy with an archiver whose spool has a space."""
    with archiving_cluster(
        "backupctl-walline-",
        spool="spool dir",
        settings={"archive_command": ""},
        before_start=_record_calls,
    ) as setup:
        assert setup.spool is not None
        yield setup, setup.spool


def _archiver(setup: PitrSetup) -> subprocess.Popen[str]:
    argv = [str(setup.wrapper), "wal", "archiver", POLICY, "--source", SOURCE]
    argv += ["--pgdata", str(setup.cluster.data_dir)]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.Popen(
        argv, env={**os.environ, **setup.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _stop(process: subprocess.Popen[str]) -> str:
    pgrep = ["pgrep", "-P", str(process.pid)]
    children = subprocess.run(pgrep, capture_output=True, text=True).stdout.split()
    for pid in children or [str(process.pid)]:
        os.kill(int(pid), signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def _wait(condition: object, what: str, timeout: float = 60) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_shell_line_answers_acked_segments_and_falls_back_for_the_rest(
    paused_cluster: tuple[PitrSetup, Path],
) -> None:
    setup, spool = paused_cluster
    root = setup.root
    calls = root / "calls"
    acks = Path(spool_lib.acks_dir(spool, POLICY, SOURCE))
    archiver = _archiver(setup)
    try:
        with setup.connect() as connection:
            names = []
            for _ in range(3):  # a backlog: PostgreSQL has no archive_command yet
                connection.execute("SELECT txid_current()")
                names.append(connection.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])  # type: ignore[index]
            _wait(lambda: all((acks / f"{n}.ack").exists() for n in names), "the archiver's acks")
            for name in names:  # each ack carries the identity of the file in pg_wal
                second = (acks / f"{name}.ack").read_text().splitlines()[1]
                info = os.stat(setup.cluster.data_dir / "pg_wal" / name)
                assert second == f"identity {spool_lib.identity_of(info)}"
            line = archive_command(POLICY, SOURCE, str(spool), program=str(root / "recorded" / "backupctl"),
                                   stat=shutil.which("stat") or "stat")  # fmt: skip
            connection.execute(f"ALTER SYSTEM SET archive_command = {conf_literal(line)}")
            connection.execute("SELECT pg_reload_conf()")

            def archived(name: str) -> bool:
                row = connection.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
                return row is not None and row[0] is not None and row[0] >= name

            _wait(lambda: archived(names[-1]), f"PostgreSQL to archive {names[-1]}")
            # every segment of the backlog was acked: not one Python start for them
            assert not calls.exists() or calls.read_text() == ""
            out = _stop(archiver)
            # no archiver, no ack: the line goes on to `wal push --spool`, which pushes it itself
            connection.execute("SELECT txid_current()")
            last = connection.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
            _wait(lambda: archived(last), f"PostgreSQL to archive {last}")
            failed = connection.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
            assert failed is not None and failed[0] == 0
    finally:
        if archiver.poll() is None:
            _stop(archiver)
    assert calls.read_text().splitlines() == [
        f"wal push {POLICY} --source {SOURCE} --spool {spool} pg_wal/{last} {last}"
    ], out
    verified = setup.run("wal", "verify", POLICY, "--source", SOURCE)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    findings = json.loads(setup.run("doctor", POLICY, "--json").stdout)["findings"]
    shown = {f["detail"]: f["level"] for f in findings if f["check"].startswith(f"{POLICY}/{SOURCE}: pitr")}
    assert shown[f"archive_command reads the archiver's spool {spool}"] == "ok", shown
    assert shown[f"the spool {spool} is private to postgres"] == "ok", shown
    assert [detail for detail in shown if detail.startswith("archive_command = ")] == [
        f"archive_command = {line}"]  # fmt: skip
