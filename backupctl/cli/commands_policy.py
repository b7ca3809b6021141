"""`backupctl policy validate|show|example|reference`."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.output import print_json, stdout_console
from backupctl.errors import PolicyInvalid


@click.group()
def policy() -> None:
    """Validate, show and create policies."""


@policy.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--no-secrets", is_flag=True, help="Do not check that env:/file: secrets resolve on this host.")
@json_option
@pass_app
def validate(app: App, paths: tuple[Path, ...], no_secrets: bool, as_json: bool) -> None:
    """Check policy files (default: the policy directory); report every problem at once.

    Each problem names the file, line, dotted key and what was expected. Exit 2 when any
    policy is invalid.
    """
    targets = list(paths) or [app.settings.policies]
    from backupctl.policy.loader import validate_paths  # pydantic: imported when needed

    loaded, issues = validate_paths(targets, check_secrets=not no_secrets)
    from backupctl.drills.loader import drill_file_issues
    from backupctl.policy.recipients import unmatched_recipients_warning
    from backupctl.policy.rpo_check import rpo_warnings  # can the RPO be met? (docs/pitr.md)

    issues += drill_file_issues(loaded)  # a policy's drill_file is part of it
    keys_dir = app.settings.keys_dir
    warnings = [warning for item in loaded for warning in rpo_warnings(item.policy)]
    warnings += [w for item in loaded if (w := unmatched_recipients_warning(item.policy, keys_dir))]
    if as_json:
        valid = [str(item.file) for item in loaded]
        print_json({"valid": valid, "issues": [i.as_dict() for i in issues], "warnings": warnings})
        if issues:
            raise click.exceptions.Exit(2)
        return
    if issues:
        raise PolicyInvalid(issues)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    console = stdout_console()
    for item in loaded:
        console.print(
            f"ok  {item.file}  (policy '{item.policy.name}': {len(item.policy.sources)} sources, "
            f"{len(item.policy.targets)} targets)",
            markup=False,
        )


@policy.command()
@click.argument("name")
@json_option
@pass_app
def show(app: App, name: str, as_json: bool) -> None:
    """Print a policy with defaults filled in; secrets appear as references only."""
    loaded = app.policy(name, check_secrets=False)
    data = loaded.policy.model_dump(mode="json")
    if as_json:
        print_json({"file": str(loaded.file), "sha256": loaded.sha256, "policy": data})
        return
    click.echo(f"# {loaded.file} (sha256 {loaded.sha256[:12]})")
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@policy.command()
@click.option("--name", help="Policy name (default: shop); values become ${NAME_...} variables.")
@pass_app
def example(app: App, name: str | None) -> None:
    """Print an example policy generated from the schema (valid as printed).

    It encrypts to the recipient `backupctl keys generate` wrote in the keys directory.

    \b
    Example:
      backupctl policy example --name app > policies/app.yaml
    """
    from backupctl.policy.example import example_yaml

    click.echo(example_yaml(name, app.settings.keys_dir), nl=False)


@policy.command()
def reference() -> None:
    """Print the policy reference (Markdown) generated from the schema."""
    from backupctl.policy.example import reference_markdown

    click.echo(reference_markdown())


COMMANDS = [policy]
