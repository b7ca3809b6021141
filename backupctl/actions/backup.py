"""`backupctl backup POLICY`: dump every source, encrypted, to every target, then record it.

Plan of one run:
1. open the run's snapshot stores (backupctl.targets.store), starting what is slow to start side
   by side (actions/ahead.py): the restic processes of the first stream source and of the
   manifests (these at the lowest CPU priority); check the other targets (a target that refuses
   is failed for this run); start the first source's dump; meanwhile open the catalog (runs
   left 'running' by a dead process of this host become 'failed') and record this run as running;
2. per source, fan its one dump out to the stores (actions/backup_fanout.py): zstd → age → the
   first healthy blob store, re-hashed and copied to the others; the plain stream tee'd to the
   deduplicating stores (restic);
3. per store: commit the signed manifest of the artifacts it holds;
4. the catalog row becomes complete (all targets), partial (exit 3) or failed (exit 1);
5. with its own snapshot recorded, the run sweeps what earlier failed and killed runs of the
   policy left on the targets and no earlier sweep removed (actions/sweep.py, `swept`).
Nothing orphaned: a run that fails (a source or target error, a full disk, SIGTERM, Ctrl-C)
removes what it wrote on the blob targets before it exits, except where the target failed
transiently (unreachable: waiting on it again would only delay the exit); a failed target of a
partial run likewise. A killed run leaves temp names, objects without a catalog row that says
complete (even signed manifests), incomplete uploads and restic snapshots of what it streamed,
and a 'running' row: the next run (step 5) or prune sweeps them.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backupctl import __version__
from backupctl.actions.backup_fanout import BackupRun, TargetOutcome, describe, store_source
from backupctl.actions.events import Events, LogEvents
from backupctl.core.crypto import SigningKey, load_signing_key, parse_recipients
from backupctl.core.killpoints import pause_point
from backupctl.core.manifest import ArtifactRecord, Manifest, new_snapshot_id, utc_now_text
from backupctl.errors import BackupctlError, JobFailed, PartialFailure, TargetError
from backupctl.policy.loader import LoadedPolicy
from backupctl.settings import Settings
from backupctl.sources.base import build_source

if TYPE_CHECKING:
    from backupctl.catalog.store import Catalog


@dataclass
class BackupResult:
    snapshot_id: str
    policy: str
    status: str
    seconds: float
    artifacts: list[ArtifactRecord]
    targets: dict[str, TargetOutcome]
    error: str | None = None
    swept: list[dict[str, Any]] = field(default_factory=list)  # actions/sweep.py, per target

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "policy": self.policy,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "plain_bytes": sum(a.plain_bytes for a in self.artifacts),
            "stored_bytes": sum(a.stored_bytes for a in self.artifacts),
            "sources": {
                a.source: {"plain_bytes": a.plain_bytes, "stored_bytes": a.stored_bytes, "facts": a.facts}
                for a in self.artifacts
            },
            "targets": {
                name: {"status": t.status, "error": t.error, "discarded_bytes": t.discarded_bytes}
                for name, t in self.targets.items()
            },
            "error": self.error,
            "swept": self.swept,
        }


def run_backup(settings: Settings, loaded: LoadedPolicy, events: Events | None = None) -> BackupResult:
    """Run one backup. Raises JobFailed (exit 1) or PartialFailure (exit 3) after recording."""
    events = events or LogEvents()
    policy = loaded.policy
    recipients = parse_recipients(policy.encryption.recipients)  # a bad key: exit 2, nothing started
    signing = load_signing_key(settings.keys_dir)
    started, started_at, started_text = time.monotonic(), datetime.now(UTC), utc_now_text()
    began = time.time()  # partial writes begun before this are no live writer's: see _sweep
    run = BackupRun(policy, new_snapshot_id(started_at), recipients, events)
    catalog: Catalog | None = None
    try:
        run.open_stores()  # restic processes start ahead: see actions/ahead.py
        sources = {config.name: build_source(config) for config in policy.sources}
        run.ahead.dump.start(policy.sources[0].name, sources[policy.sources[0].name])
        # The catalog opens in a thread while the dump streams (started after it: its imports
        # would hold the GIL the dump's start needs); nothing reaches a target before the run
        # is recorded as running there (actions/ahead.py: CatalogAhead, gated).
        run.ahead.catalog.start(
            lambda: _begin(settings, loaded, run.snapshot_id, started_at),
            then=lambda begun: _announce(begun, loaded.policy.name, run.snapshot_id, events),
        )
        for config in policy.sources:
            record = store_source(run, config, sources[config.name])
            pause_point("source-stored")
            run.artifacts.append(record)
            # What the source could not take faithfully (outside links, devices): said aloud here,
            # recorded in the manifest's facts.
            for note in [*record.facts.get("warnings", []), *record.facts.get("skipped", [])]:
                events.warning(f"source {config.name}: {note}")
        manifest = Manifest(
            snapshot_id=run.snapshot_id, policy=policy.name, policy_sha256=loaded.sha256,
            host=socket.gethostname(), backupctl_version=__version__, started_at=started_text,
            finished_at=utc_now_text(), recipients=[str(r) for r in recipients],
            signing_public_key=signing.public_b64, artifacts=run.artifacts,
        )  # fmt: skip
        catalog = run.ahead.catalog.wait().catalog  # (every stored artifact waited for it)
        full_sha = _commit_manifests(run, manifest, signing)
        pause_point("manifests-written")
    except BaseException as error:  # including KeyboardInterrupt / SIGTERM: never leave 'running'
        begun = run.ahead.catalog.settle()
        if begun is None:  # the catalog could not record the run: nothing was written to a target
            original = run.ahead.catalog.error
            if original is not None and original is not error:
                raise original from None
            raise
        _record_failure(begun.catalog, run, error, _discard_quietly(run, list(run.blobs)))
        raise
    finally:
        run.close()  # anything started ahead and not used commits nothing
    return _finish(settings, loaded, catalog, run, manifest, full_sha, time.monotonic() - started, began)


@dataclass
class _Begun:
    catalog: Catalog
    interrupted: list[str]  # earlier runs of this host left 'running', now marked failed


def _begin(settings: Settings, loaded: LoadedPolicy, snapshot_id: str, started_at: datetime) -> _Begun:
    """Open the catalog (runs left 'running' by a dead process of this host become 'failed')
    and record this run as running. Runs in a thread (actions/ahead.py: CatalogAhead): it logs
    nothing itself, `_announce` does."""
    from backupctl.catalog.store import Catalog  # SQLAlchemy: ~0.3 s of imports, overlapped

    catalog = Catalog.open(settings.catalog_url)
    interrupted = list(catalog.mark_interrupted(loaded.policy.name))
    catalog.begin_snapshot(snapshot_id, loaded.policy.name, loaded.sha256, started_at)
    return _Begun(catalog, interrupted)


def _announce(begun: _Begun, policy: str, snapshot_id: str, events: Events) -> None:
    """Once the run is recorded (in the thread that first waits for it, before its first write
    to a target): say so."""
    for stale in begun.interrupted:
        events.warning(f"snapshot {stale} of an earlier run was interrupted; it is marked failed")
    events.info(f"backup {policy}: snapshot {snapshot_id}")
    pause_point("run-started")  # test-only (core/killpoints.py): recorded, nothing written yet


def _commit_manifests(run: BackupRun, manifest: Manifest, signing: SigningKey) -> str:
    """Each store not failed gets the signed manifest of the artifacts it holds: the snapshot
    becomes complete there. The sha256 of the full manifest ("" when no store holds all)."""
    stores = run.stores()
    full_sha = ""
    for name, outcome in run.outcomes.items():
        if outcome.status == "failed":
            continue
        per_target = Manifest(**{**manifest.__dict__, "artifacts": outcome.artifacts})
        try:
            digest = stores[name].write_manifest(per_target, signing)
        except (TargetError, OSError) as error:
            run.fail(name, error)
            continue
        outcome.status = "complete"
        pause_point("manifest-written")  # on one target, not yet on the next
        if len(outcome.artifacts) == len(manifest.artifacts):
            full_sha = digest
        if not stores[name].traits.deduplicating:  # (restic logged its snapshots already)
            run.events.info(f"target {name}: snapshot {manifest.snapshot_id} complete")
    return full_sha


def _discard_quietly(run: BackupRun, names: list[str]) -> list[str]:
    """`run.discard` on a failure path: a second interruption (another Ctrl-C) or an error while
    removing must not hide the first error; the next run's sweep removes what is left."""
    try:
        return run.discard(names)
    except (Exception, KeyboardInterrupt) as error:
        run.events.warning(f"could not remove what this run wrote: {describe(error)}")
        return []


def _record_failure(catalog: Catalog, run: BackupRun, error: BaseException, discarded: list[str]) -> None:
    """The run failed: its row, and per target what is left of it. Where the run removed
    all it wrote, the copy is `deleted` with the sweep's note (actions/sweep.py skips it)."""
    from backupctl.actions.sweep import SWEPT_NOTE
    from backupctl.catalog.store import CopyState

    message = describe(error)
    catalog.fail_snapshot(run.snapshot_id, message)
    copies = [
        CopyState(run.snapshot_id, name, "deleted", 0, SWEPT_NOTE)
        if name in discarded
        else CopyState(run.snapshot_id, name, "failed", 0, outcome.error or message)
        for name, outcome in run.outcomes.items()
        if name in discarded or outcome.artifacts or outcome.status == "failed"
    ]
    catalog.record_copies(copies)


def _finish(
    settings: Settings,
    loaded: LoadedPolicy,
    catalog: Catalog,
    run: BackupRun,
    manifest: Manifest,
    full_sha: str,
    seconds: float,
    began: float,
) -> BackupResult:
    """Record the run: complete (all targets), partial (exit 3) or failed (exit 1); then sweep
    what earlier runs left."""
    from backupctl.catalog.store import CopyState  # imported (with SQLAlchemy) by _begin

    policy, snapshot_id, outcomes = loaded.policy, run.snapshot_id, run.outcomes
    complete = [o for o in outcomes.values() if o.status == "complete"]
    failed = [o for o in outcomes.values() if o.status == "failed"]
    copies = [
        CopyState(
            snapshot_id,
            outcome.name,
            outcome.status,
            outcome.stored_bytes or sum(a.stored_bytes for a in outcome.artifacts),
            outcome.error,
        )
        for outcome in outcomes.values()
    ]
    landed = {a.source for o in complete for a in o.artifacts}
    missing = [s.name for s in policy.sources if s.name not in landed]
    if missing or not complete:
        error_text = "; ".join(f"{o.name}: {o.error}" for o in failed) or "no target completed"
        if missing:
            error_text += f"; not stored: {', '.join(missing)}"
        # The snapshot failed: what its targets hold of it (even a manifest) is not a snapshot.
        run.events.warning(f"backup {policy.name} failed: {error_text}")
        _record_failure(catalog, run, JobFailed(error_text), _discard_quietly(run, list(run.blobs)))
        raise JobFailed(
            f"backup {policy.name} failed: snapshot {snapshot_id} is on no complete target ({error_text})"
        )
    status = "partial" if failed else "complete"
    catalog.finish_snapshot(
        manifest, full_sha, status, error="; ".join(f"{o.name}: {o.error}" for o in failed) or None,
        copies=copies,
    )  # fmt: skip
    pause_point("committed")  # test-only (core/killpoints.py)
    _discard_quietly(run, [o.name for o in failed])  # the copy stays 'failed': replicate refills it
    result = BackupResult(snapshot_id, policy.name, status, seconds, run.artifacts, outcomes)
    result.swept = _sweep(settings, loaded, catalog, began, run.events)
    _fill_gaps(settings, loaded, [o.name for o in complete if o.name in run.blobs], run.events)
    if policy.prune_after_backup:
        from backupctl.actions.prune import prune_after_backup

        prune_after_backup(settings, policy, run.events)
    if failed:
        raise PartialFailure(
            f"snapshot {snapshot_id} is complete on {', '.join(o.name for o in complete)} but failed on "
            + "; ".join(f"{o.name} ({o.error})" for o in failed),
            result,
        )
    return result


def _sweep(
    settings: Settings, loaded: LoadedPolicy, catalog: Catalog, began: float, events: Events
) -> list[dict[str, Any]]:
    """Sweep what earlier failed and killed runs left and no sweep removed yet (one catalog
    query when there is none; see actions/sweep.py). Partial writes begun after this run
    started are left alone. Never fails the backup that just succeeded."""
    from backupctl.actions.sweep import as_dicts, sweep_failed_runs

    try:
        swept = sweep_failed_runs(
            settings, loaded.policy, pending_only=True, before=began, catalog=catalog, events=events
        )
    except BackupctlError as error:
        events.warning(f"could not sweep what earlier runs left: {error}")
        return []
    return as_dicts(swept)


def _fill_gaps(settings: Settings, loaded: LoadedPolicy, reachable: list[str], events: Events) -> None:
    """Blob targets that work again receive the older snapshots they missed (see `replicate`;
    restic copies are made by backups only)."""
    if not reachable:
        return
    from backupctl.actions.replicate import replicate

    try:
        report = replicate(settings, loaded.policy, only_targets=reachable, events=events)
    except BackupctlError as error:  # filling old gaps must never fail today's backup
        events.warning(f"could not copy older snapshots to recovered targets: {error}")
        return
    if report.copied:
        events.info(f"copied {len(report.copied)} missed snapshot(s) to recovered targets")
