"""`backupctl prune POLICY`: apply the GFS retention rules to every target."""

from __future__ import annotations

from datetime import timedelta

import click

from backupctl.cli.context import App, json_option, pass_app, wait_option
from backupctl.cli.jobs import job_alerts
from backupctl.cli.output import human_bytes, print_json, stdout_console
from backupctl.errors import JobFailed


@click.command()
@click.argument("policy_name", metavar="POLICY")
@click.option(
    "--dry-run", is_flag=True, help="Show what each target keeps and removes, and why; change nothing."
)
@click.option("--target", "targets", multiple=True, help="Only prune these targets (repeatable).")
@wait_option
@json_option
@pass_app
@job_alerts("prune")
def prune(
    app: App, policy_name: str, dry_run: bool, targets: tuple[str, ...], wait: timedelta | None, as_json: bool
) -> None:
    """Remove the snapshots the retention rules no longer keep (per target, with the reason).

    Never removes a target's newest complete snapshot, nor the only copy of a snapshot another
    target's rules still want. Object-locked versions stay and are reported retained-by-lock.
    On restic targets it also forgets the data that failed runs left there (not in --dry-run).
    Exit 0, or 1 when a deletion failed (retained-by-lock is not a failure).
    """
    from backupctl.actions.prune import run_prune
    from backupctl.actions.sweep import as_dicts, sweep_failed_runs
    from backupctl.cli.tables import print_table  # rich: only when a table is printed
    from backupctl.locking import policy_lock

    policy = app.policy(policy_name, check_secrets=False).policy
    with policy_lock(app.settings, policy.name, "prune", wait):
        report = run_prune(
            app.settings, policy, dry_run=dry_run, only_targets=list(targets) or None, events=app.events()
        )
        swept = sweep_failed_runs(app.settings, policy, dry_run=dry_run, only_targets=list(targets) or None)
    if as_json:
        print_json({**report.as_dict(), "swept": as_dicts(swept)})
    elif not app.quiet:
        console = stdout_console()
        for sweep in swept:  # what failed and killed runs had left (backupctl/actions/sweep.py)
            verb = "would reclaim" if dry_run else "reclaimed"
            console.print(f"{policy_name} → {sweep.target}: {verb} {human_bytes(sweep.bytes_reclaimed)} of "
                          f"{len(sweep.snapshots)} unfinished run(s)", markup=False)  # fmt: skip
        verb = "would remove" if dry_run else "removed"
        for result in report.targets:
            summary = f"{len(result.kept)} kept, {len(result.removed)} {verb}"
            if result.leftovers:
                summary += f", data of {len(result.leftovers)} failed run(s) forgotten"
            if result.retained_by_lock:
                summary += f", {len(result.retained_by_lock)} retained by lock"
            if result.errors:
                summary += f", {len(result.errors)} failed"
            console.print(f"{policy_name} → {result.target} ({result.type}): {summary}", markup=False)
            rows = [(kept.snapshot, "keep", ", ".join(kept.reasons)) for kept in result.kept]
            rows += [(snapshot_id, "remove", "no rule keeps it") for snapshot_id in result.removed]
            rows += [(snapshot_id, "forgotten", "failed run: restic data without a manifest")
                     for snapshot_id in result.leftovers]  # fmt: skip
            rows += [
                (
                    locked.snapshot,
                    "retained-by-lock",
                    f"locked until {locked.until}" if locked.until else "lock",
                )
                for locked in result.retained_by_lock
            ]
            rows += [(failure.snapshot, "FAILED", failure.error) for failure in result.errors]
            # Ids sort by time. print_table: rich itself takes seconds for thousands of rows.
            print_table(
                console, ("snapshot", "action", "why"), sorted(rows, key=lambda row: row[0], reverse=True)
            )
    if report.failed:
        failures = [f"{r.target} {e.snapshot}: {e.error}" for r in report.targets for e in r.errors]
        raise JobFailed(
            f"prune {policy_name}: {len(failures)} deletion(s) failed:\n  " + "\n  ".join(failures)
        )


COMMANDS = [prune]
