"""The cluster roles a PostgreSQL database needs, so they travel with its dump.

A logical dump names roles (owners, GRANTs) but does not carry them: after a total loss the
operator would have no record of them, and a drill had to restore without owners and privileges,
so the app could not connect as its own role. A postgres source records, in the same snapshot as
its dump, every role that owns something in the database or is granted something there, the
roles that are members of those (they act through them) and the groups all of these belong to:
name, LOGIN, INHERIT, CREATEDB, CREATEROLE and memberships. Passwords are never captured. Drills
recreate the roles (never as superusers; login roles get the per-run drill secret as password)
before pg_restore, which then keeps owners and privileges. `backupctl restore` creates the
missing ones too (`create_missing_roles`, `--roles create-missing`, the default): never altering
an existing role, and without a password (none was captured), which the result says.
"""

from __future__ import annotations

from typing import Any

from backupctl.sources.base import RolesOutcome

ROLES_QUERY = r"""
WITH RECURSIVE direct(oid) AS (
    SELECT datdba FROM pg_database WHERE datname = current_database()
    UNION SELECT (aclexplode(datacl)).grantee FROM pg_database
          WHERE datname = current_database() AND datacl IS NOT NULL
    UNION SELECT nspowner FROM pg_namespace WHERE nspname !~ '^(pg_|information_schema)'
    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace
          WHERE nspacl IS NOT NULL AND nspname !~ '^(pg_|information_schema)'
    UNION SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname !~ '^(pg_|information_schema)'
    UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relacl IS NOT NULL AND n.nspname !~ '^(pg_|information_schema)'
    UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname !~ '^(pg_|information_schema)'
    UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
          WHERE n.nspname !~ '^(pg_|information_schema)'
), granted(oid) AS (  -- the direct roles and, recursively, their members (who act through them)
    SELECT oid FROM direct WHERE oid <> 0
    UNION SELECT m.member FROM pg_auth_members m JOIN granted ON m.roleid = granted.oid
), needed(oid) AS (  -- and, recursively, the groups those belong to (memberships to recreate)
    SELECT oid FROM granted
    UNION SELECT m.roleid FROM pg_auth_members m JOIN needed ON m.member = needed.oid
)
SELECT r.rolname, r.rolcanlogin, r.rolinherit, r.rolcreatedb, r.rolcreaterole,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY g.rolname)
FROM pg_roles r JOIN needed ON needed.oid = r.oid
WHERE r.rolname !~ '^pg_'
ORDER BY r.rolname
"""


def roles_needed(connection: Any) -> list[dict[str, Any]]:
    """The roles the connected database needs (see the module doc), as manifest facts."""
    rows = connection.execute(ROLES_QUERY).fetchall()
    return [
        {"name": name, "login": bool(login), "inherit": bool(inherit), "createdb": bool(createdb),
         "createrole": bool(createrole), "member_of": list(member_of or [])}
        for name, login, inherit, createdb, createrole, member_of in rows
    ]  # fmt: skip


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_roles_sql(roles: list[dict[str, Any]], password: str) -> str:
    """SQL (one statement per line) creating the missing roles, never as superusers, login roles
    with `password`, then their memberships. Idempotent: existing roles are left as they are."""
    statements = []
    for role in roles:
        attributes = _attributes(role)
        secret = f" PASSWORD {_literal(password)}" if role.get("login") else ""
        create = f"CREATE ROLE {_identifier(role['name'])} {attributes}{secret}"
        statements.append(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(role['name'])}) "
            f"THEN EXECUTE {_literal(create)}; END IF; END$$;"
        )
    names = {role["name"] for role in roles}
    for role in roles:
        for group in role.get("member_of", []):
            if group in names:
                statements.append(f"GRANT {_identifier(group)} TO {_identifier(role['name'])};")
    return "\n".join(statements)


def create_missing_roles(connection: Any, roles: list[dict[str, Any]]) -> RolesOutcome:
    """Create, in one transaction, the recorded `roles` the connected cluster lacks (never as
    superusers, LOGIN ones without a password) and the memberships of those it created; roles
    that exist are left exactly as they are. Raises psycopg.Error (nothing created)."""
    wanted = [role["name"] for role in roles]
    present = {
        name for (name,) in connection.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,)
        ).fetchall()
    }  # fmt: skip
    missing = [role for role in roles if role["name"] not in present]
    outcome = RolesOutcome(existing=[name for name in wanted if name in present])
    if not missing:
        return outcome
    names = {role["name"] for role in roles}
    with connection.transaction():
        for role in missing:
            connection.execute(f"CREATE ROLE {_identifier(role['name'])} {_attributes(role)}")
        for role in missing:
            for group in role.get("member_of", []):
                if group in names:
                    connection.execute(f"GRANT {_identifier(group)} TO {_identifier(role['name'])}")
    outcome.created = [role["name"] for role in missing]
    logins = [role["name"] for role in missing if role.get("login")]
    if logins:
        outcome.notes.append(
            f"login role(s) {', '.join(logins)} created without a password (none is captured): "
            "set one with ALTER ROLE name PASSWORD before the application connects"
        )
    return outcome


def _attributes(role: dict[str, Any]) -> str:
    return " ".join([
        "LOGIN" if role.get("login") else "NOLOGIN",
        "INHERIT" if role.get("inherit", True) else "NOINHERIT",
        "CREATEDB" if role.get("createdb") else "NOCREATEDB",
        "CREATEROLE" if role.get("createrole") else "NOCREATEROLE",
        "NOSUPERUSER",
    ])  # fmt: skip
