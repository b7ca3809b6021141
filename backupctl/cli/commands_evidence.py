"""`backupctl evidence export|verify`: signed quarterly evidence bundles."""

from __future__ import annotations

from pathlib import Path

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.output import print_json


@click.group()
def evidence() -> None:
    """Quarterly evidence bundles an auditor verifies offline (ssh-keygen -Y verify)."""


@evidence.command()
@click.option("--quarter", required=True, metavar="YYYYQN", help="The quarter, e.g. 2026Q4 (UTC).")
@click.option(
    "--policy", "policies", multiple=True, metavar="NAME", help="Only this policy (repeatable; default all)."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New directory, or FILE.tar.")
@json_option
@pass_app
def export(app: App, quarter: str, policies: tuple[str, ...], out: Path, as_json: bool) -> None:
    """Export the quarter's evidence: controls, exceptions, runs, drills, policies, crosswalk,
    HTML report, run ledger; SHA256SUMS signed with this host's key (SSHSIG).

    \b
    Example:
      backupctl evidence export --quarter 2026Q4 --out /srv/audit/2026Q4.tar
    """
    from backupctl.evidence.pdf import PdfWorker
    from backupctl.evidence.period import parse_quarter

    period = parse_quarter(quarter)
    # Forked before the export's modules are imported: the worker stays a bare interpreter
    # until it imports WeasyPrint (backupctl.evidence.pdf).
    with PdfWorker() as pdf:
        from backupctl.evidence.run import export_bundle

        summary = export_bundle(app.settings, period, policies, out, pdf)
    if as_json:
        print_json(summary)
        return
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(summary["controls"].items()))
    app.echo(
        f"evidence {period.label} → {out}: {summary['files']} files, {summary['exceptions']} exceptions, "
        f"controls: {statuses or 'none'}"
    )


@evidence.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--allowed-signers",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your own allowed_signers file (default: the one in the bundle).",
)
@click.option("--offline", is_flag=True, help="Do not compare with the catalog (bundle only).")
@json_option
@pass_app
def verify(app: App, bundle: Path, allowed_signers: Path | None, offline: bool, as_json: bool) -> None:
    """Check a bundle: signature, every file's sha256, the run ledger's chain and, unless
    --offline, that the catalog's records did not change since the export. Exit 1 naming every
    problem.

    \b
    Example:
      backupctl evidence verify /srv/audit/2026Q4.tar
    """
    from backupctl.catalog.store import Catalog
    from backupctl.errors import IntegrityError
    from backupctl.evidence.verify import verify_bundle

    catalog = None if offline else Catalog.open(app.settings.catalog_url)
    verdict = verify_bundle(bundle, catalog, allowed_signers)
    if as_json:
        print_json(verdict.as_dict())
    else:
        for problem in verdict.problems:
            click.echo(f"FAIL {problem}", err=True)
        if verdict.ok:
            app.echo(
                f"OK {bundle}: {verdict.files} files, signed by {verdict.signer}, "
                f"{verdict.ledger_records} ledger records"
            )
    if not verdict.ok:
        raise IntegrityError(f"{bundle}: {len(verdict.problems)} problem(s)")


COMMANDS = [evidence]
