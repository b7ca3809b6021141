"""Running policies on their schedules: systemd timers, a crontab block, or the in-process daemon.

A policy has up to three scheduled *jobs*: its backup (`schedule:`), its restore drill
(`drill_schedule:`, running `drill_file:` or, without one, the policy's default drill) and its
sampled verify (`verify: {schedule, sample}`: `verify POLICY --sample N%`); each source
with a `pitr:` block adds the jobs of its point-in-time archive (scheduling.pitr_jobs: PostgreSQL
base backups on `base_backup_schedule`, binlog collection at its interval, and the long-running
WAL archiver of a source with `pitr.archiver.pgdata`, kept running rather than timed). All three
schedulers read the same five-field cron expressions and start the same commands,
`backupctl --policies DIR --state-dir DIR backup POLICY` and
`backupctl ... drill --wait 4h DRILL_FILE|POLICY`, so a policy behaves the same whichever
scheduler runs it. Next run times come from `backupctl.core.cronexpr`.

Backup, drill and prune of one policy exclude each other through the policy lock
(backupctl.locking). A scheduled drill waits for it (`--wait`, DRILL_LOCK_WAIT) rather than
failing at once: the slot of a quarterly drill that meets the nightly backup is not lost, and the
drill then proves the snapshot that backup just made.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from backupctl.core.cronexpr import CronExpr
from backupctl.errors import ConfigError, PolicyInvalid
from backupctl.scheduling.pitr_jobs import SERVICE_KINDS, PitrKind
from backupctl.settings import Settings

if TYPE_CHECKING:  # the loader (pydantic) is imported when policies are read, not at CLI start
    from backupctl.policy.loader import LoadedPolicy
    from backupctl.policy.schema import Policy

JobKind = Literal["backup", "drill", "verify"] | PitrKind
# How long a scheduled drill waits for a running backup/prune of its policy (`drill --wait`).
DRILL_LOCK_WAIT = "4h"


@dataclass(frozen=True)
class Scheduled:
    """One scheduled job of a policy: its backup, or its drill."""

    policy: Policy
    cron: CronExpr
    kind: JobKind = "backup"
    drill_file: Path | None = None  # absolute; None: the policy's default drill
    source: str | None = None  # the source of a point-in-time archive job
    pitr_command: tuple[str, ...] = ()  # its backupctl subcommand, e.g. ("binlog", "collect")

    @property
    def service(self) -> bool:
        """A long-running job (the WAL archiver): kept running, not started at cron times."""
        return self.kind in SERVICE_KINDS

    @property
    def archiver(self) -> Any:
        """The `pitr.archiver` block of a service's source (spool, pgdata, user)."""
        assert self.source is not None
        source: Any = self.policy.source(self.source)  # a postgres source: pitr_jobs made the job
        return source.pitr.archiver

    @property
    def name(self) -> str:
        """The policy's name (jobs of one policy share its lock, its env file, its daemon slot)."""
        return self.policy.name

    @property
    def slot(self) -> str:
        """What names the job's units, lock and log: the policy, plus the source of a PITR job."""
        return self.name if self.source is None else f"{self.name}-{self.source}"

    @property
    def lane(self) -> str:
        """Jobs of one lane never run at once (daemon): a policy's backup and drill share one; each
        PITR job has its own, so a long dump never delays binlog collection or a base backup."""
        return self.name if self.source is None else f"{self.kind}:{self.slot}"

    @property
    def job(self) -> str:
        """'backup' / 'drill' / 'binlog (db)': the job within its policy, for messages."""
        return self.kind if self.source is None else f"{self.kind} ({self.source})"

    @property
    def label(self) -> str:
        """'backup shop' / 'drill shop' / 'binlog shop/db', for messages."""
        return f"{self.kind} {self.name}" + (f"/{self.source}" if self.source else "")

    def command(self) -> list[str]:
        """The backupctl subcommand and its arguments (after the global options)."""
        if self.source is not None:
            return [*self.pitr_command, self.name, "--source", self.source]
        if self.kind == "backup":
            return ["backup", self.name]
        if self.kind == "verify":
            sample = self.policy.verify.sample if self.policy.verify else "10%"
            return ["verify", self.name, "--sample", sample]
        return ["drill", "--wait", DRILL_LOCK_WAIT, str(self.drill_file) if self.drill_file else self.name]

    def next_runs(self, count: int, after: datetime | None = None) -> list[datetime]:
        """The next `count` run times after `after` (default now), local time, timezone-aware.

        Cron, systemd timers and the daemon all read schedules as local wall-clock time.
        """
        start = (after or datetime.now().astimezone()).astimezone().replace(tzinfo=None)
        return [run.astimezone() for run in self.cron.next_runs(start, count)]


def scheduled_policies(settings: Settings) -> list[Scheduled]:
    """Every scheduled job of every valid policy: backups (`schedule:`), drills
    (`drill_schedule:`) and the jobs of point-in-time archives (scheduling.pitr_jobs), sorted by
    policy name, a policy's backup before its drill before its sources' PITR jobs.

    Secrets are not resolved (the scheduler does not need them; the run will). Raises
    PolicyInvalid (a ConfigError) naming every problem when no policy file is valid at all;
    ConfigError for an expression that never fires and for a `drill_file:` that is not a drill
    file of this policy (a missing one is the loader's error). Invalid files next to valid ones
    are skipped here, and `backupctl policy validate` names their problems.
    """
    from backupctl.policy.loader import validate_paths

    loaded, issues = validate_paths([settings.policies], check_secrets=False)
    if issues and not loaded:
        raise PolicyInvalid(issues)  # every problem, with file and line
    found: list[Scheduled] = []
    for item in sorted(loaded, key=lambda item: item.policy.name):
        if item.policy.schedule is not None:
            found.append(Scheduled(item.policy, _parse(item, "schedule", item.policy.schedule)))
        if item.policy.drill_schedule is not None:
            cron = _parse(item, "drill_schedule", item.policy.drill_schedule)
            found.append(Scheduled(item.policy, cron, "drill", resolve_drill_file(item)))
        if item.policy.verify is not None:
            cron = _parse(item, "verify.schedule", item.policy.verify.schedule)
            found.append(Scheduled(item.policy, cron, "verify"))
        found += pitr_scheduled(item)
    return found


def pitr_scheduled(item: LoadedPolicy) -> list[Scheduled]:
    """The PITR jobs of a policy's sources (none for a source without a `pitr:` block)."""
    from backupctl.scheduling.pitr_jobs import pitr_jobs

    found = []
    for index, source in enumerate(item.policy.sources):
        for job in pitr_jobs(source):
            cron = _parse(item, f"sources.{index}.pitr", job.cron)
            found.append(Scheduled(item.policy, cron, job.kind, source=source.name, pitr_command=job.command))
    return found


def unscheduled_archivers(items: list[Scheduled]) -> list[str]:
    """A note per source of these jobs' policies whose `pitr.archiver` has no `pgdata`: its
    archiver is not run by this host's scheduler (it belongs on the database host)."""
    notes = []
    for policy in {item.name: item.policy for item in items}.values():
        for source in policy.sources:
            archiver = getattr(getattr(source, "pitr", None), "archiver", None)
            if archiver is not None and getattr(archiver, "pgdata", "") is None:
                notes.append(
                    f"{policy.name}/{source.name}: pitr.archiver has no pgdata, so its `wal archiver` is "
                    "not scheduled here: set pgdata on the database host, or run it there (docs/pitr.md)"
                )
    return notes


def _parse(item: LoadedPolicy, key: str, expression: str) -> CronExpr:
    try:
        cron = CronExpr.parse(expression)
        cron.next_after(datetime.now())  # fails for expressions that never fire (Feb 30th)
    except ValueError as error:
        raise ConfigError(f"{item.file}: at '{key}': {error}") from None
    return cron


def resolve_drill_file(item: LoadedPolicy) -> Path | None:
    """The absolute path of a policy's `drill_file:` (relative paths are relative to the policy
    file's directory); None when the policy has none (its default drill runs).

    Raises ConfigError naming the policy file when the drill file does not exist, is not a file,
    is not YAML, or its `policy:` names another policy. The drill file is not validated in full
    here: it may use variables (`${BACKUPCTL_DRILL_SECRET}`, passwords) that only the scheduled
    run's environment holds; `backupctl drill FILE` validates it.
    """
    if item.policy.drill_file is None:
        return None
    where = f"{item.file}: at 'drill_file'"
    written = Path(item.policy.drill_file).expanduser()
    path = (item.file.absolute().parent / written).resolve()
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(
            f"{where}: drill file {path} {state} (relative paths start at the policy's directory)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{where}: cannot read drill file {path}: {error}") from None
    drilled = raw.get("policy") if isinstance(raw, dict) else None
    if not isinstance(drilled, str):
        raise ConfigError(f"{where}: {path} is not a drill file (no 'policy:' key)")
    if "${" not in drilled and drilled != item.policy.name:
        raise ConfigError(f"{where}: {path} drills policy '{drilled}', not '{item.policy.name}'")
    return path


def backupctl_argv(settings: Settings, executable: str | None = None) -> list[str]:
    """The absolute command that starts backupctl with this installation's policies and state.

    `executable` overrides the program (e.g. a wrapper). Otherwise: the running `backupctl`
    script when that is how we were started, else the one on PATH, else `python -m backupctl`
    with this interpreter. Paths are made absolute: schedulers start in another directory.
    """
    if executable:
        program = [str(Path(executable).absolute())]
    else:
        running = Path(sys.argv[0])
        if running.name == "backupctl" and running.exists():
            program = [str(running.absolute())]
        elif found := shutil.which("backupctl"):
            program = [str(Path(found).absolute())]
        else:
            program = [sys.executable, "-m", "backupctl"]
    argv = [
        *program,
        "--policies",
        str(settings.policies.absolute()),
        "--state-dir",
        str(settings.state_dir.absolute()),
    ]
    if settings.keys_dir.absolute() != (settings.state_dir / "keys").absolute():
        argv += ["--keys-dir", str(settings.keys_dir.absolute())]
    return argv


def catalog_note(settings: Settings) -> tuple[list[str], str | None]:
    """Extra argv for a non-default catalog, or a note when its URL holds a password.

    A password must not land on a command line (visible in `ps`, unit files, crontabs): then the
    operator puts `BACKUPCTL_CATALOG=...` in the policy's environment file instead.
    """
    default = f"sqlite:///{settings.state_dir.absolute()}/catalog.sqlite"
    if settings.catalog_url == default:
        return [], None
    from sqlalchemy.engine import make_url

    if make_url(settings.catalog_url).password:
        return [], "the catalog URL contains a password: set BACKUPCTL_CATALOG in the environment file"
    return ["--catalog", settings.catalog_url], None


def writable_paths(item: Scheduled, settings: Settings) -> list[str]:
    """Directories a run of the job writes besides the state directory.

    A backup (and a PITR job: base backups, binlogs) writes its local targets, local restic
    repositories and the directory of its
    `metrics_file:` (the file is replaced through a temp name there). A drill only *reads*
    targets (it never restores from restic), so it writes nothing of the policy's. Both write a
    SQLite catalog kept outside the state directory.
    """
    paths: list[str] = []
    from backupctl.targets.registry import host_path

    for target in item.policy.targets if item.kind != "drill" else []:  # PITR jobs write targets too
        if (path := host_path(target)) is not None:
            paths.append(path)
    if item.policy.metrics_file and item.policy.metrics_file.startswith("/"):  # every job writes metrics
        paths.append(str(Path(item.policy.metrics_file).parent))
    if item.service:  # the archiver writes its acks and lock files into its spool
        paths.append(str(Path(item.archiver.spool).expanduser().absolute()))
    if settings.catalog_url.startswith("sqlite:///"):
        catalog_dir = Path(settings.catalog_url[len("sqlite:///") :]).parent.absolute()
        if not catalog_dir.is_relative_to(settings.state_dir.absolute()):
            paths.append(str(catalog_dir))
    return sorted(set(paths))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `path` through a dot-prefixed temp name and a rename: readers (systemd, cron, which
    both ignore dot files) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    os.chmod(handle.name, mode)
    os.replace(handle.name, path)
