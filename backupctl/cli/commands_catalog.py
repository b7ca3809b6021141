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
            f"{report.imported} imported, {report.unchanged} already known, {len(report.skipped)} skipped"
        )
        for line in report.skipped:
            click.echo(f"  skipped {line}")
    if report.skipped:
        raise JobFailed(f"{len(report.skipped)} manifest(s) could not be authenticated")


COMMANDS = [catalog]
