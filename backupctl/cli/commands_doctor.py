"""`backupctl doctor`: check the tools, keys, secrets, targets and clock every policy needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.core.secrets import mask
from backupctl.errors import ConfigIssue, JobFailed

if TYPE_CHECKING:
    from backupctl.policy.schema import Policy


@click.command()
@click.argument("policy_name", metavar="POLICY", required=False)
@json_option
@pass_app
def doctor(app: App, policy_name: str | None, as_json: bool) -> None:
    """Check that this host can back up and restore: tools, keys, secrets, targets, clock.

    Checks one policy, or every policy when none is named. Each problem comes with its fix.
    Exit 0 when nothing fails (warnings allowed), 1 otherwise.
    """
    from backupctl.actions.doctor import run_checks

    issues: list[ConfigIssue] = []
    policies: list[Policy]
    if policy_name:
        policies = [app.policy(policy_name, check_secrets=False).policy]
    else:
        from backupctl.policy.loader import validate_paths  # pydantic: only when policies are read

        loaded, issues = validate_paths([app.settings.policies], check_secrets=False)
        policies = [item.policy for item in loaded]
    findings = run_checks(app.settings, policies, issues)
    failed = [finding for finding in findings if finding.failed]
    if as_json:
        print_json({"ok": not failed, "findings": [finding.as_dict() for finding in findings]})
    else:
        # Plain lines, not a rich table: paths and commands in fixes must never be wrapped or cut.
        width = max(len(finding.check) for finding in findings)
        for finding in findings:
            click.echo(f"{finding.level:<4}  {finding.check:<{width}}  {mask(finding.detail)}")
            if not finding.ok:
                click.echo(f"{'':<4}  {'':<{width}}  fix: {mask(finding.fix)}")
        warned = sum(1 for finding in findings if finding.level == "WARN")
        click.echo(f"{len(findings)} checks: {len(failed)} failed, {warned} warnings")
    if failed:
        raise JobFailed(f"doctor: {len(failed)} check(s) failed: " + ", ".join(f.check for f in failed))


COMMANDS = [doctor]
