"""The MariaDB/MySQL accounts a database needs, so they travel with its dump.

A dump of one database carries no accounts: the app's user and its GRANTs would be lost with the
server. A mysql source records, at dump time, every account granted something on the database
(`information_schema.SCHEMA_PRIVILEGES` / `TABLE_PRIVILEGES`, as far as the backup user may see
them) with its `SHOW GRANTS` lines that concern the database — password hashes removed. Drills
recreate the accounts (host `%`, the per-run drill secret as password) with the same privileges
on the staging database, so the app connects as its own user there. `backupctl restore` creates
the accounts the destination server lacks (`create_missing_accounts`) as recorded (same host),
with their grants on the restored database; an existing account is never altered.

Passwords only with `roles: {passwords: true}`: each account's `SHOW CREATE USER` (its
authentication: plugin and hash) goes to a separate encrypted artifact, never the manifest
(`account_secrets`); a restore then creates the missing accounts with it. Without it they are
created locked (an unlocked account would take an empty password).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from backupctl.errors import SourceError
from backupctl.sources.base import RolesOutcome
from backupctl.sources.role_secrets import secrets_document

GRANTEES = (
    "SELECT GRANTEE FROM information_schema.SCHEMA_PRIVILEGES WHERE TABLE_SCHEMA = DATABASE() "
    "UNION SELECT GRANTEE FROM information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = DATABASE()"
)
_ACCOUNT = re.compile(r"^'((?:[^'\\]|\\.|'')*)'@'((?:[^'\\]|\\.|'')*)'$")
_GRANTEE = re.compile(r"(\bTO\s+)([`'])(?:[^`'\\]|\\.)*\2@([`'])(?:[^`'\\]|\\.)*\3", re.IGNORECASE)
_SECRET = re.compile(r"\s+IDENTIFIED\s+(?:BY|VIA|WITH)\s+.*$", re.IGNORECASE | re.DOTALL)


def accounts_needed(query: Callable[[str], list[list[str]]], database: str) -> list[dict[str, Any]]:
    """[{"user", "host", "grants": [GRANT ... on this database]}] — passwords never included.
    An account whose grants the backup user may not read is listed with no grants."""
    accounts = []
    for (grantee,) in sorted({tuple(row[:1]) for row in query(GRANTEES) if row}):
        found = _ACCOUNT.match(grantee)
        if found is None:
            continue
        user, host = found.group(1), found.group(2)
        try:
            lines = [row[0] for row in query(f"SHOW GRANTS FOR {grantee}") if row]
        except Exception:  # no right to read mysql.*: the account is still recorded
            lines = []
        mine = f"`{database.replace('`', '``')}`."
        grants = [_SECRET.sub("", line) for line in lines if mine in line]
        accounts.append({"user": user, "host": host, "grants": grants})
    return accounts


def account_key(account: dict[str, Any]) -> str:
    """How an account is named in results and in the secrets artifact: `user@host`."""
    return f"{account['user']}@{account['host']}"


def account_secrets(
    query: Callable[[str], list[list[str]]], accounts: list[dict[str, Any]], user: str
) -> bytes:
    """Each recorded account's `SHOW CREATE USER` statement (its authentication: plugin and
    password hash) as the JSON of the secrets artifact. Never logged, never in the manifest.
    Raises SourceError when the backup `user` may not read them (nothing is stored then)."""
    statements = {}
    for account in accounts:
        grantee = f"{_quote(account['user'])}@{_quote(account['host'])}"
        try:
            rows = query(f"SHOW CREATE USER {grantee}")
        except SourceError as error:
            raise SourceError(
                f"roles.passwords is on, but {user} may not read the authentication of "
                f"{account_key(account)} (SHOW CREATE USER needs SELECT on the mysql database or "
                f"CREATE USER): grant it, or turn roles.passwords off ({error}). Nothing was stored"
            ) from None
        if rows and rows[0]:
            statements[account_key(account)] = _unescape(rows[0][0])
    return secrets_document("mysql", statements)


def _unescape(text: str) -> str:
    """A value of the client's --batch output as the server sent it (\\, \t, \n escaped)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), text)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _grantee_as(user: str) -> Callable[[re.Match[str]], str]:
    """A replacement for _GRANTEE naming `user`@'%' (any host: staging's clients are containers)."""

    def replace(match: re.Match[str]) -> str:
        return f"{match.group(1)}{user}@'%'"

    return replace


def recreate_sql(accounts: list[dict[str, Any]], source_db: str, staging_db: str, password: str) -> str:
    """Statements creating each account as `user`@'%' with `password` and replaying its grants on
    `staging_db` (the production database name and host replaced)."""
    statements = []
    for account in accounts:
        user = _quote(account["user"])
        statements.append(f"CREATE USER IF NOT EXISTS {user}@'%' IDENTIFIED BY {_quote(password)};")
        for grant in account.get("grants", []):
            line = grant.replace(f"`{source_db.replace('`', '``')}`.", f"`{staging_db.replace('`', '``')}`.")
            # SHOW GRANTS quotes the account with backticks (MariaDB) or quotes (MySQL).
            line = _GRANTEE.sub(_grantee_as(user), line, count=1)
            statements.append(line.rstrip(";") + ";")
    return "\n".join(statements)


def _rename_database(grant: str, source_db: str, database: str) -> str:
    return grant.replace(f"`{source_db.replace('`', '``')}`.", f"`{database.replace('`', '``')}`.")


def create_missing_accounts(
    query: Callable[[str], list[list[str]]], accounts: list[dict[str, Any]], source_db: str, database: str,
    secrets: dict[str, str] | None = None,
) -> RolesOutcome:  # fmt: skip
    """Create the recorded `accounts` the server lacks, as `user`@`host` recorded — with their
    recorded authentication (`secrets`: SHOW CREATE USER by `user@host`) when the snapshot
    captured it, else ACCOUNT LOCK (an unlocked account would take an empty password) — and
    replay their grants on `database` (the recorded database name replaced). Existing accounts
    are left exactly as they are. `query` runs SQL on the server; its errors propagate."""
    secrets = secrets or {}
    outcome = RolesOutcome()
    statements = []
    locked, with_password = [], []
    for account in accounts:
        user, host = _quote(account["user"]), _quote(account["host"])
        shown = account_key(account)
        if int(query(f"SELECT COUNT(*) FROM mysql.user WHERE User = {user} AND Host = {host}")[0][0]):
            outcome.existing.append(shown)
            continue
        outcome.created.append(shown)
        recorded = secrets.get(shown, "")
        if _CREATE_USER.match(recorded):
            # The server's own statement for this account (read from the signed, encrypted artifact).
            statements.append(recorded.rstrip().rstrip(";") + ";")
            with_password.append(shown)
        else:
            statements.append(f"CREATE USER {user}@{host} ACCOUNT LOCK;")
            locked.append(shown)
        for grant in account.get("grants", []):
            statements.append(_rename_database(grant, source_db, database).rstrip(";") + ";")
    if statements:
        query("\n".join(statements))
    if with_password:
        outcome.notes.append(f"account(s) {', '.join(with_password)} created with their recorded password")
    if locked:
        outcome.notes.append(
            f"account(s) {', '.join(locked)} created locked without a password (none is "
            "captured): ALTER USER ... IDENTIFIED BY ... ACCOUNT UNLOCK before the application connects"
        )
    return outcome


_CREATE_USER = re.compile(r"^\s*CREATE\s+USER\s", re.IGNORECASE)
