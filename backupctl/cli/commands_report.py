"""`backupctl report --month YYYY-MM`: the monthly operational report (HTML and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.output import print_json


@click.command()
@click.option("--month", required=True, metavar="YYYY-MM", help="The month to report on (UTC).")
@click.option(
    "--policy", "policies", multiple=True, metavar="NAME", help="Only this policy (repeatable; default all)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the HTML report here (must not exist).",
)
@click.option(
    "--json-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the JSON document here (must not exist).",
)
@json_option
@pass_app
def report(
    app: App, month: str, policies: tuple[str, ...], out: Path | None, json_out: Path | None, as_json: bool
) -> None:
    """Monthly report for a client: runs, failures and their resolution, RPO/RTO achieved vs
    objectives, storage per target, drills, every control's status.

    \b
    Example:
      backupctl report --month 2026-11 --out shop-2026-11.html --json-out shop-2026-11.json
    """
    from backupctl.evidence.period import parse_month
    from backupctl.evidence.report_html import render
    from backupctl.evidence.run import document_for, write_new

    period = parse_month(month)
    for path in (out, json_out):
        if path is not None and path.exists():
            from backupctl.errors import ConfigError

            raise ConfigError(f"{path} already exists: choose a new path")
    document, _, _ = document_for(app.settings, period, policies)
    if json_out is not None:
        write_new(json_out, json.dumps(document, indent=1, sort_keys=True) + "\n")
    if out is not None:
        write_new(out, render(document, "Monthly backup report"))
    if as_json:
        print_json(document)
    elif out is None and json_out is None:
        click.echo(render(document, "Monthly backup report"))
    else:
        app.echo(f"report {period.label}: " + ", ".join(str(p) for p in (out, json_out) if p))


COMMANDS = [report]
