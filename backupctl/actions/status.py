"""`backupctl status`: the 3-2-1-1-0 rule per policy, from the catalog and the real targets.

Rules (each passes or fails with a reason):
  3 copies     production + the targets that hold the newest complete snapshot, reachable now
  2 media      those target copies live on at least two distinct media
  1 off-site   at least one of them is off-site
  1 immutable  at least one is immutable: S3 object lock *as read from the bucket*, never because
               the YAML says so; a reachable restic REST server declared append-only (restic
               cannot ask the server; shown as "declared")
  0 errors     the newest verification of the policy found no problem (and one exists)
  RPO          the newest complete snapshot is younger than objectives.rpo
  PITR RPO     for every source with a `pitr:` block: now - the newest archived WAL segment /
               binlog event is within the objective its own status uses, with no hole
               (actions/pitr_status.py: one probe per engine; none of it is computed here)
`evaluate` is pure (tests feed it facts); `gather` reads catalog and targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backupctl.actions.pitr_status import PitrArchiveStatus
from backupctl.catalog.store import Catalog, SnapshotView
from backupctl.core.durations import format_duration
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.base import Posture
from backupctl.targets.registry import traits_of


@dataclass
class TargetFacts:
    name: str
    medium: str
    offsite: bool
    reachable: bool
    immutable: bool
    holds_latest: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class Rule:
    name: str
    ok: bool
    detail: str


@dataclass
class PolicyStatus:
    policy: str
    compliant: bool
    latest_snapshot: str | None
    latest_age_seconds: float | None
    rules: list[Rule]
    targets: list[TargetFacts]
    pitr: list[PitrArchiveStatus] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return any(not t.holds_latest or not t.reachable for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "compliant": self.compliant,
            "degraded": self.degraded,
            "latest_snapshot": self.latest_snapshot,
            "latest_age_seconds": None if self.latest_age_seconds is None else round(self.latest_age_seconds),
            "rules": {rule.name: {"ok": rule.ok, "detail": rule.detail} for rule in self.rules},
            "targets": [t.__dict__ for t in self.targets],
            "pitr": [item.as_dict() for item in self.pitr],
        }


@dataclass
class VerificationFacts:
    at: datetime
    ok: bool
    target: str
    snapshot_id: str


def evaluate(
    policy: Policy,
    latest: SnapshotView | None,
    targets: list[TargetFacts],
    last_verification: VerificationFacts | None,
    now: datetime,
    pitr: list[PitrArchiveStatus] | None = None,
) -> PolicyStatus:
    holding = [t for t in targets if t.holds_latest and t.reachable]
    copies = 1 + len(holding)
    media = sorted({t.medium for t in holding})
    offsite = [t.name for t in holding if t.offsite]
    # S3 object lock is read from the bucket; a restic REST server's append-only mode can only
    # be declared (restic cannot ask the server), and the detail says so.
    declared = {t.name for t in policy.targets if traits_of(t).declared_immutability}
    immutable = [
        t.name + (" (append-only declared)" if t.name in declared else "") for t in holding if t.immutable
    ]
    missing = [t.name for t in targets if not t.holds_latest]
    unreachable = [t.name for t in targets if not t.reachable]
    why_missing = ""
    if missing:
        why_missing = f"; missing on {', '.join(missing)} (run `backupctl replicate {policy.name}`)"
    if unreachable:
        why_missing += f"; unreachable: {', '.join(unreachable)}"
    rules = [
        Rule(
            "copies",
            copies >= 3,
            f"{copies} copies (production + {', '.join(t.name for t in holding) or 'none'})"
            + ("" if copies >= 3 else ", need 3")
            + why_missing,
        ),
        Rule(
            "media",
            len(media) >= 2,
            f"{len(media)} media ({', '.join(media) or 'none'})"
            + ("" if len(media) >= 2 else ", need 2 distinct media among the copies"),
        ),
        Rule(
            "offsite",
            bool(offsite),
            f"off-site: {', '.join(offsite)}"
            if offsite
            else "no off-site copy of the newest snapshot (add an S3/SFTP target with offsite: true)",
        ),
        Rule(
            "immutable",
            bool(immutable),
            f"immutable: {', '.join(immutable)}"
            if immutable
            else "no immutable copy verified on a target (S3 object lock via `backupctl target setup`, "
            "or an append-only restic REST server)",
        ),
    ]
    if last_verification is None:
        rules.append(Rule("errors", False, f"never verified: run `backupctl verify {policy.name} latest`"))
    elif not last_verification.ok:
        rules.append(
            Rule(
                "errors",
                False,
                f"the last verification ({last_verification.snapshot_id} on "
                f"{last_verification.target}) found problems",
            )
        )
    else:
        rules.append(
            Rule(
                "errors",
                True,
                f"last verification ok ({last_verification.snapshot_id} on "
                f"{last_verification.target}, {last_verification.at:%Y-%m-%d %H:%M} UTC)",
            )
        )
    age: timedelta | None = None
    if latest is None:
        rules.append(Rule("rpo", False, "no complete snapshot"))
    else:
        age = now - latest.started_at
        fresh = age <= policy.objectives.rpo
        shown = format_duration(timedelta(seconds=max(1, int(age.total_seconds()))))
        detail = f"newest snapshot is {shown} old, RPO {format_duration(policy.objectives.rpo)}"
        rules.append(
            Rule("rpo", fresh, detail if fresh else detail + f" (run `backupctl backup {policy.name}`)")
        )
    if pitr:
        rules.append(_pitr_rule(pitr))
    return PolicyStatus(
        policy=policy.name,
        compliant=all(rule.ok for rule in rules),
        latest_snapshot=latest.id if latest else None,
        latest_age_seconds=age.total_seconds() if age is not None else None,
        rules=rules,
        targets=targets,
        pitr=list(pitr or []),
    )


def _pitr_rule(archives: list[PitrArchiveStatus]) -> Rule:
    """One rule over every point-in-time archive: the achieved RPO of each, and why one fails."""
    parts = []
    for item in archives:
        shown = (
            "nothing archived"
            if item.rpo_seconds is None
            else format_duration(timedelta(seconds=max(1, int(item.rpo_seconds))))
        )
        objective = format_duration(timedelta(seconds=item.objective_seconds))
        part = f"{item.source} ({item.archive}): achieved RPO {shown}, objective {objective}"
        if item.problems:
            part += " — " + "; ".join(item.problems)
        parts.append(part)
    return Rule("pitr_rpo", all(item.ok for item in archives), "; ".join(parts))


def target_posture(config: Any) -> Posture:
    """The real posture of a target, whatever its kind."""
    from backupctl.targets.store import open_store

    store = open_store(config)
    try:
        return store.posture()
    finally:
        store.close()


def observe_target(
    config: Any, policy: str, snapshot_id: str | None, trusted: list[str] | None
) -> tuple[Posture, list[str] | None]:
    """The target's real posture and, when `trusted` is given and the target is reachable, what
    `SnapshotStore.survey` finds of snapshot `snapshot_id` there (None: not looked at)."""
    from backupctl.errors import BackupctlError
    from backupctl.targets.store import open_store

    try:
        store = open_store(config)
    except BackupctlError as error:
        return _unreachable(config, error), None
    try:
        try:
            posture = store.posture()
        except BackupctlError as error:
            return _unreachable(config, error), None
        if trusted is None or snapshot_id is None or not posture.reachable:
            return posture, None
        try:
            return posture, store.survey(policy, snapshot_id, trusted)
        except (BackupctlError, OSError) as error:
            return posture, [f"snapshot {snapshot_id} on {config.name} could not be listed: {error}"]
    finally:
        store.close()


def _unreachable(config: Any, error: Exception) -> Posture:
    return Posture(reachable=False, medium=config.medium, offsite=config.offsite, problems=[str(error)])


def gather(
    catalog: Catalog,
    policy: Policy,
    now: datetime | None = None,
    *,
    settings: Settings | None = None,
    survey: bool = True,
) -> PolicyStatus:
    """The status of `policy`. With `settings` (the status command), it is read from the
    targets: each target the catalog says holds the newest snapshot is surveyed, and a copy that
    is gone or incomplete there counts as missing and is recorded so (`replicate` then refills
    it); and the point-in-time archives of its sources are read (listings and the catalog,
    nothing downloaded). Without settings, or with `survey=False` (the metrics written right
    after a backup wrote the copies), the catalog's word on the copies is taken."""
    from backupctl.actions.access import trusted_keys
    from backupctl.actions.pitr_status import pitr_statuses, record_observations

    now = now or datetime.now(UTC)
    trusted = trusted_keys(settings, policy) if settings is not None and survey else None
    snapshots = catalog.snapshots(policy.name)
    latest = snapshots[0] if snapshots else None
    facts: list[TargetFacts] = []
    for config in policy.targets:
        holds = bool(latest and latest.targets.get(config.name) == "complete")
        posture, missing = observe_target(
            config, policy.name, latest.id if latest and holds else None, trusted
        )
        problems = list(posture.problems)
        if latest is not None and missing:
            holds = False
            problems += missing
            catalog.record_copy(latest.id, config.name, "missing", error="; ".join(missing))
        facts.append(
            TargetFacts(config.name, config.medium, config.offsite, posture.reachable, posture.immutable,
                        holds, problems)
        )  # fmt: skip
    verification = catalog.last_verification(policy.name)
    last = None
    if verification is not None:
        last = VerificationFacts(verification[0], verification[1], verification[2], verification[3])
    pitr = pitr_statuses(settings, catalog, policy, now) if settings is not None else None
    if pitr:
        record_observations(catalog, pitr)  # the achieved RPO of the archives over time (#14)
    status = evaluate(policy, latest, facts, last, now, pitr)
    catalog.record_observation("status", policy.name, status.as_dict())  # evidence history (#14)
    return status
