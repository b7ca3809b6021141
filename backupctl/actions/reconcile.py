"""`backupctl catalog reconcile POLICY`: compare the catalog with what each target really holds,
in both directions, and explain every difference (docs/operations.md, "Reconcile").

Per target, one listing of the manifests it holds (`SnapshotStore.snapshot_ids`), then:
- **missing**: the catalog calls a copy complete, but the target lists no manifest for it, or
  its survey (`SnapshotStore.survey`: the signed manifest and a listing of every object it names)
  finds something gone. The copy is recorded `missing`; `backupctl replicate` refills it (blob
  targets; a deduplicating target is refilled by the next backup).
- **imported**: the target holds an authentic manifest (signature checked with the trusted
  keys) of a snapshot the catalog does not know: imported, as `catalog rebuild` does.
- **unfinished-run**: the target holds a complete, signed snapshot whose run the catalog records
  as `failed` or `running` (a run killed after its manifest reached the target). The rule,
  the same as prune's sweep (backupctl.actions.sweep): *the catalog is the record of what
  completed*. Such a snapshot is never imported or marked complete (`catalog rebuild` skips it
  too); `backupctl prune` removes it. Reconcile itself deletes nothing.
- **untrusted**: a manifest that does not authenticate: reported, never imported;
- **incomplete**: a manifest the catalog does not claim, some of whose objects are gone:
  reported, not imported.
- **unreachable**: the target could not be listed; nothing about it is concluded.

It runs under the policy lock (the CLI takes it), so a `running` row is a dead run. Every
target kind is read through the SnapshotStore interface; nothing here asks which kind it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from backupctl.actions.access import open_catalog, trusted_keys
from backupctl.catalog.store import COMPLETE_STATES, Catalog
from backupctl.errors import BackupctlError, IntegrityError
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.targets.registry import traits_of
from backupctl.targets.store import SnapshotStore, open_store

UNFINISHED = ("failed", "running")


@dataclass
class Finding:
    """One difference between the catalog and a target, and what was (or would be) done."""

    target: str
    snapshot_id: str | None
    kind: str  # missing | imported | unfinished-run | untrusted | incomplete | unreachable
    detail: str
    action: str


@dataclass
class ReconcileReport:
    policy: str
    dry_run: bool
    targets: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> listed, in_catalog
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No finding that needs an operator (untrusted manifests, unreachable targets)."""
        return not any(f.kind in ("untrusted", "unreachable") for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "targets": self.targets,
            "findings": [asdict(finding) for finding in self.findings],
        }


def unfinished_runs(catalog: Catalog, policy: str) -> dict[str, str]:
    """Snapshot id -> status of the policy's runs the catalog records as failed or running."""
    views = catalog.snapshots(policy, include_incomplete=True)
    return {view.id: view.status for view in views if view.status in UNFINISHED}


def reconcile(
    settings: Settings, policy: Policy, *, target_names: list[str] | None = None, dry_run: bool = False
) -> ReconcileReport:
    """Compare the catalog with every (or the named) target of `policy`; see the module doc."""
    catalog = open_catalog(settings)
    trusted = trusted_keys(settings, policy)
    report = ReconcileReport(policy.name, dry_run)
    for config in policy.targets:
        if target_names and config.name not in target_names:
            continue
        try:
            store = open_store(config)
        except BackupctlError as error:
            report.findings.append(Finding(config.name, None, "unreachable", str(error), "none"))
            continue
        try:
            refills = not traits_of(config).deduplicating
            _reconcile_target(catalog, policy, store, trusted, report, refills=refills)
        finally:
            store.close()
    return report


def _reconcile_target(
    catalog: Catalog,
    policy: Policy,
    store: SnapshotStore,
    trusted: list[str],
    report: ReconcileReport,
    *,
    refills: bool,
) -> None:
    name = store.name
    views = {view.id: view for view in catalog.snapshots(policy.name, include_incomplete=True)}
    try:
        listed = set(store.snapshot_ids(policy.name))
    except BackupctlError as error:
        report.findings.append(Finding(name, None, "unreachable", str(error), "none: nothing concluded"))
        return
    claimed = sorted(sid for sid, view in views.items() if view.targets.get(name) == "complete")
    report.targets[name] = {"listed": len(listed), "claimed_by_catalog": len(claimed)}
    refill = f"`backupctl replicate {policy.name}` refills it"
    if not refills:
        refill = "the next backup stores it again"
    for snapshot_id in claimed:  # (a) the catalog says complete: is it there?
        if snapshot_id not in listed:
            problems = [f"{name} holds no manifest of snapshot {snapshot_id}"]
        else:
            try:
                problems = store.survey(policy.name, snapshot_id, trusted)
            except BackupctlError as error:
                report.findings.append(Finding(name, snapshot_id, "unreachable", str(error), "none"))
                continue
        if problems:
            detail = "; ".join(problems)
            action = f"recorded missing; {refill}"
            report.findings.append(Finding(name, snapshot_id, "missing", detail, action))
            if not report.dry_run:
                catalog.record_copy(snapshot_id, name, "missing", error=detail)
    for snapshot_id in sorted(listed - set(claimed)):  # (b), (c) the target holds what the catalog lacks
        _unclaimed(catalog, policy, store, trusted, report, snapshot_id, views.get(snapshot_id))


def _unclaimed(
    catalog: Catalog,
    policy: Policy,
    store: SnapshotStore,
    trusted: list[str],
    report: ReconcileReport,
    snapshot_id: str,
    view: Any,
) -> None:
    name = store.name
    if view is not None and view.status in UNFINISHED:
        detail = (
            f"{name} holds a complete, signed copy of snapshot {snapshot_id}, but the catalog records "
            f"its run as {view.status} ({view.error or 'no error recorded'}): the catalog is the record "
            "of what completed"
        )
        action = f"not imported; `backupctl prune {policy.name}` removes it"
        report.findings.append(Finding(name, snapshot_id, "unfinished-run", detail, action))
        return
    try:
        problems = store.survey(policy.name, snapshot_id, trusted)  # authenticates the manifest too
        signed = None if problems else store.read_manifest(policy.name, snapshot_id, trusted)
    except IntegrityError as error:
        report.findings.append(Finding(name, snapshot_id, "untrusted", str(error), "not imported"))
        return
    except BackupctlError as error:
        report.findings.append(Finding(name, snapshot_id, "unreachable", str(error), "none"))
        return
    if problems:
        detail = "; ".join(problems)
        report.findings.append(Finding(name, snapshot_id, "incomplete", detail, "not imported"))
        return
    if signed is None:
        return
    if view is None:
        detail = f"{name} holds an authentic snapshot {snapshot_id} (signed by {signed.signer}) "
        detail += "the catalog lacks"
    elif view.status in COMPLETE_STATES:
        recorded = view.targets.get(name) or "no copy"
        detail = f"{name} holds snapshot {snapshot_id}; the catalog recorded this copy as {recorded}"
    else:
        detail = f"{name} holds snapshot {snapshot_id}; the catalog records it {view.status}"
    action = "would import" if report.dry_run else "imported"
    report.findings.append(Finding(name, snapshot_id, "imported", detail, action))
    if not report.dry_run:
        catalog.import_manifest(signed.manifest, signed.sha256, name)
