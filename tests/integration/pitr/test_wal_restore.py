"""Point-in-time restore of a real PostgreSQL 15 cluster archiving through `backupctl wal push`:
base backup, pgbench load, restore to a time between two known commits, --latest and its bound,
a deleted segment (verify names it, restore past it fails naming it, restore before it works)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.pitr.conftest import POLICY, SOURCE, PitrSetup


@dataclass
class History:
    """What was committed when, on the archiving cluster."""

    base_id: str
    between: datetime  # after batch 1 committed, before batch 2
    between_segment: str  # the WAL segment being written at `between`
    tail_id: int  # the last row written after the final archived switch (never archived)
    archived_ids: int  # rows 1..archived_ids are in archived WAL


def sql(setup: PitrSetup, statement: str) -> Any:
    with setup.connect() as connection:
        cursor = connection.execute(statement)
        if cursor.description is None:
            return None
        row = cursor.fetchone()
        return row[0] if row else None


@pytest.fixture(scope="module")
def history(pitr_cluster: PitrSetup) -> History:
    setup = pitr_cluster
    sql(
        setup,
        "CREATE TABLE IF NOT EXISTS marks (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    )
    done = setup.run("wal", "base-backup", POLICY, "--source", SOURCE, "--json")
    assert done.returncode == 0, done.stderr
    base_id = json.loads(done.stdout)["base_id"]
    pgbench = str(setup.cluster.bindir / "pgbench")
    bench_env = {"PGPASSWORD": setup.cluster.password}
    url = setup.cluster.url("postgres")
    subprocess.run([pgbench, "-i", "-s", "2", "-q", url], check=True, capture_output=True, env=bench_env)
    sql(setup, "INSERT INTO marks (id) SELECT generate_series(1, 100)")
    time.sleep(1.0)
    between = sql(setup, "SELECT clock_timestamp()")
    between_segment = sql(setup, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    time.sleep(1.0)
    # load between the two known commits: the archiver runs backupctl for every segment it fills
    subprocess.run([pgbench, "-T", "4", "-c", "2", "-n", url], check=True, capture_output=True, env=bench_env)
    sql(setup, "INSERT INTO marks (id) SELECT generate_series(101, 200)")
    setup.switch_and_wait(timeout=180)
    sql(setup, "INSERT INTO marks (id) SELECT generate_series(201, 300)")  # a segment after `between`'s
    setup.switch_and_wait(timeout=180)
    sql(setup, "INSERT INTO marks (id) SELECT generate_series(301, 400)")  # and one more after it
    setup.switch_and_wait(timeout=180)
    sql(setup, "INSERT INTO marks (id) VALUES (401)")  # the unarchived tail
    return History(base_id, between, between_segment, 401, 400)


def restore(
    setup: PitrSetup, to_dir: Path, *args: str, command: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return setup.run(
        "wal",
        "restore",
        POLICY,
        "--source",
        SOURCE,
        "--to-dir",
        str(to_dir),
        "--backupctl-command",
        str(command or setup.wrapper),
        "--json",
        *args,
    )


def counting_wrapper(setup: PitrSetup) -> tuple[Path, Path]:
    """(a backupctl command that logs each start of its, then runs the real one; the log)."""
    directory = setup.scratch()
    log, wrapper = directory / "starts.log", directory / "backupctl"
    log.touch()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {setup.wrapper} "$@"\n')
    wrapper.chmod(0o755)
    os.chown(log, directory.stat().st_uid, directory.stat().st_gid)
    return wrapper, log


@pytest.fixture
def restored(pitr_cluster: PitrSetup) -> Iterator[list[Path]]:
    """Data directories of restored clusters, stopped and removed afterwards."""
    made: list[Path] = []
    yield made
    for directory in made:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(pitr_cluster.cluster.bindir / "pg_ctl"),
                "stop",
                "-D",
                str(directory),
                "-m",
                "immediate",
            ],
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


def rows(setup: PitrSetup, port: int) -> list[int]:
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(url, password=setup.cluster.password, autocommit=True) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM marks ORDER BY id").fetchall()]


def test_restore_to_a_time_between_two_commits(
    pitr_cluster: PitrSetup, history: History, restored: list[Path]
) -> None:
    to_dir = pitr_cluster.root / "restore-time"
    restored.append(to_dir)
    command, starts = counting_wrapper(pitr_cluster)
    done = restore(
        pitr_cluster, to_dir, "--to-time", history.between.isoformat(), "--keep-running", command=command
    )
    assert done.returncode == 0, done.stderr
    # restore_command answered every request (segments, history probes) without starting backupctl
    assert starts.read_text() == ""
    result = json.loads(done.stdout)
    assert result["plan"]["base_backup"]["id"] == history.base_id
    assert rows(pitr_cluster, result["port"]) == list(range(1, 101))  # all of batch 1, none of batch 2
    assert result["stop_reason"].startswith("recovery stopping before commit")
    assert (to_dir / "recovery.signal").exists() is False  # promoted


def test_restore_latest_loses_only_the_unarchived_tail(
    pitr_cluster: PitrSetup, history: History, restored: list[Path]
) -> None:
    to_dir = pitr_cluster.root / "restore-latest"
    restored.append(to_dir)
    command, starts = counting_wrapper(pitr_cluster)
    done = restore(pitr_cluster, to_dir, "--latest", "--keep-running", command=command)
    assert done.returncode == 0, done.stderr
    # the end of the archive and the history probes were answered by the shell test alone
    assert starts.read_text() == "", (to_dir / "backupctl-restore.log").read_text()
    ids = rows(pitr_cluster, json.loads(done.stdout)["port"])
    # the bound (docs/pitr.md): every row in an archived segment is back; only the tail written
    # after the newest archived segment (still in the server's current segment) is missing
    assert ids == list(range(1, history.archived_ids + 1))
    assert history.tail_id not in ids


def test_dry_run_prints_the_plan_and_touches_nothing(pitr_cluster: PitrSetup, history: History) -> None:
    to_dir = pitr_cluster.root / "restore-dry"
    done = restore(pitr_cluster, to_dir, "--latest", "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["base_backup"]["id"] == history.base_id and plan["wal"]["first_missing"] is None
    assert not to_dir.exists()


def test_a_deleted_segment_is_named_by_verify_and_restore(
    pitr_cluster: PitrSetup, history: History, restored: list[Path], tmp_path: Path
) -> None:
    archive = pitr_cluster.backups / POLICY / "pitr" / SOURCE
    verified = pitr_cluster.run("wal", "verify", POLICY, "--source", SOURCE, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    chain = json.loads(verified.stdout)["targets"]["nas"]
    names = sorted(p.name[:-4] for p in (archive / "records").glob("0*.rec") if len(p.name) == 28)
    # all of batch 1 is before the victim, and a newer segment follows it (a gap, not a shorter chain)
    victim = next(name for name in names if name > history.between_segment)
    assert victim != names[-1]
    moved = []
    for sub, suffix in (("records", ".rec"), ("segments", ".zst.age")):
        source = archive / sub / f"{victim}{suffix}"
        moved.append((shutil.move(source, tmp_path / source.name), source))
    try:
        broken = pitr_cluster.run("wal", "verify", POLICY, "--source", SOURCE)
        assert broken.returncode == 1 and victim in broken.stdout and victim in broken.stderr
        assert chain["ok"] is True
        status = pitr_cluster.run("wal", "status", POLICY, "--source", SOURCE)
        assert status.returncode == 1 and f"WAL missing: {victim}" in status.stderr
        to_dir = pitr_cluster.root / "restore-gap"
        failed = restore(pitr_cluster, to_dir, "--latest")
        assert failed.returncode == 1 and f"WAL segment {victim} is missing" in failed.stderr
        assert not to_dir.exists()
        restored.append(to_dir)
        before = restore(pitr_cluster, to_dir, "--to-time", history.between.isoformat(), "--keep-running")
        assert before.returncode == 0, before.stderr
        assert rows(pitr_cluster, json.loads(before.stdout)["port"]) == list(range(1, 101))
    finally:
        for held, original in moved:
            shutil.move(held, original)


def test_a_flipped_byte_stops_recovery_before_the_segment_is_replayed(
    pitr_cluster: PitrSetup, history: History, restored: list[Path]
) -> None:
    segments = pitr_cluster.backups / POLICY / "pitr" / SOURCE / "segments"
    victim = sorted(p for p in segments.glob("0*.zst.age") if p.name[:24] > history.between_segment)[0]
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    victim.write_bytes(bytes(damaged))
    try:
        to_dir = pitr_cluster.root / "restore-flipped"
        restored.append(to_dir)
        failed = restore(pitr_cluster, to_dir, "--latest")
        assert failed.returncode == 1, failed.stdout
        assert f"WAL segment {victim.name[:24]} is damaged" in failed.stderr
        # caught while prefetching, before the server started: nothing was replayed
        assert "nothing was replayed" in failed.stderr and not (to_dir / "backupctl-restore.log").exists()
        # restore_command itself (wal fetch, as PostgreSQL runs it) refuses it with an exit > 125,
        # which makes PostgreSQL stop recovery instead of promoting early
        fetched = pitr_cluster.run(
            "wal",
            "fetch",
            POLICY,
            "--source",
            SOURCE,
            victim.name[:24],
            str(pitr_cluster.scratch() / "RECOVERYXLOG"),
        )
        assert fetched.returncode == 126 and "does not match its signed record" in fetched.stderr
    finally:
        victim.write_bytes(original)


def test_status_reports_the_achieved_rpo_and_metrics(pitr_cluster: PitrSetup, history: History) -> None:
    metrics = pitr_cluster.scratch() / "pitr.prom"
    done = pitr_cluster.run(
        "wal", "status", POLICY, "--source", SOURCE, "--json", "--metrics-file", str(metrics)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and 0 <= report["rpo_seconds"] < 900
    assert report["server"]["reachable"] and report["server"]["ready_backlog"] == 0
    assert 'backupctl_pitr_rpo_seconds{policy="shop",source="db"}' in metrics.read_text()
    # the general `status` shows the same archive's RPO (the same computation, via its probe)
    (general,) = json.loads(pitr_cluster.run("status", POLICY, "--json").stdout)
    (archive,) = general["pitr"]
    assert archive["source"] == SOURCE and archive["archive"] == "WAL" and archive["ok"], archive
    assert archive["rpo_seconds"] == pytest.approx(report["rpo_seconds"], abs=10)
    assert general["rules"]["pitr_rpo"]["ok"]
    # an objective shorter than the age of the newest segment is a breach: exit 1
    time.sleep(2.5)
    policy_file = pitr_cluster.policies / f"{POLICY}.yaml"
    original = policy_file.read_text()
    try:
        data = yaml.safe_load(original)
        data["objectives"]["rpo"] = "2s"
        data["sources"][0]["pitr"]["archive_timeout"] = "1s"
        policy_file.write_text(yaml.safe_dump(data, sort_keys=False))
        breached = pitr_cluster.run("wal", "status", POLICY, "--source", SOURCE)
        assert breached.returncode == 1 and "RPO breached" in breached.stderr, breached.stderr
        overall = pitr_cluster.run("status", POLICY, "--json")
        assert overall.returncode == 1 and "pitr_rpo" in overall.stderr, overall.stderr
        assert "RPO breached" in json.loads(overall.stdout)[0]["rules"]["pitr_rpo"]["detail"]
    finally:
        policy_file.write_text(original)


def run_as_root(setup: PitrSetup, *args: str) -> subprocess.CompletedProcess[str]:
    """The drill runs as root (Docker, and the data directory handed to the container's uid)."""
    return subprocess.run(
        [sys.executable, "-m", "backupctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **setup.env},
        timeout=600,
        check=False,
    )


def test_pitr_drill_in_docker_staging_proves_the_point_reached(
    pitr_cluster: PitrSetup, history: History, staging_images: dict[str, str]
) -> None:
    done = run_as_root(
        pitr_cluster,
        "wal",
        "drill",
        POLICY,
        "--source",
        SOURCE,
        "--runtime",
        "docker",
        "--image",
        staging_images["postgres"],
        "--at",
        history.between.isoformat(),
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["base_backup"] == history.base_id
    reached = datetime.fromisoformat(report["reached_commit"])
    assert reached <= history.between and 0 <= report["achieved_rpo_seconds"] <= 900
    assert report["rto_seconds"] > 0 and report["segments"] >= 1
    leftovers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=backupctl.drill=pitr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert leftovers.strip() == ""


def test_pitr_drill_on_the_local_runtime_at_latest(pitr_cluster: PitrSetup, history: History) -> None:
    done = run_as_root(
        pitr_cluster, "wal", "drill", POLICY, "--source", SOURCE, "--runtime", "local", "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["asked"] == "latest" and report["reached_commit"] is not None


def test_prune_keeps_the_wal_of_the_kept_base_backups(pitr_cluster: PitrSetup, history: History) -> None:
    """Last in this module: it removes the first base backup and the WAL only it needed."""
    done = pitr_cluster.run("wal", "base-backup", POLICY, "--source", SOURCE, "--json")
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    policy_file = pitr_cluster.policies / f"{POLICY}.yaml"
    original = policy_file.read_text()
    try:
        data = yaml.safe_load(original)
        data["sources"][0]["pitr"]["keep_base_backups"] = 1
        policy_file.write_text(yaml.safe_dump(data, sort_keys=False))
        planned = pitr_cluster.run("wal", "prune", POLICY, "--source", SOURCE, "--dry-run", "--json")
        assert planned.returncode == 0, planned.stderr
        plan = json.loads(planned.stdout)
        doomed = plan["segments"][0]["would_delete"]
        assert plan["removed_base_backups"]["nas"] == [history.base_id]
        assert doomed and all(name < second["start_segment"] for name in doomed)
        records = pitr_cluster.backups / POLICY / "pitr" / SOURCE / "records"
        assert all((records / f"{name}.rec").exists() for name in doomed)  # dry run: nothing removed
        pruned = pitr_cluster.run("wal", "prune", POLICY, "--source", SOURCE, "--json")
        assert pruned.returncode == 0, pruned.stderr
        assert not any((records / f"{name}.rec").exists() for name in doomed)
        verified = pitr_cluster.run("wal", "verify", POLICY, "--source", SOURCE, "--json")
        assert verified.returncode == 0, verified.stdout
        assert json.loads(verified.stdout)["targets"]["nas"]["first"] == second["start_segment"]
    finally:
        policy_file.write_text(original)


def test_status_flags_a_base_backup_older_than_its_schedule(
    pitr_cluster: PitrSetup, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backupctl.actions.access import trusted_keys
    from backupctl.actions.wal_status import wal_status
    from backupctl.policy.schema import Policy
    from backupctl.settings import Settings

    for name, value in pitr_cluster.env.items():
        monkeypatch.setenv(name, value)
    data = yaml.safe_load((pitr_cluster.policies / f"{POLICY}.yaml").read_text())
    data["sources"][0]["pitr"]["base_backup_schedule"] = "0 3 * * 0"  # weekly
    policy = Policy.model_validate(data)
    settings = Settings.resolve(str(pitr_cluster.policies), str(pitr_cluster.root / "state"))
    trusted = trusted_keys(settings, policy)
    assert not any("base backup is" in p for p in wal_status(settings, policy, SOURCE, trusted).problems)
    later = datetime.now(UTC) + timedelta(days=9)
    problems = wal_status(settings, policy, SOURCE, trusted, now=later).problems
    assert any("the newest base backup is 9 days" in p for p in problems), problems
