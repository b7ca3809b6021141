"""The asynchronous archiver (`wal archiver`) and `wal push --spool`'s fast path, with real WAL
segments of PostgreSQL 15 and real targets.

Most tests hand the archiver a data directory of their own (`pg_wal/` with real segments and
their `.ready` files) so that the server's own archive_command does not race with them; the last
one runs the archiver beside a real server whose archive_command is `wal push --spool`.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from backupctl.pitr import spool as spool_lib
from tests.fixtures.s3 import MotoServer, new_bucket_name
from tests.integration.pitr.conftest import POLICY, SOURCE, PitrSetup, archiving_cluster

ASYNC = "shopasync"


def _owned(setup: PitrSetup, path: Path) -> None:
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for directory, _, files in os.walk(path):
            os.chown(directory, owner.pw_uid, owner.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), owner.pw_uid, owner.pw_gid)


def _async_policy(setup: PitrSetup, name: str, spool: Path, target: dict[str, object]) -> None:
    policy = yaml.safe_load((setup.policies / f"{POLICY}.yaml").read_text())
    policy["name"] = name
    policy["targets"] = [target]
    policy["sources"][0]["pitr"]["archiver"] = {"spool": str(spool), "workers": 2}
    (setup.policies / f"{name}.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))


def _segments(setup: PitrSetup, count: int) -> list[tuple[str, bytes]]:
    """`count` real segments of the server (archived by it, fetched back: as PostgreSQL hands them)."""
    found = []
    for _ in range(count):
        name = setup.switch_and_wait()
        copy = setup.scratch() / name
        done = setup.run("wal", "fetch", POLICY, "--source", SOURCE, name, str(copy), "--prefetch", "1")
        assert done.returncode == 0, done.stderr
        found.append((name, copy.read_bytes()))
    return found


class Async:
    """A fresh local archive, spool and data directory holding `.ready` segments."""

    def __init__(self, setup: PitrSetup, segments: list[tuple[str, bytes]], policy: str = ASYNC) -> None:
        self.setup = setup
        self.policy = policy
        base = setup.scratch()
        self.spool = base / "spool"
        self.target = base / "archive"
        self.pgdata = base / "pgdata"
        status = self.pgdata / "pg_wal" / "archive_status"
        status.mkdir(parents=True)
        self.target.mkdir()
        for name, data in segments:
            (self.pgdata / "pg_wal" / name).write_bytes(data)
            (status / f"{name}.ready").touch()
        _owned(setup, base)
        self.names = [name for name, _ in segments]

    def local_policy(self) -> Async:
        _async_policy(
            self.setup, self.policy, self.spool, {"name": "nas", "type": "local", "path": str(self.target)}
        )
        return self

    def wal(self, name: str) -> Path:
        return self.pgdata / "pg_wal" / name

    def ack(self, name: str) -> Path:
        return self.spool / self.policy / SOURCE / "acks" / f"{name}.ack"

    def archiver(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.setup.run(
            "wal", "archiver", self.policy, "--source", SOURCE, "--pgdata", str(self.pgdata), *extra
        )

    def push(self, name: str, *options: str) -> subprocess.CompletedProcess[str]:
        args = [*options, "wal", "push", self.policy, "--source", SOURCE, "--spool", str(self.spool)]
        return self.setup.run(*args, str(self.wal(name)), name)

    def start_archiver(self) -> subprocess.Popen[str]:
        argv = [str(self.setup.wrapper), "wal", "archiver", self.policy, "--source", SOURCE]
        argv += ["--pgdata", str(self.pgdata)]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.Popen(
            argv,
            env={**os.environ, **self.setup.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def two_segments(pitr_cluster: PitrSetup) -> list[tuple[str, bytes]]:
    return _segments(pitr_cluster, 2)


def test_the_archiver_pushes_ready_segments_ahead_and_acknowledges_them(
    pitr_cluster: PitrSetup, two_segments: list[tuple[str, bytes]]
) -> None:
    case = Async(pitr_cluster, two_segments).local_policy()
    done = case.archiver("--once")
    assert done.returncode == 0, done.stderr
    records = case.target / ASYNC / "pitr" / SOURCE / "records"
    for name in case.names:
        assert (records / f"{name}.rec").is_file()
        lines = case.ack(name).read_text().splitlines()
        assert lines[0] == "backupctl-wal-ack 1"
        ack = dict(line.split(" ", 1) for line in lines[1:])
        record = json.loads((records / f"{name}.rec").read_bytes().split(b"\n")[0])
        assert ack["name"] == name and ack["digest"] == record["plain_digest"]
        assert ack["size"] == str(16 * 1024 * 1024) and ack["targets"].startswith("nas:")
        assert case.ack(name).stat().st_mode & 0o777 == 0o600
    for directory in (case.spool, case.ack(case.names[0]).parent):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert list(case.ack(case.names[0]).parent.glob("*.lock")) == []  # removed by their holder
    # the .ready files stay: only PostgreSQL marks a segment done
    assert all((case.pgdata / "pg_wal" / "archive_status" / f"{n}.ready").exists() for n in case.names)
    # a second run finds everything acked: nothing is pushed again
    again = case.archiver("--once")
    assert again.returncode == 0 and "0 pushed" in again.stdout, again.stdout
    # another WAL target (here: the same name, another directory): the old acks say nothing about it
    moved = case.setup.scratch()
    _async_policy(case.setup, ASYNC, case.spool, {"name": "nas", "type": "local", "path": str(moved)})
    elsewhere = case.archiver("--once")
    assert elsewhere.returncode == 0 and "2 pushed" in elsewhere.stdout, elsewhere.stdout
    assert sorted(p.name for p in (moved / ASYNC / "pitr" / SOURCE / "records").iterdir()) == [
        f"{n}.rec" for n in case.names
    ]


def test_an_acknowledged_push_exits_0_without_touching_the_target_and_only_for_the_acked_content(
    pitr_cluster: PitrSetup, two_segments: list[tuple[str, bytes]]
) -> None:
    case = Async(pitr_cluster, two_segments).local_policy()
    assert case.archiver("--once").returncode == 0
    acked, other = case.names
    case.ack(other).unlink()
    # the archive is unreachable: the policy itself cannot even be loaded
    broken = ("--policies", str(case.spool / "no-such-policies"))
    fast = case.push(acked, *broken)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout == "" and fast.stderr == ""  # answered before the CLI loaded
    slow = case.push(other, *broken)
    assert slow.returncode != 0  # no ack: the full push needs the policy
    # a different content under an acked name: never 0, the full push reports the conflict
    data = bytearray(case.wal(acked).read_bytes())
    data[200_000] ^= 0xFF
    case.wal(acked).write_bytes(bytes(data))
    assert 0 < case.push(acked, *broken).returncode < 125
    conflict = case.push(acked)
    assert 0 < conflict.returncode < 125
    assert "DIFFERENT content" in conflict.stderr
    # without the archiver's ack the segment still archives through the full push
    pushed = case.push(other)
    assert pushed.returncode == 0 and "already archived" in pushed.stdout, pushed.stderr
    assert list(case.ack(other).parent.glob("*.lock")) == []
    # the archiver applies the same rule: the changed segment is refused and never acked
    case.ack(acked).unlink()
    refused = case.archiver("--once")
    assert refused.returncode == 1 and "DIFFERENT content" in refused.stderr, refused.stderr
    assert not case.ack(acked).exists()


def test_acks_in_a_spool_others_can_write_are_ignored(
    pitr_cluster: PitrSetup, two_segments: list[tuple[str, bytes]]
) -> None:
    case = Async(pitr_cluster, two_segments[:1]).local_policy()
    assert case.archiver("--once").returncode == 0
    case.ack(case.names[0]).parent.chmod(0o777)
    broken = ("--policies", str(case.spool / "no-such-policies"))
    assert case.push(case.names[0], *broken).returncode != 0


def test_the_archiver_refuses_a_spool_that_is_not_private(
    pitr_cluster: PitrSetup, two_segments: list[tuple[str, bytes]]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs a spool owned by another user than the archiver's")
    case = Async(pitr_cluster, two_segments[:1]).local_policy()
    case.spool.mkdir(mode=0o777)
    case.spool.chmod(0o777)  # created by someone else (root here), open to all
    refused = case.archiver("--once")
    assert refused.returncode != 0 and "private" in refused.stderr, refused.stderr
    assert not case.ack(case.names[0]).exists()


def test_an_archiver_killed_mid_push_leaves_no_ack_and_wal_push_falls_back(
    pitr_cluster: PitrSetup,
    two_segments: list[tuple[str, bytes]],
    moto_server_factory: Callable[..., MotoServer],
) -> None:
    server = moto_server_factory()
    bucket = new_bucket_name("walasync")
    server.client().create_bucket(Bucket=bucket)
    case = Async(pitr_cluster, two_segments[:1], policy="shopasyncs3")
    target = {
        "name": "offsite",
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": server.url,
        "region": "us-east-1",
    }
    _async_policy(pitr_cluster, case.policy, case.spool, target)
    name = case.names[0]
    server.pause()  # the PUT hangs: the archiver is killed in the middle of the push
    try:
        process = case.start_archiver()
        deadline = time.monotonic() + 20
        lock = case.ack(name).with_suffix(".lock")
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        assert process.poll() is None, process.communicate()
        _kill_tree(process)
        process.communicate(timeout=30)
    finally:
        server.resume()
    assert not case.ack(name).exists()
    listed = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in listed if item["Key"].endswith(".rec")] == []
    done = case.push(name)  # the lock died with the archiver: the full push runs
    assert done.returncode == 0, done.stderr
    assert f"{name} archived" in done.stdout


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL the archiver itself (under runuser, the python child of the wrapper)."""
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in [*children, str(process.pid)]:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigterm_stops_the_archiver_cleanly(pitr_cluster: PitrSetup) -> None:
    case = Async(pitr_cluster, []).local_policy()
    process = case.start_archiver()
    assert process.stdout is not None
    assert "watching" in process.stdout.readline()
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in children or [str(process.pid)]:
        os.kill(int(pid), signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "archiver stopped" in out


# --------------------------------------------------------------------------- with a real server
@pytest.fixture(scope="module")
def async_cluster() -> Iterator[tuple[PitrSetup, Path]]:
    """A server whose archive_command is `wal push --spool`, its policy with an archiver."""
    with archiving_cluster("backupctl-walasync-", spool="spool") as setup:
        assert setup.spool is not None
        yield setup, setup.spool


def test_a_server_archives_through_the_archiver_and_the_fast_path(
    async_cluster: tuple[PitrSetup, Path],
) -> None:
    setup, spool = async_cluster
    argv = [
        str(setup.wrapper),
        "wal",
        "archiver",
        POLICY,
        "--source",
        SOURCE,
        "--pgdata",
        str(setup.cluster.data_dir),
    ]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    process = subprocess.Popen(
        argv, env={**os.environ, **setup.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30  # the archiver runs once it holds its lock in the spool
        while spool_lib.archiver_running(spool, POLICY, SOURCE) is None and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        names = [setup.switch_and_wait() for _ in range(3)]
        with psycopg.connect(setup.cluster.url("postgres"), password=setup.cluster.password) as connection:
            failed = connection.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
        assert failed is not None and failed[0] == 0
        # the plain `wal push --spool` line stays valid; doctor suggests the faster shell line
        assert _archiver_findings(setup) == {
            f"archive_command reads the archiver's spool {spool} from Python: each acked segment still "
            "costs an interpreter start (correct, slower than the shell line)": "WARN",
            f"the spool {spool} is private to postgres": "ok",
            f"wal archiver runs (pid {_archiver_pid(process)})": "ok",
        }
    finally:
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in children or [str(process.pid)]:
            os.kill(int(pid), signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    acks = spool / POLICY / SOURCE / "acks"
    records = setup.backups / POLICY / "pitr" / SOURCE / "records"
    for name in names:
        assert (records / f"{name}.rec").is_file()
        assert (acks / f"{name}.ack").is_file(), out  # pushed by the archiver, answered from its ack
    stopped = _archiver_findings(setup)
    assert [level for detail, level in stopped.items() if "is not running" in detail] == ["WARN"]


def _archiver_pid(process: subprocess.Popen[str]) -> int:
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    return int(children[0]) if children else process.pid


def _archiver_findings(setup: PitrSetup) -> dict[str, str]:
    done = setup.run("doctor", POLICY, "--json")
    findings = json.loads(done.stdout)["findings"]
    return {f["detail"]: f["level"] for f in findings if f["check"] == f"{POLICY}/{SOURCE}: pitr archiver"}
