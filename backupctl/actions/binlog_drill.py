"""A point-in-time drill of a MySQL/MariaDB source: dump + binlog replay inside staging, proved.

The ordinary drill (actions/drill.py: fetch, staging databases, restore, checks, teardown) runs
with the dump the plan picks, and its `after_restore` hook replays the archived binlogs into the
staging database: `mariadb-binlog` decodes here (the files were fetched and authenticated before
the drill started) and its SQL streams into the staging server's own client, so the Docker and
local runtimes work alike. The replay is a stage of its own and part of the measured RTO.

The proof that the restored data reached the point: `newest_row` (a query returning the newest
row's time, UTC, e.g. `SELECT MAX(placed) FROM orders`) must lie within [T - RPO, T], T being the
point asked for (for `latest`: the newest archived time) and RPO the binlog objective. Without
`newest_row` the check reports the point reached by the binlogs only.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.access import load_identities, open_catalog
from backupctl.actions.binlog import binlog_source, dump_points
from backupctl.actions.drill import DrillOutcome, run_drill
from backupctl.actions.events import Events
from backupctl.checks.base import CheckResult
from backupctl.core import runner
from backupctl.drills.schema import Drill, Service
from backupctl.errors import ConfigError, IntegrityError, JobFailed, SourceError
from backupctl.pitr.mysql_archive import BinlogArchiveStore
from backupctl.pitr.mysql_chain import RestorePlan, plan_restore
from backupctl.pitr.mysql_replay import binlog_argv
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.sources.mysql import _find_tool
from backupctl.staging.base import StagingRuntime


@dataclass
class PointInTimeDrill:
    """What the drill asked and reached, beside the ordinary drill outcome."""

    outcome: DrillOutcome
    asked: str
    reached: str
    plan: RestorePlan
    newest_row: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "reached": self.reached, "newest_row": self.newest_row,
                "plan": self.plan.as_dict()}  # fmt: skip


def pick_point(policy: Policy, source_name: str, archive: BinlogArchiveStore, settings: Settings,
               to: str, rng: random.Random | None = None) -> datetime | None:  # fmt: skip
    """`latest` -> None; `random` -> a whole second between the oldest dump and the newest archived
    time (None, i.e. latest, when no whole second lies between them yet); else an ISO time (UTC
    without a zone). Raises ConfigError for a malformed time, JobFailed when nothing is archived."""
    if to == "latest":
        return None
    if to != "random":
        try:
            moment = datetime.fromisoformat(to.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--at {to!r}: expected latest, random or an ISO time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    dumps, chain = dump_points(open_catalog(settings), policy.name, source_name), archive.binlogs()
    if not dumps or not chain:
        raise JobFailed("a random point needs a dump with a binlog position and archived binlogs")
    low = int(dumps[0].finished.timestamp()) + 1
    high = max(item.covered_until for item in chain)
    if low > high:  # the archive ends within the dump's last second: only `latest` is after the dump
        return None
    return datetime.fromtimestamp((rng or random.Random()).randint(low, high), UTC)


def run_binlog_drill(
    settings: Settings,
    policy: Policy,
    drill: Drill,
    source_name: str,
    archive: BinlogArchiveStore,
    to_time: datetime | None,
    *,
    base_dir: Path,
    newest_row: str | None = None,
    runtime_choice: str | None = None,
    identity_file: Path | None = None,
    check_objectives: bool = True,
    events: Events | None = None,
) -> PointInTimeDrill:
    """Drill `source_name` at `to_time` (None: the newest point). Raises ConfigError/JobFailed
    before staging starts (no plan, a hole, a damaged binlog); otherwise the outcome says."""
    mysql_source, settings_block = binlog_source(policy, source_name)
    plan = plan_restore(
        dump_points(open_catalog(settings), policy.name, source_name), archive.binlogs(), to_time
    )
    identities = load_identities(policy, identity_file)
    asked = "latest" if to_time is None else to_time.astimezone(UTC).isoformat()
    point = plan.reached if to_time is None else int(to_time.timestamp())
    reached = datetime.fromtimestamp(point, UTC).isoformat()
    rpo = settings_block.rpo.total_seconds()
    seen: dict[str, str | None] = {"newest": None}
    with tempfile.TemporaryDirectory(prefix="backupctl-pitr-drill-") as scratch:
        files = []
        for name in plan.files:
            archive.fetch(name, Path(scratch) / name, identities)  # authenticated before staging starts
            files.append(Path(scratch) / name)

        def replay(runtime: StagingRuntime, service: Service, database: str, source: str,
                   outcome: DrillOutcome) -> str | None:  # fmt: skip
            if source != source_name:
                return None
            tool = _find_tool("mariadb-binlog", "mysqlbinlog")
            argv = binlog_argv(tool, files, plan.start_position, plan.stop, mysql_source.database, database)
            decoder = runner.start(argv, env={"TZ": "UTC"})
            assert decoder.stdout is not None and decoder.stderr is not None
            errors = runner.StderrTail(decoder.stderr)
            try:
                runtime.restore_database(service, database, decoder.stdout)  # type: ignore[arg-type]
            finally:
                decoder.stdout.close()
                status = decoder.wait()
                runner.stop(decoder)
            if status != 0:
                raise SourceError(f"mariadb-binlog exited with status {status}: {errors.text()}")
            outcome.checks.append(
                _point_check(runtime, service, database, newest_row, point, rpo, asked, seen)
            )
            if not outcome.checks[-1].ok:
                raise IntegrityError(f"{outcome.checks[-1].name}: {outcome.checks[-1].detail}")
            return f"{len(files)} binlog(s) up to {reached}"

        outcome = run_drill(
            settings, policy, drill, base_dir=base_dir, snapshot_ref=plan.dump.snapshot_id,
            runtime_choice=runtime_choice, identity_file=identity_file, check_objectives=check_objectives,
            events=events, after_restore=replay,
        )  # fmt: skip
    return PointInTimeDrill(outcome, asked, reached, plan, seen["newest"])


def _point_check(
    runtime: StagingRuntime,
    service: Service,
    database: str,
    newest_row: str | None,
    point: int,
    rpo: float,
    asked: str,
    seen: dict[str, str | None],
) -> CheckResult:
    """The integrity check `point in time`: newest row time within [point - rpo, point]."""
    name = "point in time"
    reached = datetime.fromtimestamp(point, UTC).isoformat()
    if newest_row is None:
        detail = f"asked {asked}, binlogs reach {reached}"
        return CheckResult(name=name, kind="integrity", ok=True, detail=detail, duration=0.0)
    value = runtime.sql(service, database, newest_row).scalar
    seen["newest"] = value
    newest = _as_time(value)
    ok = newest is not None and point - rpo <= newest <= point
    shown = datetime.fromtimestamp(newest, UTC).isoformat() if newest is not None else repr(value)
    detail = f"asked {asked}, reached {reached}, newest row {shown}, window [T - {rpo:.0f}s, T]"
    return CheckResult(name=name, kind="integrity", ok=ok, detail=detail, duration=0.0)


def _as_time(value: str | None) -> float | None:
    """A query's value as Unix seconds: a number, or a DATETIME text read as UTC."""
    if value in (None, "", "NULL"):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
