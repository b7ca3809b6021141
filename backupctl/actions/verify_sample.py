"""`backupctl verify POLICY --sample N%`: read about N% of the stored bytes per run, so that over
successive runs every stored byte is read (docs/operations.md, "Sampled verify").

The unit read is one copy (a snapshot on one target), checked exactly as `verify` checks it
(signed manifest; per artifact presence, size, sha256 of the stored bytes, full decrypt and
decompress against the manifest's plain digest), and recorded as a verification like any verify.

Which copies: **least recently read first**. A copy's last read is its newest verification (ok or
not) in the catalog, or, never verified, the time its snapshot finished (it was written and
re-hashed then). A run takes copies in that order until it has N% of the stored bytes of the
policy's copies on the targets being sampled (at least one copy). Why this order rather than a
random sample or a fixed slice of snapshot ids: it needs no state beyond the verifications the
catalog already records; a copy added since the last run waits its turn behind older unread ones
(a fresh copy never starves an old one), so while the total stays about the same every copy is
read within ceil(100/N) runs — one *cycle*; and an interrupted or failed run simply leaves its
copies first in line for the next one.

Cycle progress: the start of the current cycle is kept in the run ledger (an observation
`sample:POLICY/TARGET` per run); progress is the share of the target's stored bytes read since
then. When every copy has been read, the next run starts a new cycle.

Deduplicating targets (restic) hold no per-copy bytes of their own: they are sampled with the
store's own data check, `restic check --read-data-subset n/t`, t = ceil(100/N) and n advancing by
one per run (kept in the same observation), so t runs read every pack once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.access import load_identities, open_catalog, trusted_keys
from backupctl.actions.verify import TargetVerification, verify_on_store
from backupctl.catalog.store import Catalog, SnapshotView
from backupctl.errors import BackupctlError, ConfigError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.registry import traits_of
from backupctl.targets.store import open_store


def parse_sample(text: str) -> float:
    """'10%' -> 10.0. Raises ConfigError for anything outside (0, 100]."""
    try:
        percent = float(text.strip().removesuffix("%"))
    except ValueError:
        percent = -1.0
    if not text.strip().endswith("%") or not 0 < percent <= 100:
        raise ConfigError(f"--sample takes a percentage between 0 and 100, e.g. 10% (got '{text}')")
    return percent


@dataclass
class TargetSample:
    """What one sampled run read on one target."""

    target: str
    method: str  # "copies" (read and checked per copy) or "read-data-subset" (the store's own check)
    total_bytes: int = 0  # stored bytes of the policy's copies on this target
    read_bytes: int = 0
    copies_total: int = 0
    cycle_runs: int = 0  # ceil(100/N): runs that read everything once
    cycle_started: str = ""
    cycle_progress: float = 0.0  # share of total_bytes read in the current cycle, after this run
    subset: str | None = None  # the n/t slice (deduplicating targets)
    results: list[TargetVerification] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(result.ok for result in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "method": self.method,
            "total_bytes": self.total_bytes,
            "read_bytes": self.read_bytes,
            "copies_total": self.copies_total,
            "copies_read": [
                {"snapshot_id": r.snapshot_id, "ok": r.ok, "artifacts": [a.file for a in r.artifacts]}
                for r in self.results
            ],
            "subset": self.subset,
            "cycle": {
                "runs": self.cycle_runs,
                "started": self.cycle_started,
                "progress": self.cycle_progress,
            },
            "problems": self.problems + [p for r in self.results for p in r.problems],
        }


@dataclass
class SampleReport:
    policy: str
    sample_percent: float
    targets: list[TargetSample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(target.ok for target in self.targets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "ok": self.ok,
            "sample_percent": self.sample_percent,
            "total_bytes": sum(t.total_bytes for t in self.targets),
            "read_bytes": sum(t.read_bytes for t in self.targets),
            "targets": [t.as_dict() for t in self.targets],
        }


def verify_sample(
    settings: Settings,
    policy: Policy,
    percent: float,
    *,
    target_names: list[str] | None = None,
    identity_file: Path | None = None,
) -> SampleReport:
    """One sampled run over every (or the named) target of `policy`; see the module doc."""
    catalog = open_catalog(settings)
    views = catalog.snapshots(policy.name)  # complete and partial, newest first
    report = SampleReport(policy.name, percent)
    cycle_runs = math.ceil(100 / percent)
    identities: list[Any] | None = None
    for config in policy.targets:
        if target_names and config.name not in target_names:
            continue
        held = [view for view in views if view.targets.get(config.name) == "complete"]
        if not held:
            continue
        subject = f"{policy.name}/{config.name}"
        state = catalog.last_observation("sample", subject) or {}
        if traits_of(config).deduplicating:
            sample = _sample_store_check(catalog, policy, config, held, state, cycle_runs)
        else:
            if identities is None:
                identities = load_identities(policy, identity_file)
            sample = _sample_copies(settings, catalog, policy, config, held, state, percent, identities)
        sample.cycle_runs = cycle_runs
        catalog.record_observation("sample", subject, {
            "target": config.name, "method": sample.method, "read_bytes": sample.read_bytes,
            "total_bytes": sample.total_bytes, "subset": sample.subset, "ok": sample.ok,
            "cycle_started": sample.cycle_started, "cycle_progress": sample.cycle_progress,
            "copies": [r.snapshot_id for r in sample.results],
        })  # fmt: skip
        report.targets.append(sample)
    return report


def _sample_copies(
    settings: Settings,
    catalog: Catalog,
    policy: Policy,
    config: Any,
    held: list[SnapshotView],
    state: dict[str, Any],
    percent: float,
    identities: list[Any],
) -> TargetSample:
    sample = TargetSample(config.name, "copies", copies_total=len(held))
    last_reads = catalog.last_reads(policy.name)

    def last_read(view: SnapshotView) -> datetime:
        return last_reads.get((view.id, config.name)) or view.finished_at or view.started_at

    sample.total_bytes = sum(view.stored_bytes for view in held)
    started = _cycle_start(state)
    budget = max(1, math.ceil(sample.total_bytes * percent / 100))
    chosen: list[SnapshotView] = []
    for view in sorted(held, key=lambda v: (last_read(v), v.id)):
        if chosen and sample.read_bytes >= budget:
            break
        chosen.append(view)
        sample.read_bytes += view.stored_bytes
    sources = {s.name for s in policy.sources if config in policy.targets_for(s)}
    trusted = trusted_keys(settings, policy)
    try:
        store = open_store(config)
    except BackupctlError as error:
        sample.problems.append(f"{config.name}: {error}")
        sample.read_bytes = 0
        return sample
    try:
        for view in chosen:
            result = verify_on_store(store, policy, view, trusted, identities, sources)
            catalog.record_verification(view.id, config.name, result.ok, result.problems)
            sample.results.append(result)
    finally:
        store.close()
    read_in_cycle = {v.id for v in held if last_read(v) >= started} | {v.id for v in chosen}
    covered = sum(v.stored_bytes for v in held if v.id in read_in_cycle)
    sample.cycle_started = started.isoformat()
    sample.cycle_progress = round(covered / sample.total_bytes, 4) if sample.total_bytes else 1.0
    return sample


def _cycle_start(state: dict[str, Any]) -> datetime:
    """The current cycle's start: the previous run's, unless that run completed its cycle (or
    there was none): then now."""
    previous = state.get("cycle_started")
    if not previous or float(state.get("cycle_progress", 0.0)) >= 1.0:
        return datetime.now(UTC)
    return datetime.fromisoformat(str(previous))


def _sample_store_check(
    catalog: Catalog,
    policy: Policy,
    config: Any,
    held: list[SnapshotView],
    state: dict[str, Any],
    cycle_runs: int,
) -> TargetSample:
    """`check --read-data-subset n/t` on a deduplicating store, n advancing per run."""
    sample = TargetSample(config.name, "read-data-subset", copies_total=len(held))
    previous = str(state.get("subset") or "")
    last_n, _, last_t = previous.partition("/")
    n = int(last_n) % cycle_runs + 1 if last_n.isdigit() and last_t == str(cycle_runs) else 1
    sample.subset = f"{n}/{cycle_runs}"
    started = state.get("cycle_started") if n > 1 else None
    sample.cycle_started = str(started or datetime.now(UTC).isoformat())
    sample.cycle_progress = round(n / cycle_runs, 4)
    store = open_store(config)
    try:
        problems = store.check_data(sample.subset)
    except BackupctlError as error:
        problems = [str(error)]
    finally:
        store.close()
    sample.problems = [f"{config.name}: {problem}" for problem in problems]
    # Recorded against the newest snapshot it holds, so the evidence's verify-runs control
    # sees the check (the data read belongs to the whole repository).
    catalog.record_verification(held[0].id, config.name, not problems, sample.problems)
    return sample
