"""`backupctl wal ...`: PostgreSQL point-in-time recovery (docs/pitr.md).

push (archive_command), fetch (restore_command), base-backup, restore, verify, status, prune.
"""

from __future__ import annotations

import socket
from pathlib import Path

import click

from backupctl.cli.context import App, identity_option, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.errors import JobFailed

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
    """


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("name", required=False)
@pass_app
def push(app: App, policy_name: str, source_name: str, path: Path, name: str | None) -> None:
    """Archive one WAL file (PostgreSQL's archive_command: %p %f).

    Exit 0 only when the file is durable on every WAL target; an identical re-push exits 0;
    different content under the same name (split brain, another cluster) exits 1 with a loud
    error; SIGTERM/SIGINT exit 1, never >= 128, and leave nothing partial.

    \b
    Example (postgresql.conf):
      archive_command = 'backupctl wal push shop --source db %p %f'
    """
    from backupctl.actions.wal import push_wal

    try:
        policy = app.policy(policy_name, check_secrets=False).policy
        results = push_wal(app.settings, policy, source_name, path, name)
    except KeyboardInterrupt:
        raise JobFailed(f"interrupted while archiving {name or path.name}; PostgreSQL retries it") from None
    shown = name or path.name
    state = "already archived" if all(r.already for r in results) else "archived"
    app.echo(f"{shown} {state} ({len(results)} target(s))")


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
    from backupctl.actions.access import load_identities, trusted_keys
    from backupctl.actions.wal import fetch_wal

    try:
        policy = app.policy(policy_name, check_secrets=False).policy
        fetch_wal(
            app.settings, policy, source_name, name, destination,
            load_identities(policy, identity_file), trusted_keys(app.settings, policy),
            prefetch=prefetch, spool=spool if spool is not None else Path("backupctl-prefetch"),
        )  # fmt: skip
    except KeyboardInterrupt:
        raise JobFailed(f"interrupted while fetching {name}") from None


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
        app.echo(f"base backup {backup.base_id}: {backup.start_lsn} .. {backup.stop_lsn} on timeline "
                 f"{backup.timeline}, {backup.plain_bytes} bytes")  # fmt: skip


@wal.command()
@click.argument("policy_name", metavar="POLICY")
@source_option
@json_option
@pass_app
def verify(app: App, policy_name: str, source_name: str, as_json: bool) -> None:
    """Check the WAL chain from the oldest base backup to the newest segment; name every gap.

    Needs no private key (records are signed). Exit 1 when a segment is missing.

    \b
    Example:
      backupctl wal verify shop --source db
    """
    from backupctl.actions.access import trusted_keys
    from backupctl.actions.wal import verify_wal

    policy = app.policy(policy_name, check_secrets=False).policy
    report = verify_wal(app.settings, policy, source_name, trusted_keys(app.settings, policy))
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


COMMANDS = [wal]
