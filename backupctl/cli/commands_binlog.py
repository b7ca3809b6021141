"""`backupctl binlog collect|status|verify|restore`: MySQL/MariaDB binlog archiving and PITR."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from backupctl.cli.context import DURATION, App, identity_option, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.core.secrets import SecretRef
from backupctl.errors import ConfigError, JobFailed

if TYPE_CHECKING:
    from backupctl.actions.binlog import BinlogStatus, CollectReport
    from backupctl.pitr.mysql_archive import BinlogArchiveStore
    from backupctl.policy.schema import Policy

metrics_option = click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the archive's Prometheus metrics (RPO, files, holes) to this textfile.",
)
source_option = click.option(
    "--source", "source_name", required=True, help="The mysql source with a pitr: block."
)


@click.group()
def binlog() -> None:
    """Archive MySQL/MariaDB binary logs and restore to a point in time (docs/pitr-mysql.md)."""


@binlog.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option(
    "--watch",
    is_flag=True,
    help="Repeat every collection interval (binlog.interval, else rpo/3) until stopped (systemd/daemon).",
)
@click.option(
    "--every", type=DURATION, default=None, metavar="DURATION", help="Override the interval of --watch."
)
@metrics_option
@json_option
@pass_app
def collect(
    app: App,
    policy_name: str,
    source_name: str,
    watch: bool,
    every: timedelta | None,
    metrics_file: Path | None,
    as_json: bool,
) -> None:
    """Archive the server's closed binlogs (FLUSH BINARY LOGS first when it holds new transactions).

    Only files the server has closed are archived, so a partial file is never stored as complete.
    Exit 1 when the server purged files before they were archived (a hole, named).

    Example: backupctl binlog collect shop --source shop-db --watch
    """
    from backupctl.actions.binlog import interval_of, run_collect
    from backupctl.locking import policy_lock
    from backupctl.pitr.mysql_archive import open_binlog_archive

    policy = app.policy(policy_name).policy
    interval = every or interval_of(policy, source_name)
    with open_binlog_archive(app.settings, policy, source_name) as archive:  # one store: facts cached
        while True:
            started = time.monotonic()
            try:
                with policy_lock(app.settings, f"{policy.name}.binlog-{source_name}", "binlog collect"):
                    report = run_collect(policy, source_name, archive)
                    # The status (and its catalog observation) every pass: the archive's history.
                    _write_metrics(app, policy, source_name, archive, metrics_file, "binlog collect")
            except JobFailed as error:
                if not watch:
                    raise
                # Server restarting, network down, target full: say so, try again next interval.
                app.events().warning(f"binlog collect of {policy_name}/{source_name} failed: {error}")
            else:
                _report_collect(app, report, as_json, watch)
            if not watch:
                return
            time.sleep(max(0.0, interval.total_seconds() - (time.monotonic() - started)))


def _report_collect(app: App, report: CollectReport, as_json: bool, watch: bool) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        newest = f"newest {report.newest} (covers until {report.as_dict()['covered_until']})"
        app.echo(f"{report.policy}/{report.source}: {len(report.archived)} binlog(s) archived, {newest}")
    if report.purged:
        message = (
            f"the server purged {', '.join(report.purged)} before they were archived: restores to a "
            "time inside that hole are impossible until the next dump (raise binlog_expire_logs_seconds)"
        )
        if not watch:
            raise JobFailed(message)
        app.events().warning(message)


@binlog.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@metrics_option
@json_option
@pass_app
def status(app: App, policy_name: str, source_name: str, metrics_file: Path | None, as_json: bool) -> None:
    """The achieved RPO (now - the newest archived event) and the holes; exit 1 beyond the objective.

    Example: backupctl binlog status shop --source shop-db --json
    """
    report = _status(app, policy_name, source_name, metrics_file)
    if as_json:
        print_json(report.as_dict())
    else:
        rpo = "no binlog archived" if report.rpo_seconds is None else f"RPO {report.rpo_seconds:.0f}s"
        app.echo(
            f"{policy_name}/{source_name}: {rpo} (objective {report.objective_seconds}s), {report.files} "
            f"file(s), newest {report.newest}"
        )
        for gap in report.gaps:
            app.echo(f"  HOLE: {gap.describe()}")
    if not report.ok:
        raise JobFailed(f"binlog archive of {policy_name}/{source_name} is behind its objective or has holes")


@binlog.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@json_option
@pass_app
def verify(app: App, policy_name: str, source_name: str, as_json: bool) -> None:
    """Check the chain from the oldest kept dump's position: file numbers, GTID states, closed files,
    and every archived file's signature and digest. Exit 1 naming each problem.

    Example: backupctl binlog verify shop --source shop-db
    """
    from backupctl.actions.access import open_catalog
    from backupctl.actions.binlog_pitr_probe import observed_binlog_status
    from backupctl.pitr.mysql_archive import open_binlog_archive

    policy = app.policy(policy_name, check_secrets=False).policy
    with open_binlog_archive(app.settings, policy, source_name) as archive:
        damaged = archive.verify()
        report = observed_binlog_status(
            policy, source_name, archive, open_catalog(app.settings), "binlog verify"
        )
    problems = [gap.describe() for gap in report.gaps] + damaged
    if as_json:
        print_json({**report.as_dict(), "damaged": damaged, "ok": not problems})
    else:
        app.echo(f"{policy_name}/{source_name}: {report.files} binlog(s) from dump {report.oldest_dump}")
        for problem in problems:
            app.echo(f"  PROBLEM: {problem}")
    if problems:
        raise JobFailed(f"{len(problems)} problem(s) in the binlog archive of {policy_name}/{source_name}")


@binlog.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option(
    "--to-time", metavar="TIME", help="ISO time, e.g. 2026-12-06T05:30:00+01:00 (UTC without a zone)."
)
@click.option("--latest", is_flag=True, help="Restore to the newest archived point.")
@click.option("--to-db", metavar="URL", help="Database URL to restore into (may be a new database name).")
@click.option("--create", is_flag=True, help="Create the database named by --to-db.")
@click.option("--db-password", metavar="REF", help="Secret reference for the destination password.")
@click.option("--dry-run", is_flag=True, help="Print the plan (dump, binlogs, positions); change nothing.")
@click.option("--no-precheck", is_flag=True, help="Skip the dump's sha256 pre-check pass (saves one read).")
@identity_option
@json_option
@pass_app
def restore(
    app: App,
    policy_name: str,
    source_name: str,
    to_time: str | None,
    latest: bool,
    to_db: str | None,
    create: bool,
    db_password: str | None,
    dry_run: bool,
    no_precheck: bool,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Restore to a point in time: the newest dump before it + replay of the archived binlogs.

    Example: backupctl binlog restore shop --source shop-db --to-time 2026-12-06T05:30:00Z
    --to-db mysql://root@127.0.0.1/shop_at_0530 --create
    """
    point_in_time_restore(
        app, policy_name, source_name, to_time=to_time, latest=latest, to_db=to_db, create=create,
        db_password=db_password, dry_run=dry_run, precheck=not no_precheck, identity_file=identity_file,
        as_json=as_json,
    )  # fmt: skip


def point_in_time_restore(
    app: App,
    policy_name: str,
    source_name: str,
    *,
    to_time: str | None,
    latest: bool,
    to_db: str | None,
    create: bool,
    db_password: str | None,
    dry_run: bool,
    precheck: bool,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """`binlog restore`, also reached as `backupctl restore POLICY --source S --to-time T|--latest`."""
    from backupctl.actions.binlog_restore import run_point_in_time_restore
    from backupctl.pitr.mysql_archive import open_binlog_archive
    from backupctl.sources.base import RestoreRequest

    if latest == (to_time is not None):
        raise ConfigError("give exactly one of --to-time TIME or --latest")
    point = parse_time(to_time) if to_time else None
    password = SecretRef.parse(db_password).resolve() if db_password else None
    policy = app.policy(policy_name, check_secrets=False).policy
    request = RestoreRequest(to_db=to_db, create=create, password=password)
    with open_binlog_archive(app.settings, policy, source_name) as archive:
        result = run_point_in_time_restore(
            app.settings, policy, source_name, archive, request, point,
            identity_file=identity_file, dry_run=dry_run, precheck=precheck, events=app.events(),
        )  # fmt: skip
    if as_json:
        print_json(result.as_dict())
    else:
        plan = result.plan
        app.echo(
            f"{'plan' if dry_run else 'restored'}: dump {plan.dump.snapshot_id} "
            f"({plan.dump.file}:{plan.start_position}) + {len(plan.files)} binlog(s) "
            f"{', '.join(plan.files)}; asked {result.asked}, reached {result.reached}"
        )
        for note in result.notes:
            app.echo(f"  note: {note}")
    if result.mismatches:
        raise JobFailed("the restored dump differs from its manifest:\n  " + "\n  ".join(result.mismatches))


@binlog.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option(
    "--at",
    "point",
    default="latest",
    show_default=True,
    metavar="latest|random|TIME",
    help="The point (as for wal drill): the newest archived one, a random second since the oldest dump, "
    "or an ISO time (UTC if no zone).",
)
@click.option(
    "--drill",
    "drill_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Drill file (default: the policy's default drill, every source restored).",
)
@click.option(
    "--newest-row",
    metavar="SQL",
    help="Query returning the newest row's UTC time; it must lie in [T - RPO, T].",
)
@click.option(
    "--runtime", type=click.Choice(["docker", "local"]), help="Staging runtime (default: the drill's)."
)
@click.option("--no-objectives", is_flag=True, help="Do not fail on RTO/RPO objectives (checks still count).")
@identity_option
@json_option
@pass_app
def drill(
    app: App,
    policy_name: str,
    source_name: str,
    point: str,
    drill_file: Path | None,
    newest_row: str | None,
    runtime: str | None,
    no_objectives: bool,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Drill a restore to a point in time in staging: dump + binlog replay, RTO measured with the
    replay, and the newest row's time checked against the point. Exit 1 when the drill fails.

    Example: backupctl binlog drill shop --source shop-db --at random
    --newest-row "SELECT MAX(placed) FROM orders"
    """
    from backupctl.actions.binlog_drill import pick_point, run_binlog_drill
    from backupctl.actions.drill import default_drill, prepare_drill_secret
    from backupctl.actions.drill_report import outcome_json, write_outcome_reports
    from backupctl.drills.loader import load_drill
    from backupctl.locking import policy_lock
    from backupctl.pitr.mysql_archive import open_binlog_archive

    prepare_drill_secret()
    policy = app.policy(policy_name, check_secrets=False).policy
    spec = load_drill(drill_file) if drill_file else default_drill(policy)
    base_dir = drill_file.resolve().parent if drill_file else Path.cwd()
    with (
        policy_lock(app.settings, policy.name, "drill"),
        open_binlog_archive(app.settings, policy, source_name) as archive,
    ):
        moment = pick_point(policy, source_name, archive, app.settings, point)
        result = run_binlog_drill(
            app.settings, policy, spec, source_name, archive, moment, base_dir=base_dir,
            newest_row=newest_row, runtime_choice=runtime, identity_file=identity_file,
            check_objectives=not no_objectives, events=app.events(),
        )  # fmt: skip
    outcome = result.outcome
    write_outcome_reports(app.settings, outcome, app.settings.state_dir / "reports", None)
    if as_json:
        print_json({**outcome_json(outcome), "point_in_time": result.as_dict()})
    else:
        state = "PASSED" if outcome.ok else "FAILED"
        app.echo(
            f"drill {outcome.drill} {state}: dump {outcome.snapshot_id} + binlogs; asked {result.asked}, "
            f"reached {result.reached}, newest row {result.newest_row}; measured RTO "
            f"{outcome.measured_rto or 0:.1f}s"
        )
    if not outcome.ok:
        raise JobFailed(f"point-in-time drill {outcome.drill} FAILED: {outcome.reason}")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (`Z` accepted); without a zone it is UTC, as for `wal restore`. ConfigError."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--to-time {text!r}: expected an ISO time such as 2026-12-06T05:30:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _status(app: App, policy_name: str, source_name: str, metrics_file: Path | None) -> BinlogStatus:
    from backupctl.pitr.mysql_archive import open_binlog_archive

    policy = app.policy(policy_name, check_secrets=False).policy
    with open_binlog_archive(app.settings, policy, source_name) as archive:
        return _write_metrics(app, policy, source_name, archive, metrics_file)


def _write_metrics(
    app: App,
    policy: Policy,
    source_name: str,
    archive: BinlogArchiveStore,
    metrics_file: Path | None,
    via: str = "binlog status",
) -> BinlogStatus:
    """The archive's status (recorded in the catalog as an observation), also written as metrics
    to `metrics_file` when given."""
    from backupctl.actions.access import open_catalog
    from backupctl.actions.binlog_pitr_probe import observed_binlog_status
    from backupctl.metrics import write_metrics_file
    from backupctl.pitr.mysql_metrics import render_binlog_metrics

    report = observed_binlog_status(policy, source_name, archive, open_catalog(app.settings), via)
    if metrics_file is not None:
        write_metrics_file(metrics_file, render_binlog_metrics(report.as_dict(), report.covered_until))
    return report


@binlog.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@json_option
@pass_app
def prune(app: App, policy_name: str, source_name: str, dry_run: bool, as_json: bool) -> None:
    """Remove archived binlogs older than the oldest kept dump's binlog file (run after `prune`).

    Every kept dump keeps its whole chain to now; object-locked files stay and are reported.

    Example: backupctl prune shop && backupctl binlog prune shop --source shop-db
    """
    from backupctl.actions.access import open_catalog
    from backupctl.actions.binlog import run_binlog_prune
    from backupctl.pitr.mysql_archive import open_binlog_archive

    policy = app.policy(policy_name, check_secrets=False).policy
    with open_binlog_archive(app.settings, policy, source_name) as archive:
        report = run_binlog_prune(policy, source_name, archive, open_catalog(app.settings), dry_run=dry_run)
    if as_json:
        print_json(report.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for target, names in report.removed.items():
        app.echo(
            f"{policy_name}/{source_name} → {target}: {verb} {len(names)} binlog(s) before {report.keep_from}"
        )
    for target, names in report.retained_by_lock.items():
        app.echo(f"{policy_name}/{source_name} → {target}: {len(names)} binlog(s) retained by object lock")
    if not report.removed and not report.retained_by_lock:
        app.echo(f"{policy_name}/{source_name}: nothing to remove (oldest kept dump {report.oldest_dump})")


COMMANDS = [binlog]
