"""`doctor`: can the backup role read everything it is asked to dump? With the GRANT to run.

PostgreSQL: superuser or a member of `pg_read_all_data` (PostgreSQL 14+) reads every table and
sequence; otherwise every schema needs USAGE and every table, view and *sequence* SELECT
(pg_dump reads each sequence's state: "permission denied for sequence" on the first real backup).
MariaDB/MySQL: mariadb-dump with `--single-transaction --routines --triggers --events` needs
SELECT, SHOW VIEW, TRIGGER and EVENT on the database, LOCK TABLES for non-transactional tables,
and SELECT on mysql.proc for other definers' routines (the source's preflight checks that one).
"""

from __future__ import annotations

import re
import shutil

from backupctl.actions.doctor_findings import CONNECT_TIMEOUT, Finding
from backupctl.policy.schema import MysqlSource, Policy, PostgresSource

# Relations pg_dump reads, and whether this role may (sequences need their own privilege check).
PG_UNREADABLE_SQL = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND NOT (CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT')
                ELSE has_table_privilege(c.oid, 'SELECT') END
           AND has_schema_privilege(n.oid, 'USAGE'))
ORDER BY 1, 2
"""
PG_READS_ALL_SQL = """
SELECT r.rolsuper OR (current_setting('server_version_num')::int >= 140000
                      AND pg_has_role(current_user, 'pg_read_all_data', 'MEMBER'))
FROM pg_roles r WHERE r.rolname = current_user
"""
MYSQL_NEEDED = ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "LOCK TABLES")
_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<scope>\S+) TO ", re.I)


def postgres_grant(user: str, server_major: int | None) -> str:
    """The GRANT that lets `user` dump every database of the server."""
    quoted = '"' + user.replace('"', '""') + '"'
    if server_major is None or server_major >= 14:
        return f"GRANT pg_read_all_data TO {quoted};"
    return (
        f"GRANT USAGE ON SCHEMA public TO {quoted}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quoted}; "
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted};  (per schema)"
    )


def mysql_missing(grants: list[str], database: str) -> list[str]:
    """Privileges of MYSQL_NEEDED that `SHOW GRANTS` lines do not give on `database` (pure)."""
    held: set[str] = set()
    for line in grants:
        match = _GRANT.match(line.strip())
        if not match:
            continue
        scope = match.group("scope").replace("`", "")
        if scope not in ("*.*", f"{database}.*"):
            continue  # table-level and wildcard grants: not enough to dump the whole database
        privileges = {p.strip().upper() for p in match.group("privileges").split(",")}
        if "ALL PRIVILEGES" in privileges or "ALL" in privileges:
            return []
        held |= privileges
    return [p for p in MYSQL_NEEDED if p not in held]


def check_postgres_privileges(policy: Policy, source: PostgresSource) -> Finding | None:
    """A finding about the backup role's read privileges; None when it cannot connect (reported)."""
    check = f"{policy.name}/{source.name}: privileges"
    if source.via:
        return Finding(check, True, f"database reached through {source.via}: not checked here")
    try:
        import psycopg

        password = source.password.resolve() if source.password is not None else None
        with psycopg.connect(source.url, connect_timeout=CONNECT_TIMEOUT, password=password,
                             application_name="backupctl-doctor") as connection:  # fmt: skip
            user = str(connection.info.user)
            major = connection.info.server_version // 10000
            reads_all = connection.execute(PG_READS_ALL_SQL).fetchone()
            if reads_all and reads_all[0]:
                detail = f"{user} reads every table and sequence (pg_read_all_data or superuser)"
                return Finding(check, True, detail)
            unreadable = connection.execute(PG_UNREADABLE_SQL).fetchall()
    except Exception:  # the connection problem is already a finding of check_postgres
        return None
    grant = postgres_grant(user, major)
    if not unreadable:
        return Finding(check, True, f"{user} can read every table and sequence today (new ones: {grant})")
    kinds = {"S": "sequence"}
    shown = ", ".join(f"{kinds.get(kind, 'table')} {schema}.{name}" for schema, name, kind in unreadable[:5])
    more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
    detail = f"{user} cannot read {shown}{more}: pg_dump would fail"
    return Finding(check, False, detail, f"run as a superuser: {grant}")


def check_mysql_privileges(policy: Policy, source: MysqlSource) -> Finding | None:
    """A finding about the backup user's privileges on the database; None when it cannot ask."""
    from backupctl.errors import BackupctlError
    from backupctl.sources.mysql import Endpoint, quote_identifier, run_sql

    check = f"{policy.name}/{source.name}: privileges"
    if source.via:
        return Finding(check, True, f"database reached through {source.via}: not checked here")
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        return None  # reported by check_mysql
    try:
        password = source.password.resolve() if source.password is not None else None
        endpoint = Endpoint(source.user, source.database, source.host, source.port, source.socket, password)
        rows = run_sql(client, endpoint, "SHOW GRANTS FOR CURRENT_USER()", "read the backup user's grants")
    except BackupctlError as error:
        return Finding(check, False, str(error), "check host, user, password", warn=True)
    missing = mysql_missing([row[0] for row in rows if row], source.database)
    if not missing:
        return Finding(check, True, f"{source.user} has {', '.join(MYSQL_NEEDED)} on {source.database}")
    grant = f"GRANT {', '.join(missing)} ON {quote_identifier(source.database)}.* TO '{source.user}'@'HOST';"
    return Finding(check, False, f"{source.user} lacks {', '.join(missing)} on {source.database}",
                   f"run as an administrator: {grant}")  # fmt: skip


def privilege_findings(policy: Policy) -> list[Finding]:
    """One privileges finding per database source that could be checked."""
    found: list[Finding | None] = []
    for source in policy.sources:
        if isinstance(source, PostgresSource):
            found.append(check_postgres_privileges(policy, source))
        elif isinstance(source, MysqlSource):
            found.append(check_mysql_privileges(policy, source))
    return [finding for finding in found if finding is not None]
