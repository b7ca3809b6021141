"""`doctor` checks of a MySQL/MariaDB source with binlog archiving: server settings, privileges.

Each finding carries the fix (a my.cnf line or a GRANT). What is checked, and why:
- log_bin ON: without a binary log there is nothing to archive.
- binlog_format ROW: row events replay exactly; STATEMENT/MIXED re-run statements whose result
  can differ on replay (NOW(), UUID(), LIMIT without ORDER BY, triggers).
- server_id non-zero: a server with id 0 refuses binlog clients (mariadb-binlog).
- binlog_expire_logs_seconds / expire_logs_days: 0 (never purged) or long enough that a file
  is archived long before the server purges it: at least a day and ten collection intervals, so
  a night-long archive outage still leaves no hole.
- Privileges of the backup user on *.*: REPLICATION SLAVE (copy binlogs over the replication
  protocol), BINLOG MONITOR or REPLICATION CLIENT (SHOW BINARY LOGS; the dump's position), RELOAD
  (FLUSH BINARY LOGS).
"""

from __future__ import annotations

import re
from datetime import timedelta

from backupctl.actions.doctor_findings import Finding
from backupctl.core.durations import format_duration
from backupctl.errors import BackupctlError
from backupctl.pitr.mysql_server import BinlogServer
from backupctl.policy.schema import MysqlPitr, MysqlSource, Policy
from backupctl.sources.mysql import Endpoint

MIN_EXPIRY = timedelta(days=1)
_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)
REQUIRED_PRIVILEGES = {
    "REPLICATION SLAVE": ("REPLICATION SLAVE",),
    "BINLOG MONITOR": ("BINLOG MONITOR", "REPLICATION CLIENT"),
    "RELOAD": ("RELOAD",),
}


def expiry_of(variables: dict[str, str]) -> timedelta | None:
    """How long the server keeps binlogs; None: forever. binlog_expire_logs_seconds wins (10.6+)."""
    seconds = variables.get("binlog_expire_logs_seconds", "")
    if seconds not in ("", "0"):
        return timedelta(seconds=int(seconds))
    days = float(variables.get("expire_logs_days") or 0)
    return timedelta(days=days) if days > 0 else None


def global_privileges(grants: list[str]) -> set[str]:
    """Privileges granted ON *.* (upper case) in SHOW GRANTS output."""
    held: set[str] = set()
    for grant in grants:
        if found := _GLOBAL_GRANT.match(grant):
            held.update(part.strip().upper() for part in found.group(1).split(","))
    return held


def setting_findings(check: str, variables: dict[str, str], archive: MysqlPitr) -> list[Finding]:
    """Findings for log_bin, binlog_format, server_id and the binlog expiry."""
    cnf = "set it under [mariadbd] in the server's my.cnf and restart the server"
    findings = [
        Finding(check, True, "log_bin is ON")
        if variables["log_bin"] == "ON"
        else Finding(check, False, "binary logging is off (log_bin)", f"log_bin = mariadb-bin: {cnf}"),
        Finding(check, True, "binlog_format is ROW")
        if variables["binlog_format"] == "ROW"
        else Finding(
            check, False, f"binlog_format is {variables['binlog_format'] or 'unknown'}, not ROW: "
            "statement events may replay differently", f"binlog_format = ROW ({cnf}, or SET GLOBAL)",
        ),
        Finding(check, True, f"server_id is {variables['server_id']}")
        if variables["server_id"] not in ("", "0")
        else Finding(check, False, "server_id is 0: binlog clients are refused", f"server_id = 1: {cnf}"),
    ]  # fmt: skip
    expiry, needed = expiry_of(variables), max(MIN_EXPIRY, 10 * archive.effective_interval())
    if expiry is None or expiry >= needed:
        kept = "forever" if expiry is None else format_duration(expiry)
        findings.append(Finding(check, True, f"the server keeps binlogs {kept}"))
    else:
        findings.append(
            Finding(
                check, False,
                f"the server purges binlogs after {format_duration(expiry)}: an archive outage longer "
                f"than that leaves a hole (at least {format_duration(needed)} needed)",
                f"binlog_expire_logs_seconds = {int(timedelta(days=7).total_seconds())} (7 days): {cnf}, "
                "or SET GLOBAL binlog_expire_logs_seconds = 604800",
            )
        )  # fmt: skip
    return findings


def privilege_findings(check: str, user: str, grants: list[str]) -> list[Finding]:
    """One finding per privilege binlog archiving needs on *.*."""
    held = global_privileges(grants)
    if "ALL PRIVILEGES" in held:
        return [Finding(check, True, f"{user} has ALL PRIVILEGES")]
    findings = []
    for privilege, accepted in REQUIRED_PRIVILEGES.items():
        if held.intersection(accepted):
            findings.append(Finding(check, True, f"{user} has {privilege}"))
        else:
            findings.append(
                Finding(
                    check,
                    False,
                    f"{user} lacks {privilege} on *.*",
                    f"GRANT {privilege} ON *.* TO the backup user",
                )
            )
    return findings


def check_binlog(policy: Policy, source: MysqlSource) -> list[Finding]:
    """Connect as the source's user and check the server's binlog settings and privileges."""
    assert source.pitr is not None
    check = f"{policy.name}/{source.name}: binlog"
    if source.via:
        return [
            Finding(
                check,
                False,
                "binlog archiving does not go through via",
                "reach the server directly",
                warn=True,
            )
        ]
    try:
        password = source.password.resolve() if source.password else None
        endpoint = Endpoint(source.user, source.database, source.host, source.port, source.socket, password)
        server = BinlogServer(endpoint)
        variables, grants = server.variables(), server.grants()
    except BackupctlError as error:
        return [
            Finding(
                check,
                False,
                f"cannot read the server's binlog settings: {error}",
                "check the url and password",
            )
        ]
    return setting_findings(check, variables, source.pitr) + privilege_findings(check, source.user, grants)
