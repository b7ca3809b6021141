"""`doctor` checks of a PITR source's live server: WAL archiving settings and privileges.

Each problem comes with its fix (the postgresql.conf line or the SQL to run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from backupctl.actions.doctor_findings import CONNECT_TIMEOUT, Finding
from backupctl.core.durations import parse_duration
from backupctl.pitr.archive_command import parse as parse_archive_command
from backupctl.policy.schema import Policy, PostgresSource


@dataclass(frozen=True)
class ServerFacts:
    settings: dict[str, str]  # name -> current_setting
    replication: bool  # the role may run pg_basebackup (REPLICATION or superuser)
    monitor: bool  # the role may read pg_ls_archive_statusdir (pg_monitor or superuser)
    archiver_failing: bool  # last failure newer than the last success
    last_failed_wal: str | None = None
    archiver_pid: int | None = None  # the running `wal archiver` of the source (pitr.archiver), if any


def archive_command_for(policy: str, source: PostgresSource) -> str:
    """The archive_command to set: the shell line answering the archiver's acks when the source
    has `pitr.archiver`, else the plain `wal push` (backupctl.pitr.archive_command)."""
    from backupctl.pitr.archive_command import archive_command

    archiver = source.pitr.archiver if source.pitr is not None else None
    return archive_command(policy, source.name, archiver.spool if archiver is not None else None)


def _set_archive_command(policy: str, source: PostgresSource) -> str:
    from backupctl.pitr.archive_command import conf_literal

    return (
        f"set archive_command = {conf_literal(archive_command_for(policy, source))} (printed by "
        f"`backupctl wal archive-command {policy} --source {source.name}`) and run SELECT pg_reload_conf()"
    )


def pitr_findings(policy: Policy, source: PostgresSource, facts: ServerFacts) -> list[Finding]:
    """Pure: the findings for the facts read from a server."""
    assert source.pitr is not None
    check = f"{policy.name}/{source.name}: pitr"
    settings = facts.settings
    findings: list[Finding] = []
    if settings.get("wal_level") in ("replica", "logical"):
        findings.append(Finding(check, True, f"wal_level = {settings.get('wal_level')}"))
    else:
        findings.append(
            Finding(
                check,
                False,
                f"wal_level = {settings.get('wal_level')}: WAL cannot be archived",
                "set wal_level = replica in postgresql.conf and restart PostgreSQL",
            )
        )
    if settings.get("archive_mode") in ("on", "always"):
        findings.append(Finding(check, True, f"archive_mode = {settings.get('archive_mode')}"))
    else:
        findings.append(
            Finding(
                check,
                False,
                f"archive_mode = {settings.get('archive_mode')}",
                "set archive_mode = on in postgresql.conf and restart PostgreSQL",
            )
        )
    command = settings.get("archive_command", "")
    pushes = parse_archive_command(command)
    if pushes is not None and (pushes.policy, pushes.source) == (policy.name, source.name):
        findings.append(Finding(check, True, f"archive_command = {command}"))
    else:
        findings.append(
            Finding(
                check,
                False,
                f"archive_command = '{command}' does not archive with backupctl",
                _set_archive_command(policy.name, source),
            )
        )
    timeout = _seconds(settings.get("archive_timeout", "0"))
    rpo = policy.objectives.rpo
    if timeout <= timedelta(0) or timeout > rpo / 2:
        findings.append(Finding(
            check, False,
            f"archive_timeout = {settings.get('archive_timeout')}: a quiet server may keep a partly "
            f"filled segment longer than the RPO ({rpo})",
            f"set archive_timeout = {int(source.pitr.archive_timeout.total_seconds())}s and "
            "SELECT pg_reload_conf()",
        ))  # fmt: skip
    elif timeout > source.pitr.archive_timeout:
        findings.append(Finding(check, False, f"archive_timeout = {timeout} is above the policy's "
                                f"{source.pitr.archive_timeout}", "lower archive_timeout or the policy's "
                                "pitr.archive_timeout", warn=True))  # fmt: skip
    else:
        findings.append(Finding(check, True, f"archive_timeout = {timeout} (RPO {rpo})"))
    if int(settings.get("max_wal_senders", "0") or 0) < 1:
        findings.append(
            Finding(
                check,
                False,
                "max_wal_senders = 0: pg_basebackup cannot connect",
                "set max_wal_senders = 4 and restart PostgreSQL",
            )
        )
    if facts.replication:
        findings.append(Finding(check, True, "the role may take base backups (REPLICATION)"))
    else:
        findings.append(
            Finding(
                check,
                False,
                "the role of the source url has no REPLICATION attribute",
                "ALTER ROLE <role> REPLICATION; and a 'host replication <role> ...' pg_hba.conf line",
            )
        )
    if not facts.monitor:
        findings.append(
            Finding(
                check,
                False,
                "the role cannot read the .ready backlog (status shows it unknown)",
                "GRANT pg_monitor TO <role>",
                warn=True,
            )
        )
    if source.pitr.archiver is not None:
        findings += _archiver_findings(policy, source, command, facts.archiver_pid)
    if facts.archiver_failing:
        findings.append(
            Finding(
                check,
                False,
                f"archive_command is failing (last failed: {facts.last_failed_wal})",
                "read the server log for backupctl's error; `backupctl wal status` shows the RPO",
            )
        )
    return findings


def _archiver_findings(
    policy: Policy, source: PostgresSource, command: str, pid: int | None
) -> list[Finding]:
    """pitr.archiver: archive_command names its spool, and the archiver runs (on this host)."""
    assert source.pitr is not None and source.pitr.archiver is not None
    check = f"{policy.name}/{source.name}: pitr archiver"
    spool = source.pitr.archiver.spool
    findings = []
    pushes = parse_archive_command(command)
    named = pushes is not None and pushes.spool is not None and _same_path(pushes.spool, spool)
    if named and pushes is not None and pushes.fast:
        findings.append(Finding(check, True, f"archive_command reads the archiver's spool {spool}"))
    elif named:
        findings.append(Finding(
            check, False, f"archive_command reads the archiver's spool {spool} from Python: each acked "
            "segment still costs an interpreter start (correct, slower than the shell line)",
            _set_archive_command(policy.name, source), warn=True,
        ))  # fmt: skip
    else:
        findings.append(Finding(
            check, False, f"archive_command does not name the archiver's spool {spool}: every segment is "
            "pushed by archive_command itself (correct, but slow)",
            _set_archive_command(policy.name, source), warn=True,
        ))  # fmt: skip
    findings += _spool_privacy(check, spool, source.pitr.archiver.user)
    if pid is not None:
        findings.append(Finding(check, True, f"wal archiver runs (pid {pid})"))
    else:
        findings.append(Finding(
            check, False, "wal archiver is not running on this host: archive_command pushes every segment "
            "itself (correct, slower)",
            "set pitr.archiver.pgdata and run `backupctl schedule install` (or `backupctl daemon`), or "
            f"start it as the server's user: backupctl wal archiver {policy.name} --source {source.name} "
            "--pgdata DATADIR (docs/pitr.md#running-the-archiver)", warn=True,
        ))  # fmt: skip
    return findings


def _same_path(one: str, other: str) -> bool:
    return os.path.normpath(os.path.expanduser(one)) == os.path.normpath(os.path.expanduser(other))


def _spool_privacy(check: str, spool: str, user: str) -> list[Finding]:
    """The spool on this host must be the server user's and closed to others: archive_command
    trusts its acks (the archiver refuses a spool that is not; so does archive_command's line)."""
    import pwd
    import stat

    path = Path(spool).expanduser()
    try:
        info = path.stat()
    except OSError:
        return []  # not created yet, or on the database host: the archiver creates it 0700
    try:
        owner: int | None = pwd.getpwnam(user).pw_uid
    except KeyError:
        owner = None
    if stat.S_IMODE(info.st_mode) & 0o077 or (owner is not None and info.st_uid != owner):
        return [Finding(
            check, False, f"the spool {path} is not private to {user} (mode "
            f"{stat.S_IMODE(info.st_mode):o}, uid {info.st_uid}): its acknowledgements are not trusted, "
            "archive_command pushes every segment itself and the archiver refuses to run",
            f"chown {user} {path} && chmod 0700 {path}",
        )]  # fmt: skip
    return [Finding(check, True, f"the spool {path} is private to {user}")]


def check_pitr(policy: Policy, source: PostgresSource) -> list[Finding]:
    """Read the facts from the live server, then `pitr_findings`. Never raises."""
    check = f"{policy.name}/{source.name}: pitr"
    try:
        import psycopg

        password = source.password.resolve() if source.password is not None else None
        with psycopg.connect(source.url, connect_timeout=CONNECT_TIMEOUT, password=password,
                             application_name="backupctl-doctor") as connection:  # fmt: skip
            names = ["wal_level", "archive_mode", "archive_command", "archive_timeout", "max_wal_senders"]
            settings = {
                name: str(connection.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])  # type: ignore[index]
                for name in names
            }
            role = connection.execute(
                "SELECT rolsuper OR rolreplication, "
                "rolsuper OR pg_has_role(current_user, 'pg_monitor', 'MEMBER') "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            archiver = connection.execute(
                "SELECT coalesce(last_failed_time > coalesce(last_archived_time, 'epoch'), false), "
                "last_failed_wal FROM pg_stat_archiver"
            ).fetchone()
    except Exception as error:  # reported by the postgres checks already; one line here
        from backupctl.core.secrets import mask

        return [Finding(check, False, f"cannot read the server's settings: {mask(str(error).strip())[:200]}",
                        "see the postgres tools check above")]  # fmt: skip
    assert role is not None and archiver is not None
    facts = ServerFacts(
        settings, bool(role[0]), bool(role[1]), bool(archiver[0]), archiver[1], _archiver_pid(policy, source)
    )
    return pitr_findings(policy, source, facts)


def _archiver_pid(policy: Policy, source: PostgresSource) -> int | None:
    """The pid of the source's running archiver (its lock in the spool is held); None without one."""
    if source.pitr is None or source.pitr.archiver is None:
        return None
    from backupctl.pitr.spool import archiver_running

    return archiver_running(Path(source.pitr.archiver.spool).expanduser(), policy.name, source.name)


def _seconds(text: str) -> timedelta:
    """current_setting('archive_timeout') is like '1min', '60s' or '0'."""
    value = text.strip()
    if value in ("0", ""):
        return timedelta(0)
    value = value.replace("min", "m")
    try:
        return parse_duration(value)
    except ValueError:
        return timedelta(0)
