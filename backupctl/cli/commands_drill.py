"""`backupctl drill` and `backupctl drills`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from backupctl.cli.context import App, identity_option, jobs_option, json_option, pass_app, wait_option
from backupctl.cli.jobs import job_alerts
from backupctl.cli.output import print_json, stdout_console
from backupctl.core.durations import humanize_seconds
from backupctl.errors import JobFailed


@click.command()
@click.argument("what", metavar="DRILL_FILE|POLICY|cleanup|validate|example|reference")
@click.argument("file", required=False, type=click.Path(path_type=Path), metavar="[FILE]")
@click.option(
    "--from", "from_target", metavar="TARGET", help="Restore from this target (default: the most remote)."
)
@click.option(
    "--snapshot", "snapshot_ref", metavar="ID", help="Snapshot to restore (default: the drill's, latest)."
)
@click.option(
    "--runtime",
    type=click.Choice(["auto", "docker", "local"]),
    help="Staging runtime (default: the drill's).",
)
@click.option("--keep", is_flag=True, help="Leave staging up; print how to connect and how to remove it.")
@click.option("--no-objectives", is_flag=True, help="Pass/fail on checks only (ad-hoc runs).")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the JSON and HTML reports [default: STATE_DIR/reports].",
)
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False), help="Also write JUnit XML here.")
@click.option("--run", "run_id", metavar="ID", help="With `cleanup`: only this drill run.")
@jobs_option("Per PostgreSQL database: its dump is spooled inside staging first (one job without room).")
@wait_option
@identity_option
@json_option
@pass_app
@job_alerts("drill")
def drill(
    app: App,
    what: str,
    file: Path | None,
    from_target: str | None,
    snapshot_ref: str | None,
    runtime: str | None,
    keep: bool,
    no_objectives: bool,
    report_dir: Path | None,
    junit: Path | None,
    run_id: str | None,
    jobs: int,
    wait: timedelta | None,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Prove a backup: restore a snapshot into disposable staging, run checks, tear down.

    \b
    backupctl drill drills/shop.yaml          a drill file: services, restores, checks
    backupctl drill shop                      the policy's drill_file, else its default drill:
                                              restore every source, integrity checks only
    backupctl drill cleanup [--run ID]        remove leftovers of killed drills (by label)
    backupctl drill validate drills/shop.yaml every problem with file:line (exit 2 if any)
    backupctl drill example > drills/mine.yaml an annotated drill file to start from
    backupctl drill reference                 every key (docs/drill-reference.md)

    Measured RTO (fetch incl. Glacier warm-up → restores → services ready → checks) is
    compared with the policy's RTO, the snapshot's age with its RPO. Exit 0 pass, 1 fail,
    2 configuration error.
    """
    if what == "cleanup":
        _cleanup(run_id, as_json)
        return
    if what in ("validate", "example", "reference"):
        _drill_file_command(what, file, as_json)
        return
    from backupctl.actions.drill import default_drill, prepare_drill_secret, run_drill
    from backupctl.actions.drill_report import write_outcome_reports
    from backupctl.drills.loader import load_drill, policy_for_drill

    prepare_drill_secret()
    path = Path(what)
    if path.suffix in (".yaml", ".yml") or path.exists():
        spec = load_drill(path)
        policy = policy_for_drill(path, spec, lambda name: app.policy(name, check_secrets=False)).policy
        base_dir, restore_all = path.resolve().parent, False
    else:
        from backupctl.scheduling import resolve_drill_file

        loaded = app.policy(what, check_secrets=False)
        policy = loaded.policy
        drill_file = resolve_drill_file(loaded)  # the policy's own drill, as its schedule runs it
        if drill_file is not None:
            spec, base_dir, restore_all = load_drill(drill_file), drill_file.parent, False
        else:
            spec, base_dir, restore_all = default_drill(policy), Path.cwd(), True
    from backupctl.locking import policy_lock

    with policy_lock(app.settings, policy.name, "drill", wait):
        outcome = run_drill(
            app.settings,
            policy,
            spec,
            base_dir=base_dir,
            from_target=from_target,
            snapshot_ref=snapshot_ref,
            runtime_choice=runtime,
            keep=keep,
            check_objectives=not no_objectives,
            identity_file=identity_file,
            restore_all=restore_all,
            events=app.events(),
            jobs=jobs,
        )
    paths = write_outcome_reports(
        app.settings, outcome, report_dir or app.settings.state_dir / "reports", junit
    )
    if as_json:
        from backupctl.actions.drill_report import outcome_json

        print_json(outcome_json(outcome))
    elif not app.quiet:
        _render(outcome, paths)
    if not outcome.ok:
        raise JobFailed(f"drill {outcome.drill} FAILED: {outcome.reason}")


def _drill_file_command(what: str, file: Path | None, as_json: bool) -> None:
    """`drill validate FILE`, `drill example`, `drill reference`."""
    from backupctl.drills import example

    if what == "example":
        click.echo(example.example_yaml(), nl=False)
        return
    if what == "reference":
        click.echo(example.reference_markdown())
        return
    if file is None:
        raise click.UsageError("drill validate needs the drill FILE")
    from backupctl.drills.loader import load_drill_for_validation
    from backupctl.errors import PolicyInvalid

    try:
        spec = load_drill_for_validation(file)
    except PolicyInvalid as error:
        if as_json:
            print_json({"valid": [], "issues": [issue.as_dict() for issue in error.issues]})
            raise click.exceptions.Exit(2) from None
        raise
    steps = len(spec.post_restore)
    summary = f"{len(spec.services)} services, {steps} post-restore steps, {len(spec.checks)} checks"
    if as_json:
        print_json({"valid": [str(file)], "issues": []})
    else:
        click.echo(f"ok  {file}  (drill '{spec.name}' of policy '{spec.policy}': {summary})")


def _render(outcome: object, paths: dict[str, Path]) -> None:
    from rich.table import Table

    from backupctl.actions.drill import DrillOutcome

    assert isinstance(outcome, DrillOutcome)
    console = stdout_console()
    state = "PASSED" if outcome.ok else "FAILED"
    console.print(
        f"drill {outcome.drill} {state}: snapshot {outcome.snapshot_id} from {outcome.target} "
        f"({outcome.runtime} runtime, run {outcome.run_id})",
        markup=False,
    )
    table = Table("stage", "time", "status", "detail", box=None)
    for stage in outcome.stages:
        status = "FAILED" if stage.failed else "ok"
        table.add_row(stage.name, humanize_seconds(stage.seconds), status, stage.detail)
    console.print(table)
    checks = Table("check", "kind", "ok", "detail", box=None)
    for check in outcome.checks:
        status = {"passed": "ok", "failed": "FAIL", "not run": "not run"}[check.status]
        checks.add_row(check.name, check.kind, status, check.detail)
    console.print(checks)
    if outcome.measured_rto is None and outcome.objectives_checked:
        console.print("RTO and RPO not measured: the drill stopped before recovering", markup=False)
    if outcome.measured_rto is not None and outcome.rto_objective is not None:
        console.print(
            f"measured RTO {humanize_seconds(outcome.measured_rto)} (objective "
            f"{humanize_seconds(outcome.rto_objective)}); RPO at drill time "
            f"{humanize_seconds(outcome.rpo_at_drill or 0)} (objective "
            f"{humanize_seconds(outcome.rpo_objective or 0)})",
            markup=False,
        )
    if outcome.kept is not None:
        console.print("staging kept running:", markup=False)
        for name, how in outcome.kept.services.items():
            console.print(f"  {name}: {how}", markup=False)
        console.print(f"  remove with: {outcome.kept.remove}", markup=False)
    for kind, path in paths.items():
        console.print(f"report ({kind}): {path}", markup=False)


def _cleanup(run_id: str | None, as_json: bool) -> None:
    removed: list[str] = []
    try:
        from backupctl.staging.docker import cleanup as docker_cleanup
        from backupctl.staging.docker import engine_available

        if engine_available():
            removed += docker_cleanup(run_id=run_id)
    except ImportError:
        pass
    from backupctl.staging.local import cleanup as local_cleanup

    removed += local_cleanup(run_id=run_id)
    if as_json:
        print_json({"removed": removed})
        return
    click.echo(f"removed {len(removed)} leftover(s) of killed drills" + (":" if removed else ""))
    for item in removed:
        click.echo(f"  {item}")


@click.command()
@click.argument("policy_name", metavar="POLICY", required=False)
@json_option
@pass_app
def drills(app: App, policy_name: str | None, as_json: bool) -> None:
    """Drill history: when, which snapshot, pass/fail, measured RTO vs objective."""
    from rich.table import Table

    from backupctl.actions.access import open_catalog
    from backupctl.catalog.store import drill_history

    rows = drill_history(open_catalog(app.settings), policy_name)
    if as_json:
        print_json(
            [
                {
                    "run_id": row.id,
                    "policy": row.policy,
                    "drill": row.drill,
                    "snapshot_id": row.snapshot_id,
                    "target": row.target,
                    "runtime": row.runtime,
                    "started_at": row.started_at.isoformat(),
                    "finished_at": row.finished_at.isoformat(),
                    "ok": row.ok,
                    "reason": row.reason,
                    "rto_seconds": row.rto_seconds,
                    "rto_objective_seconds": row.rto_objective_seconds,
                    "rpo_seconds": row.rpo_seconds,
                    "rpo_objective_seconds": row.rpo_objective_seconds,
                    "stages": row.stages,
                    "checks": row.checks,
                    "reports": row.report_paths,
                }
                for row in rows
            ]
        )
        return
    if not rows:
        click.echo(
            "no drills recorded yet: run `backupctl drill POLICY` or `backupctl drill drills/FILE.yaml`"
        )
        return
    table = Table(
        "finished (UTC)", "policy", "drill", "snapshot", "from", "result", "RTO", "objective", box=None
    )
    for row in rows:
        table.add_row(
            row.finished_at.strftime("%Y-%m-%d %H:%M"),
            row.policy,
            row.drill,
            row.snapshot_id or "-",
            row.target or "-",
            "pass" if row.ok else "FAIL",
            humanize_seconds(row.rto_seconds) if row.rto_seconds is not None else "-",
            humanize_seconds(row.rto_objective_seconds) if row.rto_objective_seconds else "-",
        )
    stdout_console().print(table)


COMMANDS = [drill, drills]
