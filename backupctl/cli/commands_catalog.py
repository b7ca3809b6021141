"""`backupctl catalog rebuild`."""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.errors import ConfigError, JobFailed


@click.group()
def catalog() -> None:
    """Inspect and rebuild the catalog."""


@catalog.command()
@click.option("--target", "target_name", required=True, help="Target whose manifests to read.")
@click.option(
    "--trust-key",
    "trust",
    multiple=True,
    help="Extra trusted signing public key (base64), e.g. the lost backup host's key.",
)
@json_option
@pass_app
def rebuild(app: App, target_name: str, trust: tuple[str, ...], as_json: bool) -> None:
    """Recreate catalog entries from the signed manifests on a target (the backup host is gone).

    Every policy that has a target of this name is read; manifests whose signature does not
    verify with a trusted key are reported and skipped.
    """
    from backupctl.actions.rebuild import rebuild_catalog
    from backupctl.policy.loader import validate_paths

    loaded, _issues = validate_paths([app.settings.policies], check_secrets=False)
    policies = [item for item in loaded if any(t.name == target_name for t in item.policy.targets)]
    if not policies:
        raise ConfigError(f"no valid policy has a target named '{target_name}'")
    report = rebuild_catalog(app.settings, policies, target_name, list(trust))
    if as_json:
        print_json(report.as_dict())
    else:
        click.echo(
            f"target {target_name}: {report.found} snapshots found in {', '.join(report.policies)}; "
            f"{report.imported} imported, {report.unchanged} already known, {len(report.skipped)} skipped, "
            f"{len(report.failed_runs)} failed run(s) not resurrected"
        )
        for line in report.skipped:
            click.echo(f"  skipped {line}")
        for line in report.failed_runs:
            click.echo(f"  not resurrected (failed run) {line}")
    if report.skipped:
        raise JobFailed(f"{len(report.skipped)} manifest(s) could not be authenticated")


@catalog.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--target", "targets", multiple=True, help="Reconcile only this target (repeatable).")
@click.option("--dry-run", is_flag=True, help="Explain the differences, change nothing.")
@json_option
@pass_app
def reconcile(app: App, policy_name: str, targets: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Compare the catalog with what each target really holds, both ways, and explain each finding.

    Copies the catalog calls complete that a target lacks are recorded missing (replicate
    refills them); authentic snapshots the catalog lacks are imported; snapshots of runs the
    catalog records as failed are not imported (prune removes them). Exit 1 when a target
    cannot be read or holds a manifest that does not authenticate.

    \b
    Example:
      backupctl catalog reconcile shop --target offsite --dry-run
    """
    from backupctl.actions.reconcile import reconcile as run_reconcile
    from backupctl.locking import policy_lock

    policy = app.policy(policy_name, check_secrets=False).policy
    for name in targets:
        policy.target(name)  # ConfigError for an unknown target
    with policy_lock(app.settings, policy.name, "reconcile"):
        report = run_reconcile(app.settings, policy, target_names=list(targets) or None, dry_run=dry_run)
    if as_json:
        print_json(report.as_dict())
    else:
        for name, counts in report.targets.items():
            held, claimed = counts["listed"], counts["claimed_by_catalog"]
            click.echo(f"{name}: {held} snapshot(s) held, {claimed} complete in the catalog")
        for finding in report.findings:
            where = f"{finding.target} {finding.snapshot_id or ''}".strip()
            click.echo(f"  {finding.kind}: {where}: {finding.detail}\n    → {finding.action}")
        if not report.findings:
            click.echo("catalog and targets agree")
    if not report.ok:
        raise JobFailed("some targets could not be reconciled (see the findings)")


COMMANDS = [catalog]
