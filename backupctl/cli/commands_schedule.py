"""`backupctl schedule install|remove|list` and `backupctl daemon`."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from backupctl.cli.context import DURATION, App, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.errors import ConfigError
from backupctl.scheduling import (
    Scheduled,
    backupctl_argv,
    catalog_note,
    cron,
    scheduled_policies,
    systemd,
    unscheduled_archivers,
    writable_paths,
)
from backupctl.settings import Settings

systemd_flag = click.option("--systemd", "mode", flag_value="systemd", help="systemd timers.")
cron_flag = click.option("--cron", "mode", flag_value="cron", help="cron lines.")
user_option = click.option(
    "--user", is_flag=True, help="systemd: user units in ~/.config/systemd/user; cron: your own crontab."
)
dry_run_option = click.option("--dry-run", is_flag=True, help="Print everything; write and run nothing.")
unit_dir_option = click.option(
    "--unit-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="systemd unit directory [default /etc/systemd/system, with --user ~/.config/systemd/user].",
)
cron_file_option = click.option(
    "--cron-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="cron.d-format file to write [default /etc/cron.d/backupctl as root; otherwise your crontab].",
)


@click.group()
def schedule() -> None:
    """Run every policy's `schedule:` (backups) and `drill_schedule:` (restore drills) with systemd
    timers or cron (see also `backupctl daemon`)."""


@schedule.command()
@systemd_flag
@cron_flag
@user_option
@dry_run_option
@click.option("--enable", is_flag=True, help="systemd: also run daemon-reload and enable --now the timers.")
@click.option(
    "--randomized-delay", type=DURATION, default="5m", show_default=True, help="systemd RandomizedDelaySec."
)
@click.option("--on-failure", metavar="UNIT", help="systemd OnFailure=, e.g. 'backupctl-notify@%n.service'.")
@click.option("--executable", metavar="PATH", help="backupctl program to run [default: this one].")
@unit_dir_option
@cron_file_option
@json_option
@pass_app
def install(
    app: App,
    mode: str | None,
    user: bool,
    dry_run: bool,
    enable: bool,
    randomized_delay: timedelta,
    on_failure: str | None,
    executable: str | None,
    unit_dir: Path | None,
    cron_file: Path | None,
    as_json: bool,
) -> None:
    """Install the schedules of every policy that has one (re-running it is safe: it syncs).

    \b
    --systemd: a backupctl-backup-POLICY.service + .timer pair per policy: sandboxed oneshot
      (read-only system, writable state dir and local targets), Persistent=true, randomized delay;
      with a drill_schedule also backupctl-drill-POLICY.service + .timer (`drill FILE|POLICY`).
      Secrets for env: references go in /etc/backupctl/POLICY.env (mode 0600).
    --cron: one line per job between '# BEGIN backupctl' and '# END backupctl', with flock
      and a log file in STATE_DIR/logs.
    A postgres source with pitr.archiver.pgdata also gets its long-running `wal archiver`:
      systemd: backupctl-wal-archiver-POLICY-SOURCE.service (Restart=always, User=pitr.archiver.user);
      cron: a watchdog line every minute that starts it when it is not running.
    """
    items = _require_schedules(app.settings)
    argv = backupctl_argv(app.settings, executable)
    extra, note = catalog_note(app.settings)
    argv += extra
    for unscheduled in unscheduled_archivers(items):
        click.echo(f"note: {unscheduled}", err=True)
    if _mode(mode) == "systemd":
        options = systemd.UnitOptions(argv, app.settings.state_dir, randomized_delay, on_failure, user)
        units: dict[str, str] = {}
        for item in items:
            units.update(systemd.render_units(item, options, writable_paths(item, app.settings)))
        plan = systemd.plan_install(units, unit_dir or systemd.default_unit_dir(user), user)
        plan.notes += [note] if note else []
        if not dry_run:
            app.settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # ReadWritePaths= needs it
            systemd.apply(plan, run_systemctl=enable)
        _render_systemd(plan, dry_run=dry_run, ran=enable, as_json=as_json)
        return
    store = _cron_store(cron_file, user)
    is_file = isinstance(store, cron.CronFileStore)
    options_ = cron.CronOptions(
        argv, app.settings.state_dir, "root" if is_file else None, cron.default_env_dir()
    )
    text = cron.install(store, cron.render_block(items, options_), dry_run=dry_run)
    if not dry_run:
        for sub in ("locks", "logs"):
            (app.settings.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if as_json:
        print_json(
            {"where": store.description, "dry_run": dry_run, "text": text, "notes": [note] if note else []}
        )
        return
    click.echo(
        text if dry_run else f"installed {len(items)} schedule(s) in {store.description}", nl=not dry_run
    )
    if note:
        click.echo(f"note: {note}", err=True)


@schedule.command()
@systemd_flag
@cron_flag
@user_option
@dry_run_option
@click.option("--disable", is_flag=True, help="systemd: also run disable --now on the timers first.")
@unit_dir_option
@cron_file_option
@pass_app
def remove(
    app: App,
    mode: str | None,
    user: bool,
    dry_run: bool,
    disable: bool,
    unit_dir: Path | None,
    cron_file: Path | None,
) -> None:
    """Remove what `schedule install` wrote (only that: other units and crontab lines stay)."""
    if _mode(mode) == "systemd":
        plan = systemd.plan_remove(unit_dir or systemd.default_unit_dir(user), user)
        if not dry_run:
            systemd.apply(plan, run_systemctl=disable)
        _render_systemd(plan, dry_run=dry_run, ran=disable, as_json=False)
        return
    store = _cron_store(cron_file, user)
    removed = cron.remove(store, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(removed)} line(s) from {store.description}")


@schedule.command("list")
@click.option("--count", type=click.IntRange(1, 100), default=3, show_default=True, help="Next runs to show.")
@json_option
@pass_app
def list_schedules(app: App, count: int, as_json: bool) -> None:
    """Every policy's backup and drill schedules and their next run times (local time)."""
    rows = [_list_row(item, count) for item in scheduled_policies(app.settings)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no policy has a schedule")
    for row in rows:
        which = {None: "", "default": " (default drill)"}.get(row.get("drill"), f" ({row.get('drill')})")
        source = f" ({row['source']})" if "source" in row else ""
        click.echo(f"{row['policy']} {row['job']}{source}: {row['schedule']}{which}")
        for run in row["next"]:
            click.echo(f"  {run}")


def _list_row(item: Scheduled, count: int) -> dict[str, Any]:
    """One `schedule list` row; drills also say which drill runs ("default": the policy's)."""
    row: dict[str, Any] = {"policy": item.name, "job": item.kind, "schedule": item.cron.text}
    if item.kind == "drill":
        row["drill"] = str(item.drill_file) if item.drill_file else "default"
    if item.source is not None:
        row["source"] = item.source
    if item.service:  # kept running: systemd Restart=always, cron's watchdog line, the daemon
        row["schedule"] = "always running"
        row["next"] = []
        return row
    row["next"] = [run.isoformat() for run in item.next_runs(count)]
    return row


@click.command()
@click.argument("policy_names", metavar="[POLICY]...", nargs=-1)
@click.option("--run-now", is_flag=True, help="Start the first backup of each policy at once.")
@click.option(
    "--drill-now",
    is_flag=True,
    help="Start the first drill of each policy at once (after its backup with --run-now).",
)
@click.option(
    "--stop-timeout",
    type=DURATION,
    default="5m",
    show_default=True,
    help="On SIGTERM, how long running backups and drills get to abort cleanly before they are killed.",
)
@pass_app
def daemon(
    app: App, policy_names: tuple[str, ...], run_now: bool, drill_now: bool, stop_timeout: timedelta
) -> None:
    """Run the backups and drills of every scheduled policy (or only POLICY...) in the foreground.

    The WAL archiver of a source with pitr.archiver.pgdata runs as a supervised child: restarted
    when it exits (back-off 1 s to 60 s), stopped on SIGTERM.

    For hosts without systemd or cron. One job at a time per policy, each in its own process (a
    drill due while its policy's backup runs waits for it, and the reverse); SIGTERM aborts
    running jobs cleanly (no half snapshot is recorded, drill staging is torn down), then exits 0.
    """
    from backupctl.scheduling.daemon import Daemon

    items = _require_schedules(app.settings)
    if policy_names:
        unknown = sorted(set(policy_names) - {item.name for item in items})
        if unknown:
            raise ConfigError(f"no scheduled policy named {', '.join(unknown)}")
        items = [item for item in items if item.name in policy_names]
    code = Daemon(
        items, app.settings, run_now=run_now, drill_now=drill_now, stop_timeout=stop_timeout.total_seconds()
    ).run()
    if code:
        raise click.exceptions.Exit(code)


def _mode(mode: str | None) -> str:
    if mode is None:
        raise ConfigError("choose --systemd or --cron")
    return mode


def _require_schedules(settings: Settings) -> list[Scheduled]:
    items = scheduled_policies(settings)
    if not items:
        raise ConfigError(
            f"no policy in {settings.policies} has a 'schedule:' or a 'drill_schedule:'"
            " (e.g. schedule: '15 2 * * *')"
        )
    return items


def _cron_store(cron_file: Path | None, user: bool) -> cron.CrontabStore | cron.CronFileStore:
    if cron_file is not None:
        return cron.CronFileStore(cron_file)
    if os.geteuid() == 0 and not user:
        return cron.CronFileStore(cron.CRON_D_FILE)
    return cron.CrontabStore()


def _render_systemd(plan: systemd.SystemdPlan, *, dry_run: bool, ran: bool, as_json: bool) -> None:
    if as_json:
        print_json({**plan.as_dict(), "dry_run": dry_run})
        return
    if dry_run:
        for name, text in sorted(plan.units.items()):
            click.echo(f"# ---- {plan.directory / name}\n{text}")
    verb = "would" if dry_run else ""
    for path in plan.delete:
        click.echo(f"{verb + ' delete' if dry_run else 'deleted'} {path}")
    if not dry_run:
        for name in sorted(plan.units):
            click.echo(f"wrote {plan.directory / name}")
    commands = " && ".join(" ".join(command) for command in plan.commands)
    if ran and not dry_run:
        click.echo(f"ran: {commands}")
    elif commands:
        click.echo(f"{'then run' if not dry_run else 'would then run'}: {commands}")
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)


COMMANDS = [schedule, daemon]
