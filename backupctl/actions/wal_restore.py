"""Point-in-time restore of a PostgreSQL PITR source into a NEW data directory.

Plan, then execute (`--dry-run` prints the plan): the newest base backup before the target,
the WAL range it needs, the first gap in the chain (a restore that needs WAL past a gap fails
before anything is written, naming the missing segment and how far recovery could go). Then:
the base backup is decrypted and unpacked into the new directory, `recovery.signal` and the
recovery settings are written (restore_command = `backupctl wal fetch`, recovery_target_*,
recovery_target_action = promote, archive_mode = off so the new cluster never writes into the
archive it restores from), the server is started, and the restore waits until it has promoted.
The point reached (last replayed commit and LSN) is read from the server log and checked
against the target.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.wal import RULES, close_all, open_archives, pitr_source
from backupctl.actions.wal_base import postgres_program
from backupctl.core import runner
from backupctl.core.digests import algorithm_of
from backupctl.core.pipeline import decrypted_reader
from backupctl.errors import ConfigError, IntegrityError, JobFailed
from backupctl.local_cluster.postgres import free_port, quote_literal
from backupctl.pitr.archive import SegmentArchive, SegmentMissing, SegmentRecord
from backupctl.pitr.chain import check_chain
from backupctl.pitr.postgres_base import DATA_FILE, BaseBackup, base_key, list_base_backups
from backupctl.pitr.postgres_wal import lineage, parse_lsn, parse_wal_name, segment_name
from backupctl.policy.schema import Policy
from backupctl.settings import Settings

SPOOL = "backupctl-prefetch"
ABSENT = "absent"  # SPOOL/absent/NAME: the archive does not hold NAME (restore_command exits 1)
PREFETCH_LIMIT = 256  # segments fetched before the server starts: 4 GiB of spool at most
LOG = "backupctl-restore.log"
# How often the server log is read while waiting for promotion: a few small reads, and the
# restore's wall time (its RTO) is not rounded up by up to a poll interval (0.3 s before).
PROMOTION_POLL = 0.05
_STOPPING = re.compile(r"recovery stopping (before|after) (.*)")
_LAST_COMMIT = re.compile(r"last completed transaction was at log time (.+)")
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_NOT_REACHED = "recovery ended before configured recovery target was reached"


def parse_target_time(text: str) -> datetime:
    """An ISO-8601 time (`2026-12-06 14:05:00+01:00`); without a zone it is UTC. ConfigError."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--to-time '{text}' is not a time like '2026-12-06 14:05:00+00:00'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class RestoreRequest:
    policy: Policy
    source: str
    to_dir: Path
    command: list[str]  # how the restored server's user runs backupctl (restore_command)
    to_time: datetime | None = None
    to_lsn: str | None = None
    latest: bool = False
    identity_file: Path | None = None
    port: int | None = None
    settings: dict[str, str] = field(default_factory=dict)  # extra postgresql.auto.conf lines
    keep_running: bool = False
    timeout: float = 3600.0


@dataclass
class RestorePlan:
    policy: str
    source: str
    target: str  # the blob target restored from
    base: BaseBackup
    first_segment: str
    last_segment: str | None  # newest segment usable (before the first gap)
    gap: str | None  # first missing segment after the base backup's start
    recovery_target: dict[str, str]
    to_dir: str
    # the signed records of the target restored from, as read (signatures checked) for the plan:
    # the prefetch uses them rather than reading every record again (one GET each on S3)
    records: list[SegmentRecord] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "target": self.target,
            "base_backup": {
                "id": self.base.base_id,
                "finished_at": self.base.finished_at,
                "start_lsn": self.base.start_lsn,
                "stop_lsn": self.base.stop_lsn,
                "timeline": self.base.timeline,
            },
            "wal": {"first": self.first_segment, "last": self.last_segment, "first_missing": self.gap},
            "recovery_target": self.recovery_target,
            "to_dir": self.to_dir,
        }


@dataclass
class RestoreResult:
    plan: RestorePlan
    seconds: float
    reached_lsn: str | None
    last_commit_time: str | None
    stop_reason: str | None
    port: int
    log_file: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "seconds": round(self.seconds, 3),
            "reached_lsn": self.reached_lsn,
            "last_commit_time": self.last_commit_time,
            "stop_reason": self.stop_reason,
            "port": self.port,
            "log_file": self.log_file,
        }


def plan_restore(settings: Settings, request: RestoreRequest, trusted: list[str]) -> RestorePlan:
    """Choose the base backup and check the WAL the target needs. Raises JobFailed naming the
    missing segment when the archive cannot reach the target."""
    if sum([request.to_time is not None, request.to_lsn is not None, request.latest]) != 1:
        raise ConfigError("give exactly one of --to-time, --to-lsn, --latest")
    pitr_source(request.policy, request.source)
    archives = open_archives(settings, request.policy, request.source)
    try:
        for archive in archives:
            bases = list_base_backups(archive, trusted)
            if bases:
                return _plan_on(archive, bases, archive.list_records(trusted), request)
    finally:
        close_all(archives)
    raise JobFailed(
        f"no complete base backup of {request.source} on any WAL target: "
        f"run `backupctl wal base-backup {request.policy.name} --source {request.source}`"
    )


def _plan_on(
    archive: SegmentArchive, bases: list[BaseBackup], records: list[SegmentRecord], request: RestoreRequest
) -> RestorePlan:
    target: dict[str, str]
    if request.to_time is not None:
        wanted = request.to_time
        usable = [b for b in bases if b.finished_time <= wanted]
        target = {"recovery_target_time": wanted.isoformat()}
        if not usable:
            raise JobFailed(
                f"no base backup finished before {wanted.isoformat()} (oldest: "
                f"{bases[0].finished_at}): that point is outside the retained window"
            )
    elif request.to_lsn is not None:
        lsn = parse_lsn(request.to_lsn)
        usable = [b for b in bases if parse_lsn(b.stop_lsn) <= lsn]
        target = {"recovery_target_lsn": request.to_lsn}
        if not usable:
            raise JobFailed(
                f"no base backup ends before LSN {request.to_lsn} (oldest stops at {bases[0].stop_lsn})"
            )
    else:
        usable = bases
        target = {}
    base = usable[-1]
    chain = lineage(records)
    report = check_chain(chain, RULES, start=base.start_segment)
    gap = report.gaps[0].missing[0] if report.gaps else (base.start_segment if report.start_missing else None)
    present = [r for r in chain if RULES.sort_key(r.name) >= RULES.sort_key(base.start_segment)]
    if gap is not None:
        present = [r for r in present if RULES.sort_key(r.name) < RULES.sort_key(gap)]
    last = present[-1] if present else None
    plan = RestorePlan(
        request.policy.name,
        request.source,
        archive.target.name,
        base,
        base.start_segment,
        last.name if last else None,
        gap,
        target,
        str(request.to_dir),
        records,
    )
    if gap is not None:
        reach = f"recovery can reach {last.meta.get('end_lsn')} (end of {last.name})" if last else "nothing"
        if last is None or RULES.sort_key(base.stop_segment) >= RULES.sort_key(gap):
            raise JobFailed(
                f"WAL segment {gap} is missing: base backup {base.base_id} cannot be made "
                f"consistent without it"
            )
        needs_more = (
            request.latest
            or (
                request.to_lsn is not None
                and parse_lsn(request.to_lsn) >= parse_lsn(str(last.meta["end_lsn"]))
            )
            or (request.to_time is not None and request.to_time > last.pushed_time)
        )
        if needs_more:
            raise JobFailed(
                f"WAL segment {gap} is missing from the archive on {archive.target.name}: "
                f"{reach}, archived at {last.pushed_at}; restore to a point before it "
                f"(--to-lsn / --to-time)"
            )
    return plan


def run_restore(
    settings: Settings, request: RestoreRequest, trusted: list[str], identities: list[Any]
) -> RestoreResult:
    """Execute the plan into `request.to_dir` (must not exist or be empty). Raises JobFailed
    (recovery failed or did not reach the target: the missing segment named), IntegrityError."""
    started = time.monotonic()
    plan = plan_restore(settings, request, trusted)
    _, pitr = pitr_source(request.policy, request.source)
    to_dir = request.to_dir.absolute()
    if to_dir.exists() and any(to_dir.iterdir()):
        raise ConfigError(f"{to_dir} is not empty: a point-in-time restore builds a NEW cluster")
    to_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    archives = {a.target.name: a for a in open_archives(settings, request.policy, request.source)}
    try:
        _unpack_base(archives[plan.target], plan.base, to_dir, identities)
        fetched = prefetch_plan(
            archives[plan.target], plan, to_dir / SPOOL, identities, trusted, workers=pitr.prefetch
        )
        mark_absent(to_dir / SPOOL, absent_names(fetched, plan, request))
    finally:
        close_all(list(archives.values()))
    port = request.port or free_port()
    _write_recovery(request, plan, to_dir, port)
    owner = _server_user()
    if owner is not None:
        _chown_tree(to_dir, owner)
    log_file = to_dir / LOG
    pg_ctl = postgres_program(pitr.bin_dir, "pg_ctl")
    argv = [pg_ctl, "start", "-D", str(to_dir), "-l", str(log_file), "-o", f"-p {port}"]
    runner.run(_as_user(argv, owner), timeout=120, check=False)
    try:
        stop_reason, reached, last_commit = _wait_for_promotion(log_file, plan, request.timeout)
    except BaseException:
        _stop(pg_ctl, to_dir, owner)
        raise
    if not request.keep_running:
        _stop(pg_ctl, to_dir, owner)
    shutil.rmtree(to_dir / SPOOL, ignore_errors=True)
    return RestoreResult(
        plan, time.monotonic() - started, reached, last_commit, stop_reason, port, str(log_file)
    )


def spooled_restore_command(spool: Path, fetch_command: str, keep: str | None = None) -> str:
    """restore_command answering from `spool` without starting a process of backupctl: an
    already verified, prefetched segment is moved out (a shell test and a rename), a name under
    `spool/absent/` (mark_absent) exits 1 ("not archived"); `fetch_command` (`backupctl wal
    fetch ...`) runs for everything else. History files and `keep` (the plan's last segment) are
    copied, not moved: PostgreSQL asks for them twice (a history at start and at promotion; the
    segment recovery ends in is read again when it ends at the archive's end).
    Nothing reaches %p that was not checked against its signed digest: the spool only ever holds
    verified files (prefetch_plan, `wal fetch`), and an absent marker only ever says "no"."""
    where = shlex.quote(str(spool))
    copied = "*.history" + (f"|{keep}" if keep else "")
    return (
        f"if [ -f {where}/%f ]; then case %f in {copied}) cp {where}/%f %p;; *) mv -f {where}/%f %p;; esac; "
        f"elif [ -e {where}/{ABSENT}/%f ]; then exit 1; else {fetch_command}; fi"
    )


def absent_names(fetched: list[str], plan: RestorePlan, request: RestoreRequest) -> list[str]:
    """Names PostgreSQL asks restore_command for that the archive does not hold, as listed when
    `prefetch_plan` fetched `fetched` (which holds every archived history file), so that each
    answer "not archived" costs a shell test rather than a start of backupctl (measured:
    docs/benchmarks.md, "Point-in-time recovery"):
    - timeline history files: with recovery_target_timeline = latest, PostgreSQL probes the
      history of the timeline after the newest one at start and at promotion, and at promotion
      asks for the history of the timeline it leaves, which timeline 1 never has;
    - with --latest, the segment after the plan's last one: the end of the archive, where
      recovery ends. Restoring to a time or LSN stops at the target, before it: a target past the
      archive still asks `wal fetch`, which looks at the targets again.
    """
    history = {name for name in fetched if name.endswith(".history")}
    timelines = [parse_wal_name(name).timeline for name in history]
    timelines += [plan.base.timeline]
    if plan.last_segment is not None:
        timelines.append(parse_wal_name(plan.last_segment).timeline)
    newest = max(timelines)
    names = [f"{timeline:08X}.history" for timeline in range(1, newest + 2)]
    names = [name for name in names if name not in history]
    if request.latest and plan.last_segment is not None:
        last = parse_wal_name(plan.last_segment)
        assert last.segno is not None
        names.append(segment_name(last.timeline, last.segno + 1))
    return names


def mark_absent(spool: Path, names: list[str]) -> None:
    """An empty file `spool/absent/NAME` per name (read by the restore_command's shell test)."""
    directory = spool / ABSENT
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).touch()


def prefetch_plan(
    archive: SegmentArchive,
    plan: RestorePlan,
    spool: Path,
    identities: list[Any],
    trusted: list[str],
    *,
    workers: int,
    limit: int = PREFETCH_LIMIT,
) -> list[str]:
    """Fetch the plan's WAL (and every timeline history file) into `spool` before the server
    starts, `workers` in parallel, each checked against its signed digest; at most `limit`
    segments (the rest is fetched on demand by restore_command, with its own prefetch).
    Returns the names fetched. Raises IntegrityError for a damaged one (before any replay)."""
    from concurrent.futures import ThreadPoolExecutor

    spool.mkdir(parents=True, exist_ok=True)
    records = plan.records or archive.list_records(trusted)
    low = RULES.sort_key(plan.first_segment)
    high = RULES.sort_key(plan.last_segment) if plan.last_segment else low
    names = [r.name for r in lineage(records) if low <= RULES.sort_key(r.name) <= high][:limit]
    names += [r.name for r in records if r.kind == "history"]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            name: pool.submit(archive.fetch_to, name, spool / name, identities, trusted) for name in names
        }
        for name, future in futures.items():
            try:
                future.result()
            except SegmentMissing:
                raise
            except IntegrityError as error:
                raise IntegrityError(
                    f"WAL segment {name} is damaged ({error}): nothing was replayed. Restore from another "
                    "target or to a point before it"
                ) from None
    return names


def _unpack_base(archive: SegmentArchive, base: BaseBackup, to_dir: Path, identities: list[Any]) -> None:
    tar = runner.require_tool("tar")
    with (
        archive.target.reader(base_key(archive, base.base_id, DATA_FILE)) as stored,
        decrypted_reader(stored, identities, plain_algorithm=algorithm_of(base.plain_digest)) as (
            plain,
            result,
        ),
    ):
        process = subprocess.Popen(
            [tar, "-x", "-f", "-", "-C", str(to_dir)], stdin=plain, stderr=subprocess.PIPE
        )
        _, error = process.communicate()
        stats = result()
    if process.returncode != 0:
        raise JobFailed(f"tar could not unpack base backup {base.base_id}: {runner.last_lines(error)}")
    if stats.plain_digest != base.plain_digest:
        raise IntegrityError(f"base backup {base.base_id} does not match its signed manifest")
    (to_dir / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)


def _write_recovery(request: RestoreRequest, plan: RestorePlan, to_dir: Path, port: int) -> None:
    fetch = [
        *request.command,
        "wal",
        "fetch",
        request.policy.name,
        "--source",
        request.source,
        "%f",
        "%p",
        "--spool",
        str(to_dir / SPOOL),
    ]
    if request.identity_file is not None:
        fetch += ["--identity", str(request.identity_file.absolute())]
    lines = {
        "restore_command": spooled_restore_command(
            to_dir / SPOOL,
            " ".join(shlex.quote(part) if "%" not in part else part for part in fetch),
            keep=plan.last_segment,
        ),
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "archive_mode": "off",  # the new cluster never writes into the archive it restores from
        "port": str(port),
        "unix_socket_directories": str(to_dir),
        "listen_addresses": "127.0.0.1",
        **plan.recovery_target,
        **request.settings,
    }
    with (to_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# point-in-time restore by backupctl\n")
        conf.writelines(f"{key} = {quote_literal(value)}\n" for key, value in lines.items())
    (to_dir / "recovery.signal").touch()
    os.chmod(to_dir, 0o700)


def _wait_for_promotion(
    log_file: Path, plan: RestorePlan, timeout: float
) -> tuple[str | None, str | None, str | None]:
    deadline = time.monotonic() + timeout
    while True:
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        if _NOT_REACHED in text or ("FATAL" in text and "startup process" in text) or "PANIC" in text:
            restored = re.findall(r'restored log file "([0-9A-F]{24})" from archive', text)
            after = restored[-1] if restored else plan.first_segment
            missing = RULES.successor(after)
            damaged = re.search(r"segment ([0-9A-F]{24}) on \S+ does not match its signed record", text)
            if damaged or "decryption failed" in text:
                name = damaged.group(1) if damaged else missing
                raise JobFailed(
                    f"WAL segment {name} is damaged (it does not match its signed record): recovery was "
                    f"stopped before replaying it. Restore from another target or to a point before it; "
                    f"server log: {runner.last_lines(text, 3)}"
                )
            raise JobFailed(
                f"recovery stopped before the target: WAL segment {missing} could not be restored "
                f"(last replayed: {after}); server log: {runner.last_lines(text, 3)}"
            )
        if "database system is ready to accept connections" in text:  # only after promotion
            stopping = _STOPPING.search(text)
            commit = _LAST_COMMIT.search(text)
            redo = _REDO_DONE.search(text)
            return (
                stopping.group(0) if stopping else None,
                redo.group(1) if redo else None,
                commit.group(1).strip() if commit else None,
            )
        if time.monotonic() > deadline:
            raise JobFailed(f"recovery did not finish within {timeout:.0f}s: {runner.last_lines(text, 3)}")
        time.sleep(PROMOTION_POLL)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigError("running as root, the restored server needs the 'postgres' system user") from None
    return "postgres"


def _as_user(argv: list[str], user: str | None) -> list[str]:
    return argv if user is None else [runner.require_tool("runuser", "util-linux"), "-u", user, "--", *argv]


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for directory, _, files in os.walk(root):
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), entry.pw_uid, entry.pw_gid)


def _stop(pg_ctl: str, to_dir: Path, user: str | None) -> None:
    runner.run(
        _as_user([pg_ctl, "stop", "-D", str(to_dir), "-m", "fast", "-w"], user), timeout=120, check=False
    )
