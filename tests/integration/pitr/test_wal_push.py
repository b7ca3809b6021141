"""`backupctl wal push` as PostgreSQL 15's real archive_command, and its exit-status contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from backupctl.pitr.postgres_wal import parse_wal_name, read_segment_header
from tests.fixtures.s3 import MotoServer, new_bucket_name
from tests.integration.pitr.conftest import POLICY, SOURCE, PitrSetup


def records(setup: PitrSetup) -> dict[str, dict[str, object]]:
    directory = setup.backups / POLICY / "pitr" / SOURCE / "records"
    found = {}
    for path in sorted(directory.glob("*.rec")):
        body = path.read_bytes().split(b"\n")[0]
        found[path.name[: -len(".rec")]] = json.loads(body)
    return found


def test_server_archives_segments_through_backupctl(pitr_cluster: PitrSetup) -> None:
    name = pitr_cluster.switch_and_wait()
    archived = records(pitr_cluster)
    assert name in archived
    record = archived[name]
    meta = record["meta"]
    assert isinstance(meta, dict) and meta["timeline"] == 1 and meta["segment_size"] == 16 * 1024 * 1024
    with pitr_cluster.connect() as connection:
        sysid = connection.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]  # type: ignore[index]
    assert meta["system_identifier"] == str(sysid)
    assert record["plain_bytes"] == 16 * 1024 * 1024 and record["kind"] == "wal"
    stored = (pitr_cluster.backups / POLICY / "pitr" / SOURCE / "segments" / f"{name}.zst.age").read_bytes()
    assert stored.startswith(b"age-encryption.org/v1")


def _segment_copy(setup: PitrSetup) -> tuple[str, Path]:
    name = setup.switch_and_wait()
    # the archived file is still in pg_wal until the next checkpoint recycles it: take a copy
    # by decrypting it back (what PostgreSQL would hand us again on a retry)
    copy = setup.scratch() / name
    done = setup.run("wal", "fetch", POLICY, "--source", SOURCE, name, str(copy), "--prefetch", "1")
    assert done.returncode == 0, done.stderr
    return name, copy


def test_identical_repush_is_ok_and_different_content_is_refused(
    pitr_cluster: PitrSetup, tmp_path: Path
) -> None:
    name, copy = _segment_copy(pitr_cluster)
    header = read_segment_header(copy)
    assert header is not None and parse_wal_name(name).timeline == header.timeline
    again = pitr_cluster.run("wal", "push", POLICY, "--source", SOURCE, str(copy), name)
    assert again.returncode == 0, again.stderr
    assert "already archived" in again.stdout
    data = bytearray(copy.read_bytes())
    data[100_000] ^= 0xFF
    copy.write_bytes(bytes(data))
    conflict = pitr_cluster.run("wal", "push", POLICY, "--source", SOURCE, str(copy), name)
    assert 0 < conflict.returncode < 125
    assert "DIFFERENT content" in conflict.stderr


def test_a_segment_of_another_cluster_is_refused(pitr_cluster: PitrSetup, tmp_path: Path) -> None:
    _, copy = _segment_copy(pitr_cluster)
    data = bytearray(copy.read_bytes())
    data[24:32] = (12345).to_bytes(8, "little")  # the system identifier in the long page header
    other = copy.parent / "000000010000000000000999"  # a new name: only the identity check can refuse it
    other.write_bytes(bytes(data))
    done = pitr_cluster.run("wal", "push", POLICY, "--source", SOURCE, str(other), other.name)
    assert 0 < done.returncode < 125
    assert "system identifier" in done.stderr and "12345" in done.stderr


def _s3_policy(setup: PitrSetup, name: str, endpoint: str, bucket: str) -> None:
    """A second policy with the same source archiving to S3 only."""
    policy = yaml.safe_load((setup.policies / f"{POLICY}.yaml").read_text())
    policy["name"] = name
    policy["targets"] = [
        {"name": "offsite", "type": "s3", "bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1"}
    ]
    (setup.policies / f"{name}.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))


def test_sigterm_or_sigint_while_the_target_hangs_exit_below_128_and_leave_nothing(
    pitr_cluster: PitrSetup, tmp_path: Path, moto_server_factory: Callable[..., MotoServer]
) -> None:
    server = moto_server_factory()
    bucket = new_bucket_name("wal")
    server.client().create_bucket(Bucket=bucket)
    _s3_policy(pitr_cluster, "shops3", server.url, bucket)
    name, copy = _segment_copy(pitr_cluster)
    env = {**os.environ, **pitr_cluster.env}
    for sig in (signal.SIGTERM, signal.SIGINT):
        server.pause()  # the PUT hangs: the signal arrives in the middle of the push
        try:
            argv = [sys.executable, "-m", "backupctl", "wal", "push", "shops3", "--source", SOURCE]
            argv += [str(copy), name]
            process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
            time.sleep(4)
            assert process.poll() is None, "the push did not hang on the frozen target"
            process.send_signal(sig)
            _, stderr = process.communicate(timeout=60)
        finally:
            server.resume()
        assert 0 < process.returncode < 128, stderr
        assert "interrupted" in stderr
        listed = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        assert [item["Key"] for item in listed if name in item["Key"]] == []
    # and once the target answers again, the same push completes
    done = pitr_cluster.run("wal", "push", "shops3", "--source", SOURCE, str(copy), name)
    assert done.returncode == 0, done.stderr
    # and it comes back from S3 byte for byte, as restore_command gets it
    back = pitr_cluster.scratch() / name
    fetched = pitr_cluster.run("wal", "fetch", "shops3", "--source", SOURCE, name, str(back))
    assert fetched.returncode == 0, fetched.stderr
    assert back.read_bytes() == copy.read_bytes()


def test_target_down_fails_the_archiver_then_it_catches_up(pitr_cluster: PitrSetup) -> None:
    segments = pitr_cluster.backups / POLICY / "pitr" / SOURCE / "segments"
    pitr_cluster.switch_and_wait()
    with pitr_cluster.connect() as connection:
        failed_before = connection.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]  # type: ignore[index]
        segments.chmod(0o000)  # the server's user can no longer write there
        try:
            connection.execute("SELECT txid_current()")
            blocked = connection.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
            deadline = time.monotonic() + 60
            while (
                connection.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] == failed_before
            ):  # type: ignore[index]
                assert time.monotonic() < deadline, "the archiver never reported a failure"
                time.sleep(0.2)
            ready = pitr_cluster.cluster.data_dir / "pg_wal" / "archive_status" / f"{blocked}.ready"
            assert ready.exists() and blocked not in records(pitr_cluster)
        finally:
            segments.chmod(0o755)
    assert pitr_cluster.switch_and_wait(timeout=120) > blocked  # PostgreSQL retried: it caught up
    assert blocked in records(pitr_cluster)


def test_doctor_checks_the_archiving_server(pitr_cluster: PitrSetup) -> None:
    done = pitr_cluster.run("doctor", POLICY, "--json")
    findings = [f for f in json.loads(done.stdout)["findings"] if f["check"] == f"{POLICY}/{SOURCE}: pitr"]
    by_detail = {f["detail"].split(" ")[0]: f for f in findings}
    assert all(by_detail[name]["ok"] for name in ("wal_level", "archive_mode", "archive_command"))
    # the fixture's server runs with archive_timeout = 0 (disabled): doctor says how to fix it
    timeout = by_detail["archive_timeout"]
    assert timeout["level"] == "FAIL" and "set archive_timeout = 60s" in timeout["fix"]


def test_a_repointed_target_is_claimed_again_and_another_clusters_archive_there_is_detected(
    pitr_cluster: PitrSetup,
) -> None:
    """The "identity already claimed" cache is keyed on where a target points, not on its name:
    the same target name pointed at another directory is checked again (issue #12)."""
    name, copy = _segment_copy(pitr_cluster)
    data = bytearray(copy.read_bytes())
    data[24:32] = (12345).to_bytes(8, "little")  # a segment of another cluster (system identifier)
    foreign = copy.parent / "000000010000000000000998"
    foreign.write_bytes(bytes(data))
    mine, theirs = pitr_cluster.scratch(), pitr_cluster.scratch()

    def point_nas_at(directory: Path) -> None:
        policy = yaml.safe_load((pitr_cluster.policies / f"{POLICY}.yaml").read_text())
        policy["name"] = "repoint"
        policy["targets"] = [{"name": "nas", "type": "local", "path": str(directory)}]
        (pitr_cluster.policies / "repoint.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))

    def push(path: Path, as_name: str) -> subprocess.CompletedProcess[str]:
        return pitr_cluster.run("wal", "push", "repoint", "--source", SOURCE, str(path), as_name)

    point_nas_at(theirs)  # the other cluster's archive
    assert push(foreign, foreign.name).returncode == 0
    point_nas_at(mine)  # this cluster's: claimed, and the claim cached
    done = push(copy, name)
    assert done.returncode == 0, done.stderr
    # the operator points `nas` at the other cluster's directory: the cache must not vouch for it
    point_nas_at(theirs)
    refused = push(copy, "000000010000000000000997")
    assert 0 < refused.returncode < 125, refused.stdout
    assert "system identifier" in refused.stderr and "12345" in refused.stderr, refused.stderr
    assert not (theirs / "repoint" / "pitr" / SOURCE / "records" / "000000010000000000000997.rec").exists()
    # and back: this cluster's archive is still its own (served from the cache, no new claim)
    point_nas_at(mine)
    assert push(copy, name).returncode == 0


def test_wal_fetch_by_hand_asks_the_targets_even_over_an_absent_marker(pitr_cluster: PitrSetup) -> None:
    """`backupctl-prefetch/absent/NAME` is the archive as listed when a restore started, read only
    by the generated restore_command's shell test to spare a process start; `wal fetch` asks the
    targets, which may have gained the segment since (docs/pitr.md)."""
    from backupctl.actions.wal_restore import ABSENT, spooled_restore_command

    name = pitr_cluster.switch_and_wait()
    spool = pitr_cluster.scratch() / "backupctl-prefetch"
    (spool / ABSENT).mkdir(parents=True)
    (spool / ABSENT / name).touch()
    destination = pitr_cluster.scratch() / name
    restore_command = spooled_restore_command(spool, "exit 99")
    line = restore_command.replace("%f", name).replace("%p", str(destination))
    assert subprocess.run(["sh", "-c", line]).returncode == 1  # the marker: "not archived"
    fetch = ["wal", "fetch", POLICY, "--source", SOURCE, name, str(destination), "--spool", str(spool)]
    done = pitr_cluster.run(*fetch, "--prefetch", "1")
    assert done.returncode == 0, done.stderr
    assert read_segment_header(destination) is not None and (spool / ABSENT / name).exists()
