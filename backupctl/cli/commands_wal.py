"""`backupctl wal ...`: PostgreSQL point-in-time recovery (docs/pitr.md).

push (archive_command), archive-command (the line to set), archiver, fetch (restore_command),
base-backup, restore, verify, status, prune.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from backupctl.cli.context import App, identity_option, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.errors import JobFailed

EXIT_ABORT_RECOVERY = 126  # PostgreSQL aborts recovery on an exit status > 125 from restore_command
source_option = click.option(
    "--source", "source_name", required=True, metavar="SOURCE", help="The postgres source with a pitr: block."
)


@click.group()
def wal() -> None:
    """Point-in-time recovery of PostgreSQL: WAL archive, base backups, restore to a time.

    \b
    postgresql.conf on the database server:
      wal_level = replica
      archive_mode = on
      archive_timeout = 60s
      archive_command = 'backupctl wal push shop --source db %p %f'
      (with pitr.archiver: the line `backupctl wal archive-command shop --source db` prints)
    """


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("name", required=False)
@click.option(
    "--spool",
    type=click.Path(path_type=Path, file_okay=False),
    help="The spool of `wal archiver` (pitr.archiver.spool): exit 0 at once when the archiver "
    "acknowledged this segment with the same content, else push it here.",
)
@pass_app
def push(
    app: App, policy_name: str, source_name: str, path: Path, name: str | None, spool: Path | None
) -> None:
    """Archive one WAL file (PostgreSQL's archive_command: %p %f).

    Exit 0 only when the file is durable on every WAL target; an identical re-push exits 0;
    different content under the same name (split brain, another cluster) exits 1 with a loud
    error; SIGTERM/SIGINT exit 1, never >= 128, and leave nothing partial. With --spool, a
    segment the asynchronous archiver acknowledged with the same content exits 0 at once
    (answered before the rest of backupctl loads: backupctl.cli.fastpath).

    \b
    Examples (postgresql.conf):
      archive_command = 'backupctl wal push shop --source db %p %f'
      archive_command = 'backupctl wal push shop --source db --spool /srv/pg-spool %p %f'
    (`backupctl wal archive-command` prints the faster shell line that ends in the second.)
    """
    from backupctl.actions.wal import push_wal

    try:
        policy = app.policy(policy_name, check_secrets=False).policy
        if spool is not None:
            _check_spool(policy, source_name, spool)
        results = push_wal(app.settings, policy, source_name, path, name)
    except KeyboardInterrupt:
        raise JobFailed(f"interrupted while archiving {name or path.name}; PostgreSQL retries it") from None
    shown = name or path.name
    state = "already archived" if all(r.already for r in results) else "archived"
    app.echo(f"{shown} {state} ({len(results)} target(s))")


def _check_spool(policy: object, source_name: str, spool: Path) -> None:
    """A --spool that is not the policy's archiver spool only costs speed: say so in the server log."""
    from backupctl.actions.wal_archiver import spool_of
    from backupctl.errors import ConfigError
    from backupctl.policy.schema import Policy

    assert isinstance(policy, Policy)
    try:
        configured = spool_of(policy, source_name)
    except ConfigError as error:
        click.echo(f"warning: --spool {spool}: {error}", err=True)
        return
    if configured.absolute() != spool.absolute():
        click.echo(
            f"warning: --spool {spool} is not pitr.archiver.spool ({configured}): the archiver's "
            "acknowledgements are not seen, every segment is pushed by archive_command",
            err=True,
        )


@wal.command("archive-command")
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option("--sql", is_flag=True, help="Print ALTER SYSTEM SQL instead of the postgresql.conf line.")
@pass_app
def archive_command(app: App, policy_name: str, source_name: str, sql: bool) -> None:
    """Print the archive_command line for the source's server.

    With `pitr.archiver`, a `sh` line that exits 0 for a segment the archiver acknowledged,
    when the file is the very one it archived (same device, inode, size, mtime and ctime),
    without starting Python; anything else runs `wal push --spool` (docs/pitr.md). Without
    an archiver, the plain `wal push`. The programs are named by their paths on this host.

    \b
    Examples:
      backupctl wal archive-command shop --source db >> /etc/postgresql/15/main/conf.d/backupctl.conf
      backupctl wal archive-command shop --source db --sql
    """
    import shutil
    import sys

    from backupctl.actions.wal import pitr_source
    from backupctl.pitr.archive_command import archive_command as line
    from backupctl.pitr.archive_command import conf_literal

    policy = app.policy(policy_name, check_secrets=False).policy
    _, pitr = pitr_source(policy, source_name)
    spool = None
    if pitr.archiver is not None:
        # the archiver expands `~` as the server's user: the line must name the same directory
        spool = pitr.archiver.spool
        if spool.startswith("~/"):
            import pwd

            try:
                spool = os.path.join(pwd.getpwnam(pitr.archiver.user).pw_dir, spool[2:])
            except KeyError:
                spool = os.path.expanduser(spool)
    # absolute paths: PostgreSQL's PATH may not name them, a PATH search costs an exec each, and
    # the server runs the line in its own directory; with this installation's --policies,
    # --state-dir and --keys-dir, as restore_command's line (`_backupctl_command`)
    invoked = sys.argv[0] if os.path.basename(sys.argv[0]) == "backupctl" else "backupctl"
    found = shutil.which(invoked)
    base = [os.path.abspath(found)] if found else [sys.executable, "-m", "backupctl"]
    program = [*base, *_installation_options(app)]
    value = line(policy.name, source_name, spool, program=program, stat=shutil.which("stat") or "stat")
    if sql:
        click.echo(f"ALTER SYSTEM SET archive_command = {conf_literal(value)};\nSELECT pg_reload_conf();")
    else:
        click.echo(f"archive_command = {conf_literal(value)}")


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option(
    "--pgdata",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The server's data directory (its pg_wal/archive_status is watched) [default: "
    "pitr.archiver.pgdata].",
)
@click.option(
    "--workers", type=click.IntRange(1, 16), help="Parallel pushes (default: pitr.archiver.workers)."
)
@click.option("--once", is_flag=True, help="Push what is ready now, then exit (for tests and catch-up).")
@pass_app
def archiver(
    app: App, policy_name: str, source_name: str, pgdata: Path | None, workers: int | None, once: bool
) -> None:
    """Push WAL segments ahead of archive_command and acknowledge them in the spool.

    Runs until SIGTERM/SIGINT (then finishes the pushes under way and exits 0), as the server's
    system user. Every segment PostgreSQL marks ready is pushed with `wal push`'s own code path
    and acknowledged (name and content digest, fsync'd) only once durable on every WAL target;
    archive_command = `wal push --spool SPOOL` then exits 0 at once for it. Without a running
    archiver, `wal push` simply pushes by itself.

    \b
    Example (a systemd service, docs/pitr.md):
      backupctl wal archiver shop --source db --pgdata /var/lib/postgresql/15/main
    """
    import signal
    import threading

    from backupctl.actions.wal_archiver import run_archiver, spool_of

    policy = app.policy(policy_name, check_secrets=False).policy
    if pgdata is None:
        pgdata = _policy_pgdata(policy, source_name)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    app.echo(
        f"archiver of {policy_name}/{source_name}: watching {pgdata}, spool {spool_of(policy, source_name)}"
    )
    stats = run_archiver(
        app.settings,
        policy,
        source_name,
        pgdata,
        stop,
        workers=workers,
        once=once,
        on_ack=lambda name, already: app.echo(
            f"{name} {'already archived' if already else 'archived'}, acknowledged"
        ),
    )
    app.echo(
        f"archiver stopped: {stats.pushed} pushed, {stats.already} already archived, "
        f"{stats.failed} failed attempts, {stats.pruned} acks pruned"
    )
    if once and stats.failures:
        raise JobFailed("; ".join(stats.failures))


def _policy_pgdata(policy: object, source_name: str) -> Path:
    """`pitr.archiver.pgdata` of the source; UsageError when the policy does not name it."""
    from backupctl.actions.wal import pitr_source
    from backupctl.policy.schema import Policy

    assert isinstance(policy, Policy)
    archiver = pitr_source(policy, source_name)[1].archiver
    if archiver is None or archiver.pgdata is None:
        raise click.UsageError("give --pgdata, or set pitr.archiver.pgdata in the policy")
    return Path(archiver.pgdata).expanduser()


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.argument("name")
@click.argument("destination", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--prefetch", type=click.IntRange(1, 64), help="Segments fetched in parallel (default: policy)."
)
@click.option(
    "--spool",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for prefetched segments (default: backupctl-prefetch in the current directory, "
    "which PostgreSQL sets to the data directory).",
)
@identity_option
@pass_app
def fetch(
    app: App,
    policy_name: str,
    source_name: str,
    name: str,
    destination: Path,
    prefetch: int | None,
    spool: Path | None,
    identity_file: Path | None,
) -> None:
    """Restore one WAL file (PostgreSQL's restore_command: %f %p), prefetching the next ones.

    Each segment is checked against its signed digest before PostgreSQL sees it. Exit 1 when
    the file is not archived (normal at the end of recovery) or is damaged.

    \b
    Example (postgresql.conf of the restored cluster; `wal restore` writes it for you):
      restore_command = 'backupctl wal fetch shop --source db %f %p'
    """
    spooled = (spool if spool is not None else Path("backupctl-prefetch")) / name
    if spooled.is_file():  # prefetched and verified by an earlier fetch: no policy to load
        spooled.replace(destination)
        return
    from backupctl.actions.access import load_identities, trusted_keys
    from backupctl.actions.wal import fetch_wal
    from backupctl.errors import IntegrityError
    from backupctl.pitr.archive import SegmentMissing

    try:
        policy = app.policy(policy_name, check_secrets=False).policy
        fetch_wal(
            app.settings,
            policy,
            source_name,
            name,
            destination,
            load_identities(policy, identity_file),
            trusted_keys(app.settings, policy),
            prefetch=prefetch,
            spool=spool if spool is not None else Path("backupctl-prefetch"),
        )
    except KeyboardInterrupt:
        raise JobFailed(f"interrupted while fetching {name}") from None
    except SegmentMissing:
        raise  # exit 1: PostgreSQL takes it as "not archived" (the end of recovery, or another timeline)
    except IntegrityError as error:
        # A damaged or forged segment must stop recovery, not end it quietly: PostgreSQL treats
        # an exit status above 125 as fatal and aborts (exit 1 would promote at this point).
        click.echo(f"error: {error}: recovery must stop here (exit {EXIT_ABORT_RECOVERY})", err=True)
        raise SystemExit(EXIT_ABORT_RECOVERY) from None


@wal.command("base-backup")
@click.argument("policy_name", metavar="POLICY")
@source_option
@json_option
@pass_app
def base_backup(app: App, policy_name: str, source_name: str, as_json: bool) -> None:
    """Take a physical base backup (pg_basebackup → zstd → age) into the WAL targets.

    Complete (its signed manifest written) only once the WAL it needs is archived.

    \b
    Example:
      backupctl wal base-backup shop --source db
    """
    from backupctl.actions.wal_base import run_base_backup

    policy = app.policy(policy_name).policy
    backup = run_base_backup(app.settings, policy, source_name, host=socket.gethostname())
    if as_json:
        print_json(backup.__dict__)
    else:
        app.echo(
            f"base backup {backup.base_id}: {backup.start_lsn} .. {backup.stop_lsn} on timeline "
            f"{backup.timeline}, {backup.plain_bytes} bytes"
        )


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@json_option
@pass_app
def verify(app: App, policy_name: str, source_name: str, as_json: bool) -> None:
    """Check the WAL chain from the oldest base backup to the newest segment; name every gap.

    Needs no private key (records are signed). Records what it read in the catalog as an
    observation of the archive (evidence of the achieved RPO). Exit 1 when a segment is missing.

    \b
    Example:
      backupctl wal verify shop --source db
    """
    from backupctl.actions.access import open_catalog, trusted_keys
    from backupctl.actions.wal_pitr_probe import observed_wal_verify

    policy = app.policy(policy_name, check_secrets=False).policy
    trusted = trusted_keys(app.settings, policy)
    report = observed_wal_verify(app.settings, policy, source_name, trusted, open_catalog(app.settings))
    if as_json:
        print_json(report.as_dict())
    else:
        for target, chain in report.targets.items():
            state = "ok" if chain.ok else "GAPS"
            app.echo(f"{target}: {state}: {chain.count} segments {chain.first} .. {chain.last}")
            if chain.start_missing:
                click.echo(f"  missing {chain.start_missing} (the oldest base backup needs it)")
            for gap in chain.gaps:
                click.echo(f"  {gap.describe()}")
    if not report.ok:
        gaps = [g.missing[0] for c in report.targets.values() for g in c.gaps]
        raise JobFailed(f"WAL chain of {source_name} has gaps: first missing {', '.join(gaps[:5])}")


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option("--to-time", help="Recover up to this time (ISO 8601; UTC without a zone).")
@click.option("--to-lsn", help="Recover up to this LSN, e.g. 0/5000060.")
@click.option("--latest", is_flag=True, help="Recover everything archived.")
@click.option(
    "--to-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The NEW data directory (must not exist or be empty).",
)
@click.option("--port", type=int, help="Port of the restored server (default: a free one).")
@click.option("--keep-running", is_flag=True, help="Leave the restored server running (default: stop it).")
@click.option(
    "--backupctl-command",
    help="How the server's system user runs backupctl in restore_command "
    "(default: this installation with its --policies/--state-dir/--keys-dir).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (base backup, WAL range, target); touch nothing."
)
@identity_option
@json_option
@pass_app
def restore(
    app: App,
    policy_name: str,
    source_name: str,
    to_time: str | None,
    to_lsn: str | None,
    latest: bool,
    to_dir: Path,
    port: int | None,
    keep_running: bool,
    backupctl_command: str | None,
    dry_run: bool,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Restore a PITR source to a point in time into a new cluster, and check the point reached.

    Picks the newest base backup before the target, unpacks it, sets recovery.signal,
    restore_command (`backupctl wal fetch`), the recovery target and promote, starts the server
    and waits until it has promoted. A gap in the archive fails before anything is written,
    naming the missing segment and how far recovery could go.

    \b
    Examples:
      backupctl wal restore shop --source db --to-time "2026-12-06 14:05:00+01:00" --to-dir /srv/pg-restore
      backupctl wal restore shop --source db --latest --to-dir /srv/pg-restore --dry-run
    """
    from backupctl.actions.access import load_identities, trusted_keys
    from backupctl.actions.wal_restore import RestoreRequest, parse_target_time, plan_restore, run_restore

    policy = app.policy(policy_name, check_secrets=False).policy
    request = RestoreRequest(
        policy=policy,
        source=source_name,
        to_dir=to_dir,
        command=_backupctl_command(app, backupctl_command),
        to_time=parse_target_time(to_time) if to_time else None,
        to_lsn=to_lsn,
        latest=latest,
        identity_file=identity_file,
        port=port,
        keep_running=keep_running,
    )
    trusted = trusted_keys(app.settings, policy)
    if dry_run:
        plan = plan_restore(app.settings, request, trusted)
        if as_json:
            print_json(plan.as_dict())
        else:
            app.echo(f"base backup {plan.base.base_id} (finished {plan.base.finished_at}) from {plan.target}")
            app.echo(f"WAL {plan.first_segment} .. {plan.last_segment or '(none)'}")
            app.echo(
                f"target: {plan.recovery_target or 'latest'}; into {plan.to_dir} (dry run: nothing done)"
            )
        return
    result = run_restore(app.settings, request, trusted, load_identities(policy, identity_file))
    if as_json:
        print_json(result.as_dict())
    else:
        app.echo(
            f"restored {source_name} into {to_dir} in {result.seconds:.1f}s from base backup "
            f"{result.plan.base.base_id}"
        )
        app.echo(
            f"point reached: last commit {result.last_commit_time or '(none)'}, redo done at "
            f"{result.reached_lsn or '?'}; {result.stop_reason or 'end of archived WAL'}"
        )


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the numbers as a Prometheus textfile (node_exporter's textfile collector).",
)
@json_option
@pass_app
def status(app: App, policy_name: str, source_name: str, metrics_file: Path | None, as_json: bool) -> None:
    """Achieved RPO of a PITR source: now - the newest archived WAL segment, per target.

    Also shows the server's archiver failures and .ready backlog when it is reachable.
    Exit 1 when the RPO objective is breached, a segment is missing or no base backup exists.

    \b
    Example:
      backupctl wal status shop --source db --metrics-file /var/lib/node_exporter/pitr.prom
    """
    from backupctl.actions.access import open_catalog, trusted_keys
    from backupctl.actions.wal_pitr_probe import observed_wal_status
    from backupctl.actions.wal_status import write_status_metrics

    policy = app.policy(policy_name).policy
    catalog = open_catalog(app.settings)
    trusted = trusted_keys(app.settings, policy)
    report = observed_wal_status(app.settings, policy, source_name, trusted, catalog, "wal status")
    if metrics_file is not None:
        write_status_metrics(metrics_file, report)
    if as_json:
        print_json(report.as_dict())
    else:
        for item in report.targets:
            rpo = f"{item.rpo_seconds:.0f}s" if item.rpo_seconds is not None else "-"
            app.echo(
                f"{item.target}: RPO {rpo} (objective {report.objective_seconds:.0f}s), newest "
                f"{item.newest_segment or '-'}, {item.segments} segments, {item.base_backups} base backups"
            )
        server = report.server or {}
        if server.get("reachable"):
            app.echo(
                f"server: {server.get('failed_count')} archive failures "
                f"(last {server.get('last_failed_wal')}), "
                f"{server.get('ready_backlog')} segments waiting"
            )
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
    if not report.ok:
        raise JobFailed(f"PITR of {source_name}: " + "; ".join(report.problems))


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@json_option
@pass_app
def prune(app: App, policy_name: str, source_name: str, dry_run: bool, as_json: bool) -> None:
    """Remove base backups beyond pitr.keep_base_backups and the WAL older than the oldest kept one.

    Oldest first; object-locked objects stay (reported) and stop the pruning there, so the
    retained WAL is never holed.

    \b
    Example:
      backupctl wal prune shop --source db --dry-run
    """
    from backupctl.actions.access import trusted_keys
    from backupctl.actions.wal_status import prune_wal

    policy = app.policy(policy_name, check_secrets=False).policy
    report = prune_wal(app.settings, policy, source_name, trusted_keys(app.settings, policy), dry_run=dry_run)
    if as_json:
        print_json(report.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for segments in report.segments:
        target = segments.target
        app.echo(
            f"{target}: kept base backups {', '.join(report.kept_base_backups.get(target, [])) or '-'}; "
            f"{verb} {len(report.removed_base_backups.get(target, []))} base backups and "
            f"{len(segments.doomed)} WAL files older than {segments.keep_from or '-'}"
        )
        if segments.retained_by_lock:
            app.echo(f"  retained by lock: {', '.join(segments.retained_by_lock)}")


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.option(
    "--at", default="latest", show_default=True, help="latest, random (in the retained window) or a time."
)
@click.option("--runtime", type=click.Choice(["docker", "local"]), default="docker", show_default=True)
@click.option("--image", default="backupctl/postgres:15", show_default=True, help="Staging image (docker).")
@identity_option
@json_option
@pass_app
def drill(
    app: App,
    policy_name: str,
    source_name: str,
    at: str,
    runtime: str,
    image: str,
    identity_file: Path | None,
    as_json: bool,
) -> None:
    """Prove point-in-time recovery: restore base backup + WAL into a staging PostgreSQL.

    Measures the RTO including WAL replay and checks that the newest replayed commit lies in
    [T - RPO, T]. Exit 1 when the proof or the RTO objective fails.

    \b
    Example:
      backupctl wal drill shop --source db --at random --runtime docker
    """
    from backupctl.actions.access import load_identities, trusted_keys
    from backupctl.actions.drill_pitr import run_pitr_drill

    policy = app.policy(policy_name).policy
    report = run_pitr_drill(
        app.settings,
        policy,
        source_name,
        at=at,
        runtime=runtime,
        image=image,
        identities=load_identities(policy, identity_file),
        trusted=trusted_keys(app.settings, policy),
    )
    if as_json:
        print_json(report.as_dict())
    else:
        app.echo(f"PITR drill of {source_name} ({runtime}) at {at}: {'PASS' if report.ok else 'FAIL'}")
        app.echo(
            f"  point asked {report.target_time}, reached {report.reached_commit or '-'}, "
            f"achieved RPO {report.achieved_rpo_seconds}s, RTO {report.rto_seconds:.1f}s "
            f"(objective {report.rto_objective_seconds:.0f}s), {report.segments} WAL files replayed"
        )
    if not report.ok:
        raise JobFailed(f"PITR drill failed: {report.detail}")


def _backupctl_command(app: App, given: str | None) -> list[str]:
    import shlex
    import shutil
    import sys

    if given:
        return shlex.split(given)
    program = shutil.which("backupctl")
    base = [program] if program else [sys.executable, "-m", "backupctl"]
    return [*base, *_installation_options(app)]


def _installation_options(app: App) -> list[str]:
    """This installation's directories as global options, absolute: for command lines the
    server runs (archive_command, restore_command) in its own working directory and user."""
    settings = app.settings
    return [
        "--policies",
        str(settings.policies.absolute()),
        "--state-dir",
        str(settings.state_dir.absolute()),
        "--keys-dir",
        str(settings.keys_dir.absolute()),
    ]


COMMANDS = [wal]
