"""`backupctl backup|snapshots|verify|restore`."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from backupctl.cli.context import App, identity_option, jobs_option, json_option, pass_app, wait_option
from backupctl.cli.jobs import job_alerts
from backupctl.cli.output import human_bytes, print_json, stdout_console
from backupctl.core.secrets import SecretRef, mask_url_password
from backupctl.errors import ConfigError, IntegrityError, JobFailed
from backupctl.sources.base import ROLES_MODES, RestoreRequest, RolesMode, RolesOutcome


@click.command()
@click.argument("policy_name", metavar="POLICY")
@wait_option
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write Prometheus textfile metrics here after the run, e.g. "
    "/var/lib/node_exporter/textfile/backupctl-POLICY.prom (default: the policy's metrics_file).",
)
@json_option
@pass_app
def backup(
    app: App, policy_name: str, wait: timedelta | None, metrics_file: Path | None, as_json: bool
) -> None:
    """Back up every source of POLICY, encrypted, to every target.

    A snapshot is recorded complete only after every artifact and its signed manifest are
    stored and re-hashed. Exit 3 when some targets failed while others hold the snapshot.
    """
    import time

    from backupctl.actions.backup import BackupResult, run_backup
    from backupctl.errors import PartialFailure
    from backupctl.hooks import run_with_hooks
    from backupctl.locking import policy_lock
    from backupctl.metrics import summary_from_error, summary_from_result
    from backupctl.notify import notifier_from_config

    loaded = app.policy(policy_name)
    policy = loaded.policy
    notifier = notifier_from_config(policy.notifications)
    metrics_path = metrics_file or (Path(policy.metrics_file) if policy.metrics_file else None)
    started = time.monotonic()
    with policy_lock(app.settings, policy.name, "backup", wait):
        notifier.start(policy.name)
        try:
            result = run_with_hooks(policy, lambda: run_backup(app.settings, loaded, app.events()))
        except BaseException as error:  # notify and record, then let the error decide the exit code
            summary = summary_from_error(policy.name, error, time.monotonic() - started)
            if isinstance(error, PartialFailure) and isinstance(error.result, BackupResult):
                summary = {**summary_from_result(error.result), "error": summary["error"]}
            notifier.failure(policy.name, str(summary["error"]), summary)
            _write_metrics(app, policy, summary, metrics_path)
            raise
        summary = summary_from_result(result)
        notifier.success(policy.name, summary)
        _write_metrics(app, policy, summary, metrics_path)
    if as_json:
        print_json(result.as_dict())
        return
    app.echo(
        f"snapshot {result.snapshot_id} {result.status} in {result.seconds:.1f}s: "
        + ", ".join(
            f"{a.source} {human_bytes(a.plain_bytes)} → {human_bytes(a.stored_bytes)}"
            for a in result.artifacts
        )
    )


@click.command()
@click.argument("policy_name", metavar="POLICY")
@click.option("--all", "include_all", is_flag=True, help="Include failed and running attempts.")
@json_option
@pass_app
def snapshots(app: App, policy_name: str, include_all: bool, as_json: bool) -> None:
    """List the snapshots of POLICY, newest first."""
    from backupctl.catalog.store import Catalog

    views = Catalog.open(app.settings.catalog_url).snapshots(policy_name, include_incomplete=include_all)
    if as_json:
        print_json([view.as_dict() for view in views])
        return
    if not views:
        click.echo(f"no snapshots of '{policy_name}' in the catalog")
        return
    from backupctl.cli.tables import print_table  # rich alone takes seconds for years of history

    rows = [
        (
            view.id,
            view.status,
            view.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            human_bytes(view.plain_bytes),
            human_bytes(view.stored_bytes),
            ", ".join(
                f"{name}" + ("" if status == "complete" else f" ({status})")
                for name, status in view.targets.items()
            ),
            ", ".join(view.sources),
        )
        for view in views
    ]
    headers = ("snapshot", "status", "started (UTC)", "size", "stored", "targets", "sources")
    print_table(stdout_console(), headers, rows)


@click.command()
@click.argument("policy_name", metavar="POLICY")
@click.argument("snapshot", default="latest")
@click.option(
    "--target", "targets", multiple=True, help="Verify on this target (repeatable; default: all copies)."
)
@click.option(
    "--sample", metavar="N%",
    help="Read about N%% of the stored bytes, least recently verified copies first (restic: "
    "check --read-data-subset n/t); every byte is read within 100/N runs. SNAPSHOT is ignored.",
)  # fmt: skip
@identity_option
@json_option
@pass_app
@job_alerts("verify")
def verify(
    app: App,
    policy_name: str,
    snapshot: str,
    targets: tuple[str, ...],
    sample: str | None,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Prove SNAPSHOT (default: latest) is intact and decryptable on its targets.

    Checks the manifest signature, every artifact's size and sha256, and decrypts and
    decompresses every artifact (nothing is written). Exit 1 naming each broken artifact.
    With --sample N%, checks the same way about N% of everything stored instead (what the
    policy's `verify:` schedule runs).
    """
    from backupctl.actions.verify import verify_snapshot

    loaded = app.policy(policy_name, check_secrets=False)
    if sample is not None:
        _verify_sample(app, loaded.policy, sample, list(targets), identity_file, as_json)
        return
    results = verify_snapshot(
        app.settings, loaded.policy, snapshot, target_names=list(targets) or None, identity_file=identity_file
    )
    if as_json:
        print_json([result.as_dict() for result in results])
    else:
        for result in results:
            state = "ok" if result.ok else "FAILED"
            app.echo(f"{result.target}: snapshot {result.snapshot_id} {state}; signature {result.signature}")
            for artifact in result.artifacts:
                app.echo(f"  {artifact.file}: " + ", ".join(f"{k} {v}" for k, v in artifact.checks.items()))
    problems = [problem for result in results for problem in result.problems]
    if problems:
        raise IntegrityError(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))


def _verify_sample(
    app: App, policy: Any, sample: str, targets: list[str], identity_file: Path | None, as_json: bool
) -> None:
    """`verify --sample N%` (backupctl.actions.verify_sample), under the policy lock: a prune
    must not remove a copy being read (a scheduled run waits for a backup or prune)."""
    from backupctl.actions.verify_sample import parse_sample, verify_sample
    from backupctl.locking import policy_lock

    percent = parse_sample(sample)
    for name in targets:
        policy.target(name)  # ConfigError for an unknown target
    with policy_lock(app.settings, policy.name, "verify", timedelta(hours=4)):
        report = verify_sample(app.settings, policy, percent, target_names=targets or None,
                               identity_file=identity_file)  # fmt: skip
    if as_json:
        print_json(report.as_dict())
    else:
        for target in report.as_dict()["targets"]:
            state = "ok" if target["ok"] else "FAILED"
            read = f"subset {target['subset']}" if target["subset"] else (
                f"{len(target['copies_read'])} of {target['copies_total']} copies, "
                f"{human_bytes(target['read_bytes'])} of {human_bytes(target['total_bytes'])}"
            )  # fmt: skip
            cycle = target["cycle"]
            app.echo(f"{target['target']}: {state}; read {read}; cycle {cycle['progress']:.0%} of "
                     f"{cycle['runs']} run(s)")  # fmt: skip
            for problem in target["problems"]:
                app.echo(f"  {problem}")
    problems = [problem for target in report.as_dict()["targets"] for problem in target["problems"]]
    if problems:
        raise IntegrityError(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))


@click.command()
@click.argument("policy_name", metavar="POLICY")
@click.argument("snapshot", default="latest")
@click.option("--source", "source_name", required=True, help="Which source of the snapshot to restore.")
@click.option("--to-db", metavar="URL", help="Database URL to restore into (postgres, mysql sources).")
@click.option("--to-dir", type=click.Path(path_type=Path, file_okay=False), help="Directory (files sources).")
@click.option(
    "--to-file", type=click.Path(path_type=Path, dir_okay=False), help="File path (sqlite sources)."
)
@click.option(
    "--from", "from_target", metavar="TARGET", help="Read from this target (default: first holding it)."
)
@click.option("--force", is_flag=True, help="Allow a non-empty destination directory or an existing file.")
@click.option("--clean", is_flag=True, help="Drop database objects before recreating them.")
@click.option("--create", is_flag=True, help="Create the database (URL names the maintenance database).")
@click.option("--no-owner", is_flag=True, help="Do not restore ownership and privileges.")
@click.option(
    "--to-container", metavar="NAME",
    help="Restore with the tools inside this Docker container; --to-db is the URL inside it.",
)  # fmt: skip
@click.option(
    "--as", "as_name", metavar="NAME",
    help="Create database NAME on the --to-db server and restore into it (the live one is untouched).",
)  # fmt: skip
@jobs_option(
    "PostgreSQL spools the dump to a private temp file first ($BACKUPCTL_SPOOL_DIR; streams with 1 job "
    "when it has no room)."
)
@click.option(
    "--db-password", metavar="REF", help="Secret reference for the destination password (env:/file:/cmd:)."
)
@click.option(
    "--roles", "roles_mode", type=click.Choice(ROLES_MODES), default="create-missing", show_default=True,
    help="Roles/accounts the snapshot recorded (postgres, mysql): create those the destination lacks "
    "(no password, never altering existing ones), or skip.",
)  # fmt: skip
@click.option("--no-precheck", is_flag=True, help="Skip the sha256 pre-check pass (saves one read).")
@click.option("--to-time", metavar="TIME", help="Point in time (ISO; UTC if no zone): dump + binlog replay.")
@click.option("--latest", "latest_point", is_flag=True, help="Point in time: the newest archived one.")
@click.option("--dry-run", is_flag=True, help="With --to-time/--latest: print the plan only.")
@identity_option
@json_option
@pass_app
def restore(
    app: App,
    policy_name: str,
    snapshot: str,
    source_name: str,
    to_db: str | None,
    to_dir: Path | None,
    to_file: Path | None,
    from_target: str | None,
    force: bool,
    clean: bool,
    create: bool,
    no_owner: bool,
    to_container: str | None,
    as_name: str | None,
    jobs: int,
    db_password: str | None,
    roles_mode: RolesMode,
    no_precheck: bool,
    to_time: str | None,
    latest_point: bool,
    dry_run: bool,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Restore one source of SNAPSHOT (default: latest) into a database, directory or file.

    With --to-time T or --latest (a mysql source with binlog archiving): the newest dump before T
    plus a replay of the archived binlogs up to T (docs/pitr-mysql.md).

    The artifact is authenticated (signed manifest, sha256) before anything is written, and the
    result is checked against the manifest (row counts, tree hash). Exit 1 on any mismatch.
    """
    if to_time is not None or latest_point:
        from backupctl.cli.commands_binlog import point_in_time_restore

        return point_in_time_restore(
            app, policy_name, source_name, to_time=to_time, latest=latest_point, to_db=to_db, create=create,
            db_password=db_password, dry_run=dry_run, precheck=not no_precheck, identity_file=identity_file,
            as_json=as_json,
        )  # fmt: skip
    if dry_run:
        raise ConfigError("--dry-run plans a point-in-time restore: give --to-time TIME or --latest")
    if sum(x is not None for x in (to_db, to_dir, to_file)) != 1:
        raise ConfigError("give exactly one destination: --to-db, --to-dir or --to-file")
    if as_name is not None and (create or clean or to_db is None):
        raise ConfigError("--as NAME creates NAME on the --to-db server: give --to-db, not --create/--clean")
    password = None
    if db_password:
        try:
            password = SecretRef.parse(db_password).resolve()
        except ValueError as error:
            raise ConfigError(f"--db-password: {error}") from None
    request = RestoreRequest(
        to_db=to_db,
        to_dir=to_dir,
        to_file=to_file,
        force=force,
        clean=clean,
        create=create,
        jobs=jobs,
        no_owner=no_owner,
        password=password,
        as_name=as_name,
        container=to_container,
        roles=roles_mode,
    )
    from backupctl.actions.restore import run_restore
    from backupctl.restore_destination import commit, guarded

    loaded = app.policy(policy_name, check_secrets=False)
    with guarded(request) as (staged_request, staging):  # a failed stream leaves no silent half-tree
        result = run_restore(
            app.settings,
            loaded.policy,
            snapshot,
            source_name,
            staged_request,
            from_target=from_target,
            identity_file=identity_file,
            precheck=not no_precheck,
            events=app.events(),
        )
    if staging is not None and to_dir is not None:
        commit(staging, to_dir)
        result = dataclasses.replace(result, destination=str(to_dir.absolute()))
    if as_json:
        print_json(result.as_dict())
    else:
        app.echo(
            f"restored {result.source} of snapshot {result.snapshot_id} from {result.target} into "
            f"{mask_url_password(result.destination)} in {result.seconds:.1f}s "
            f"({human_bytes(result.plain_bytes)}"
            + (f", {result.jobs} parallel jobs)" if result.jobs > 1 else ")")
        )
        if result.warmup_seconds:
            app.echo(f"  archive warm-up (Glacier restore) took {result.warmup_seconds:.1f}s")
        for note in result.notes:
            app.echo(f"  note: {note}")
        _echo_roles(app, result.roles)
    if result.mismatches:
        raise JobFailed(
            "the restored data differs from the snapshot's manifest:\n  " + "\n  ".join(result.mismatches)
        )
    if not as_json:
        app.echo("  checked: " + _facts_summary(result.facts))


def _echo_roles(app: App, roles: RolesOutcome) -> None:
    if roles.created:
        app.echo("  roles created: " + ", ".join(roles.created))
    if roles.existing:
        app.echo("  roles already there (left as they are): " + ", ".join(roles.existing))
    for note in roles.notes:
        app.echo(f"  note: {note}")
    for statement in roles.applied:
        app.echo(f"  database grant/setting applied: {statement}")


def _facts_summary(facts: dict[str, object]) -> str:
    counts = facts.get("row_counts")
    if isinstance(counts, dict):
        return f"{len(counts)} tables, row counts equal the manifest"
    if "tree_sha256" in facts:
        return f"{facts.get('file_count')} files, tree hash equals the manifest"
    return "content equals the manifest"


def _write_metrics(app: App, policy: Any, summary: dict[str, Any], path: Path | None) -> None:
    """Best effort: a metrics problem is logged and never changes the exit code."""
    if path is None:
        return
    import logging
    from datetime import UTC, datetime

    from backupctl.actions.status import gather
    from backupctl.catalog.store import Catalog, drill_history
    from backupctl.core.secrets import mask
    from backupctl.metrics import drill_summary, snapshots_per_target, update_metrics_file

    try:
        catalog = Catalog.open(app.settings.catalog_url)
        drills = drill_history(catalog, policy.name, limit=1)
        update_metrics_file(
            path,
            policy.name,
            backup=summary,
            status=gather(catalog, policy, settings=app.settings, survey=False),
            snapshots_per_target=snapshots_per_target(
                catalog.snapshots(policy.name), [t.name for t in policy.targets]
            ),
            last_drill=drill_summary(drills[0] if drills else None),
            now=datetime.now(UTC),
        )
    except Exception as error:
        logging.getLogger("backupctl.metrics").warning(
            "metrics file %s not written: %s", path, mask(str(error))
        )


COMMANDS = [backup, snapshots, verify, restore]
