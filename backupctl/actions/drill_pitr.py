"""PITR drill: restore base backup + WAL into a staging PostgreSQL at `latest`, a given time or a
random time in the retained window; measure the RTO including WAL replay; prove the point reached.

How (the same for both runtimes):
1. plan as `wal restore` does (the newest base backup before the point, the WAL it needs, gaps);
2. on the drill host, decrypt the base backup into a fresh data directory and the needed WAL
   segments into a plain directory, each checked against its signed digest (in parallel);
3. start PostgreSQL on it with the *break-glass* recovery settings: `restore_command = 'cp
   <wal>/%f %p'`, the recovery target, promote, archive_mode off. Docker runtime: the
   backupctl/postgres:15 (or postgres:15) image, `--network none`, the directories mounted;
   local runtime: this host's server binaries as the `postgres` user;
4. wait until it has promoted; the RTO is the wall time of 2 + 3 + 4.

Proof of the point reached: PostgreSQL logs, at the end of recovery, "last completed
transaction was at log time T'" — the commit time of the newest replayed transaction. The drill
passes when T' is in [T - RPO, T] (T: the point asked for; for `latest`, the moment the newest
segment was archived): no commit after the target was replayed, and no more than the RPO is lost.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backupctl.actions.wal import RULES, close_all, open_archives, pitr_source
from backupctl.actions.wal_base import postgres_program
from backupctl.actions.wal_restore import RestoreRequest, _unpack_base, plan_restore
from backupctl.core import runner
from backupctl.errors import ConfigError, JobFailed
from backupctl.local_cluster.postgres import free_port, quote_literal
from backupctl.pitr.postgres_base import list_base_backups
from backupctl.pitr.postgres_wal import lineage, parse_wal_name
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

CONTAINER_UID = 999  # postgres in backupctl/postgres:15 and in the official image
_LAST_COMMIT = re.compile(r"last completed transaction was at log time (.+)")
_READY = "database system is ready to accept connections"


@dataclass
class PitrDrillReport:
    policy: str
    source: str
    runtime: str
    asked: str  # "latest" or the ISO time asked for
    target_time: str  # the point T the proof is measured against
    base_backup: str
    segments: int
    reached_commit: str | None  # newest replayed commit (server log)
    achieved_rpo_seconds: float | None  # T - reached_commit
    rto_seconds: float  # fetch + unpack + replay until promoted
    rto_objective_seconds: float
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def choose_point(
    settings: Settings, policy: Policy, source: str, at: str, trusted: list[str]
) -> datetime | None:
    """None for `latest`; a parsed time; or a random time in the retained window for `random`."""
    if at == "latest":
        return None
    if at != "random":
        from backupctl.actions.wal_restore import parse_target_time

        return parse_target_time(at)
    archives = open_archives(settings, policy, source)
    try:
        archive = archives[0]
        bases = list_base_backups(archive, trusted)
        records = lineage(archive.list_records(trusted))
    finally:
        close_all(archives)
    if not bases or not records:
        raise JobFailed(f"nothing to drill: {source} has no base backup or no archived WAL")
    low, high = bases[0].finished_time, records[-1].pushed_time
    if high <= low:
        return high
    return low + timedelta(seconds=random.uniform(0, (high - low).total_seconds()))


def run_pitr_drill(
    settings: Settings,
    policy: Policy,
    source_name: str,
    *,
    at: str,
    runtime: str,
    identities: list[Any],
    trusted: list[str],
    image: str = "backupctl/postgres:15",
    timeout: float = 3600.0,
) -> PitrDrillReport:
    """Run one PITR drill (see the module docstring). Raises JobFailed when it cannot run;
    a drill that runs but misses its proof returns ok=False."""
    if runtime not in ("docker", "local"):
        raise ConfigError(f"runtime '{runtime}' is not docker or local")
    _, pitr = pitr_source(policy, source_name)
    point = choose_point(settings, policy, source_name, at, trusted)
    request = RestoreRequest(
        policy=policy,
        source=source_name,
        to_dir=Path("/nonexistent"),
        command=[],
        to_time=point,
        latest=point is None,
    )
    started = time.monotonic()
    plan = plan_restore(settings, request, trusted)
    work = Path(tempfile.mkdtemp(prefix="backupctl-pitr-drill-", dir="/tmp"))
    os.chmod(work, 0o755)
    data, wal = work / "data", work / "wal"
    data.mkdir(mode=0o700)
    wal.mkdir()
    archives = {a.target.name: a for a in open_archives(settings, policy, source_name)}
    try:
        archive = archives[plan.target]
        _unpack_base(archive, plan.base, data, identities)
        records = plan.records or archive.list_records(trusted)  # read (and checked) by the plan
        wanted = _needed_files(records, plan.first_segment, plan.last_segment)
        with ThreadPoolExecutor(max_workers=pitr.prefetch) as pool:
            for future in [
                pool.submit(archive.fetch_to, name, wal / name, identities, trusted) for name in wanted
            ]:
                future.result()  # an IntegrityError stops the drill before anything is replayed
        newest_archived = max((r.pushed_time for r in records if r.name in wanted), default=None)
        target_time = point or newest_archived or datetime.now(UTC)
        log_text = _replay(runtime, work, data, wal, plan.recovery_target, image, pitr.bin_dir, timeout)
    finally:
        close_all(list(archives.values()))
        _cleanup(work)
    rto = time.monotonic() - started
    found = _LAST_COMMIT.search(log_text)
    reached = _pg_time(found.group(1)) if found else None
    rpo = policy.objectives.rpo
    achieved = (target_time - reached).total_seconds() if reached else None
    ok = reached is not None and target_time - rpo <= reached <= target_time + timedelta(seconds=1)
    detail = (
        f"newest replayed commit {reached.isoformat() if reached else '(none)'} for a target of "
        f"{target_time.isoformat()} (window: RPO {rpo})"
    )
    return PitrDrillReport(
        policy=policy.name,
        source=source_name,
        runtime=runtime,
        asked=at,
        target_time=target_time.isoformat(),
        base_backup=plan.base.base_id,
        segments=len(wanted),
        reached_commit=reached.isoformat() if reached else None,
        achieved_rpo_seconds=round(achieved, 3) if achieved is not None else None,
        rto_seconds=round(rto, 3),
        rto_objective_seconds=policy.objectives.rto.total_seconds(),
        ok=ok and rto <= policy.objectives.rto.total_seconds(),
        detail=detail,
    )


def _needed_files(records: list[Any], first: str, last: str | None) -> list[str]:
    """WAL segments first..last plus every timeline history file."""
    low = RULES.sort_key(first)
    high = RULES.sort_key(last) if last else low
    names = [r.name for r in lineage(records) if low <= RULES.sort_key(r.name) <= high]
    return names + [r.name for r in records if r.kind == "history"]


def _recovery_lines(restore_command: str, target: dict[str, str], socket_dir: str, port: int) -> str:
    lines = {
        "restore_command": restore_command,
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "archive_mode": "off",
        "port": str(port),
        "unix_socket_directories": socket_dir,
        "listen_addresses": "127.0.0.1",
        **target,
    }
    return "\n# PITR drill by backupctl\n" + "".join(f"{k} = {quote_literal(v)}\n" for k, v in lines.items())


def _replay(
    runtime: str,
    work: Path,
    data: Path,
    wal: Path,
    target: dict[str, str],
    image: str,
    bin_dir: str | None,
    timeout: float,
) -> str:
    """Start the staging server on `data` until it has promoted; its log text."""
    (data / "recovery.signal").touch()
    if runtime == "docker":
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write(_recovery_lines("cp /wal/%f %p", target, "/var/run/postgresql", 5432))
        _chown(work, CONTAINER_UID, CONTAINER_UID)
        name = f"backupctl-pitr-drill-{secrets.token_hex(4)}"
        docker = runner.require_tool("docker", "the Docker engine for staging")
        runner.run(
            [
                docker,
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "none",
                "--label",
                "backupctl.drill=pitr",
                "-v",
                f"{data}:/var/lib/postgresql/data",
                "-v",
                f"{wal}:/wal:ro",
                image,
            ],
            timeout=120,
        )
        try:
            return _wait(
                lambda: (
                    runner.run([docker, "logs", name], check=False).stderr
                    + runner.run([docker, "logs", name], check=False).stdout
                ),
                timeout,
            )
        finally:
            runner.run([docker, "rm", "-f", "-v", name], check=False, timeout=120)
    port = free_port()
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write(_recovery_lines(f"cp {wal}/%f %p", target, str(data), port))
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        _chown(work, entry.pw_uid, entry.pw_gid)
    pg_ctl = postgres_program(bin_dir, "pg_ctl")
    log = work / "server.log"
    as_user = ["runuser", "-u", user, "--"] if user else []
    runner.run(
        [*as_user, pg_ctl, "start", "-D", str(data), "-l", str(log), "-o", f"-p {port}"],
        check=False,
        timeout=120,
    )
    try:
        return _wait(lambda: log.read_text(errors="replace") if log.exists() else "", timeout)
    finally:
        runner.run([*as_user, pg_ctl, "stop", "-D", str(data), "-m", "immediate"], check=False, timeout=120)


def _wait(read: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text: str = read()
        if _READY in text:
            return text
        if "FATAL" in text and ("startup process" in text or "recovery ended before" in text):
            raise JobFailed(f"the staging server did not recover: {runner.last_lines(text, 4)}")
        if time.monotonic() > deadline:
            raise JobFailed(f"the staging server did not promote within {timeout:.0f}s")
        time.sleep(0.3)


def _pg_time(text: str) -> datetime:
    """'2026-12-06 06:14:36.693308+00' (log_timezone UTC) → aware datetime."""
    value = text.strip()
    if re.search(r"[+-]\d\d$", value):
        value += ":00"
    return datetime.fromisoformat(value)


def _chown(root: Path, uid: int, gid: int) -> None:
    for directory, _, files in os.walk(root):
        os.chown(directory, uid, gid)
        for name in files:
            os.chown(os.path.join(directory, name), uid, gid)


def _cleanup(work: Path) -> None:
    if os.geteuid() != 0:
        shutil.rmtree(work, ignore_errors=True)
        return
    subprocess.run(["rm", "-rf", str(work)], check=False)


def segment_count(first: str, last: str) -> int:
    low, high = parse_wal_name(first).segno, parse_wal_name(last).segno
    return 0 if low is None or high is None else high - low + 1
