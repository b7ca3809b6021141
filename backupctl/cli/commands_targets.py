"""`backupctl target setup`, `backupctl status`, `backupctl replicate`."""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.jobs import job_alerts, record_compliance
from backupctl.cli.output import print_json, stdout_console
from backupctl.errors import ConfigError, JobFailed, PartialFailure


@click.group()
def target() -> None:
    """Prepare and inspect targets."""


@target.command()
@click.argument("policy_name", metavar="POLICY")
@click.argument("target_name", metavar="TARGET")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@json_option
@pass_app
def setup(app: App, policy_name: str, target_name: str, dry_run: bool, as_json: bool) -> None:
    """Apply the protection a target declares: S3 versioning, object lock, lifecycle; restic init.

    Prints every change (current → desired). Idempotent: a second run changes nothing.
    """
    policy = app.policy(policy_name, check_secrets=False).policy
    from backupctl.targets.store import open_store

    store = open_store(policy.target(target_name))
    try:
        changes = store.setup(dry_run)
    finally:
        store.close()
    if as_json:
        print_json({"target": target_name, "dry_run": dry_run, "changes": changes})
        return
    if not changes:
        app.echo(f"target {target_name}: nothing to change")
        return
    verb = "would change" if dry_run else "changed"
    for change in changes:
        app.echo(f"{verb} {change['what']}: {change['current']} → {change['desired']}")


@click.command()
@click.argument("policy_name", metavar="POLICY", required=False)
@json_option
@pass_app
def status(app: App, policy_name: str | None, as_json: bool) -> None:
    """The 3-2-1-1-0 rule and RPO freshness per policy, read from the real targets.

    Each target that should hold the newest snapshot is surveyed (its signed manifest and the
    objects it names: a listing, no data read); a copy that is gone or incomplete counts as
    missing and is recorded so: `backupctl replicate POLICY` refills it.
    Exit 0 when every policy complies, 1 otherwise (each failing rule says why).
    """
    from rich.table import Table

    from backupctl.actions.access import open_catalog
    from backupctl.actions.status import gather

    if policy_name:
        policies = [app.policy(policy_name, check_secrets=False).policy]
    else:
        from backupctl.policy.loader import validate_paths  # pydantic: only when policies are read

        loaded, issues = validate_paths([app.settings.policies], check_secrets=False)
        if issues and not loaded:
            raise ConfigError("no valid policy found: run `backupctl policy validate`")
        policies = [item.policy for item in loaded]
    catalog = open_catalog(app.settings)
    results = [gather(catalog, policy, settings=app.settings) for policy in policies]
    if as_json:
        print_json([result.as_dict() for result in results])
    else:
        console = stdout_console()
        for result in results:
            state = "compliant" if result.compliant else ("DEGRADED" if result.degraded else "NOT COMPLIANT")
            console.print(
                f"{result.policy}: {state} (newest snapshot {result.latest_snapshot or 'none'})", markup=False
            )
            table = Table("rule", "ok", "detail", box=None, show_header=False)
            for rule in result.rules:
                table.add_row(rule.name, "ok" if rule.ok else "FAIL", rule.detail)
            console.print(table)
            for target in result.targets:
                for problem in target.problems:
                    console.print(f"  {target.name}: {problem}", markup=False)
    record_compliance(app, results)  # alerts and metrics when compliance is lost or regained
    if not all(result.compliant for result in results):
        raise JobFailed(
            "out of compliance: "
            + "; ".join(
                f"{r.policy}: " + ", ".join(rule.name for rule in r.rules if not rule.ok)
                for r in results
                if not r.compliant
            )
        )


@click.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--target", "targets", multiple=True, help="Only fill these targets (repeatable).")
@json_option
@pass_app
@job_alerts("replicate")
def replicate(app: App, policy_name: str, targets: tuple[str, ...], as_json: bool) -> None:
    """Copy snapshots to targets that missed them (e.g. S3 was down last night).

    Hashes are checked in flight and again on arrival. Exit 3 when some copies still failed.
    """
    from backupctl.actions.replicate import replicate as run_replicate

    policy = app.policy(policy_name, check_secrets=False).policy
    report = run_replicate(app.settings, policy, only_targets=list(targets) or None, events=app.events())
    if as_json:
        print_json(report.as_dict())
    else:
        app.echo(f"{policy_name}: {len(report.copied)} copies made, {len(report.failed)} failed")
        for line in report.copied:
            app.echo(f"  copied {line}")
        for line in report.failed + report.skipped:
            app.echo(f"  {line}")
    if report.failed:
        raise PartialFailure(
            f"{len(report.failed)} copies could not be made:\n  " + "\n  ".join(report.failed)
        )


COMMANDS = [target, status, replicate]
