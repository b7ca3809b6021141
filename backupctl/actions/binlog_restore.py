"""Restore a MySQL/MariaDB source to a point in time: the newest dump before T + binlog replay.

Order of work, so that a missing or damaged binlog never leaves a half-restored database:
1. plan: the newest dump (with a binlog position) finished by T, the archived binlogs from that
   position to the file covering T; a hole names the missing file and the last recoverable time;
2. fetch and authenticate every binlog of the plan (signature, digest, header pass) into a
   private temporary directory: a deleted or flipped file fails here, naming it;
3. restore the dump (the ordinary restore: signed manifest, sha256, row counts compared);
4. replay: `mariadb-binlog --start-position=<dump position> --stop-datetime=T | mariadb`.
`--dry-run` stops after 1 and returns the plan.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.access import load_identities, open_catalog
from backupctl.actions.binlog import binlog_source, dump_points
from backupctl.actions.events import Events
from backupctl.actions.restore import run_restore
from backupctl.core.secrets import mask, mask_url_password
from backupctl.errors import ConfigError
from backupctl.pitr.mysql_archive import BinlogArchiveStore
from backupctl.pitr.mysql_chain import RestorePlan, plan_restore
from backupctl.pitr.mysql_replay import replay
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.sources.base import RestoreRequest
from backupctl.sources.mysql import parse_url


@dataclass
class PointInTimeResult:
    policy: str
    source: str
    asked: str  # the point asked for: an ISO time or "latest"
    plan: RestorePlan
    destination: str = ""
    dry_run: bool = False
    dump_seconds: float = 0.0
    fetch_seconds: float = 0.0
    replay_seconds: float = 0.0
    replay_sql_bytes: int = 0
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reached(self) -> str:
        return datetime.fromtimestamp(self.plan.reached, UTC).isoformat()

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "asked": self.asked,
            "reached": self.reached,
            "plan": self.plan.as_dict(),
            "destination": self.destination,
            "dry_run": self.dry_run,
            "seconds": {
                "dump": round(self.dump_seconds, 3),
                "fetch": round(self.fetch_seconds, 3),
                "replay": round(self.replay_seconds, 3),
            },
            "replay_sql_bytes": self.replay_sql_bytes,
            "mismatches": self.mismatches,
            "notes": self.notes,
            "ok": not self.mismatches,
        }


def plan_point_in_time(
    settings: Settings,
    policy: Policy,
    source_name: str,
    archive: BinlogArchiveStore,
    to_time: datetime | None,
) -> RestorePlan:
    """The restore plan (see `mysql_chain.plan_restore`). Raises JobFailed/GapError."""
    binlog_source(policy, source_name)
    dumps = dump_points(open_catalog(settings), policy.name, source_name)
    return plan_restore(dumps, archive.binlogs(), to_time)


def run_point_in_time_restore(
    settings: Settings,
    policy: Policy,
    source_name: str,
    archive: BinlogArchiveStore,
    request: RestoreRequest,
    to_time: datetime | None,
    *,
    identity_file: Path | None = None,
    dry_run: bool = False,
    precheck: bool = True,
    events: Events | None = None,
) -> PointInTimeResult:
    """Restore `source_name` into `request.to_db` as it was at `to_time` (None: the newest point).

    `archive` is the source's binlog archive; the age identity is the policy's or `identity_file`.
    Raises ConfigError, JobFailed (GapError for a hole, IntegrityError for a damaged binlog: both
    before anything is written).
    """
    source, _settings = binlog_source(policy, source_name)
    if to_time is not None and to_time.tzinfo is None:
        raise ConfigError("--to-time needs a time zone (e.g. 2026-12-06T05:30:00Z or +01:00)")
    plan = plan_point_in_time(settings, policy, source_name, archive, to_time)
    asked = "latest" if to_time is None else to_time.astimezone(UTC).isoformat()
    result = PointInTimeResult(policy.name, source_name, asked, plan, dry_run=dry_run, notes=list(plan.notes))
    if to_time is not None and to_time.microsecond:
        result.notes.append(
            "binlog times have one-second resolution: replay stops at the start of that second"
        )
    if dry_run:
        return result
    if not request.to_db:
        raise ConfigError("a point-in-time restore needs a destination database URL (--to-db)")
    destination = parse_url(request.to_db, request.password)
    identities = load_identities(policy, identity_file)
    with tempfile.TemporaryDirectory(prefix="backupctl-pitr-") as scratch:
        started = time.monotonic()
        files = []
        for name in plan.files:
            target = Path(scratch) / name
            archive.fetch(name, target, identities)  # authenticated; raises naming the file
            files.append(target)
        result.fetch_seconds = time.monotonic() - started
        restored = run_restore(
            settings,
            policy,
            plan.dump.snapshot_id,
            source_name,
            request,
            identity_file=identity_file,
            precheck=precheck,
            events=events,
        )
        result.dump_seconds = restored.seconds
        result.mismatches = list(restored.mismatches)
        result.notes.extend(restored.notes)
        if restored.roles.created:  # the dump's recorded accounts (Source.recreate_roles)
            result.notes.append("accounts created: " + ", ".join(restored.roles.created))
        result.notes.extend(restored.roles.notes)
        done = replay(files, plan.start_position, plan.stop, source.database, destination)
    result.replay_seconds, result.replay_sql_bytes = done.seconds, done.sql_bytes
    result.destination = mask(mask_url_password(request.to_db))
    return result
