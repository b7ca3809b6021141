"""The cluster roles a PostgreSQL database needs, so they travel with its dump.

A logical dump names roles (owners, GRANTs) but does not carry them: after a total loss the
operator would have no record of them, and a drill had to restore without owners and privileges,
so the app could not connect as its own role. A postgres source records, in the same snapshot as
its dump, every role that owns something in the database or is granted something there, the
roles that are members of those (they act through them) and the groups all of these belong to:
name, LOGIN, INHERIT, CREATEDB, CREATEROLE and memberships. Drills recreate the roles (never as
superusers; login roles get the per-run drill secret as password) before pg_restore, which then
keeps owners and privileges. `backupctl restore` creates the missing ones too
(`create_missing_roles`, `--roles create-missing`, the default): never altering an existing role.

Passwords only with `roles: {passwords: true}`: their hashes (`pg_authid.rolpassword`, readable
by a superuser or a member of pg_read_all_data) go to a separate encrypted artifact, never the
manifest (`role_passwords`); a restore then creates the missing login roles with them. Without
that artifact they are created without a password, which the result says.

What pg_restore restores only with --create is recorded too (no secrets): the database's own
GRANTs (CONNECT, CREATE, TEMPORARY) and its settings (`ALTER DATABASE|ROLE … IN DATABASE … SET`);
`apply_database_grants` replays them on a database restored into under any name.
"""

from __future__ import annotations

from typing import Any

from backupctl.errors import SourceError
from backupctl.sources.base import RolesOutcome
from backupctl.sources.role_secrets import secrets_document

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


DATABASE_GRANTS_QUERY = """
SELECT d.datacl IS NULL,
       ARRAY(SELECT ARRAY[COALESCE(g.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable::text]
             FROM aclexplode(d.datacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE a.grantee <> d.datdba ORDER BY 1)
FROM pg_database d WHERE d.datname = current_database()
"""
DATABASE_SETTINGS_QUERY = """
SELECT r.rolname, s.setconfig FROM pg_db_role_setting s
JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE d.datname = current_database() ORDER BY r.rolname NULLS FIRST
"""
# Settings whose value is a list of quoted elements (pg_dumpall's variable_is_guc_list_quote):
# replayed element by element, else `'a, b'` would become the one element "a, b".
LIST_SETTINGS = {
    "local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries",
    "temp_tablespaces", "unix_socket_directories",
}  # fmt: skip


def database_grants(connection: Any) -> dict[str, Any]:
    """The connected database's own privileges and settings, which pg_restore restores only with
    --create, as manifest facts (no secrets): `{"default_acl": bool, "grants": [{grantee,
    privilege, grantable}], "settings": [{role (None: every role), settings: ["name=value"]}]}`.
    The owner's implicit privileges are left out (they follow ownership)."""
    default_acl, entries = connection.execute(DATABASE_GRANTS_QUERY).fetchone()
    settings = connection.execute(DATABASE_SETTINGS_QUERY).fetchall()
    return {
        "default_acl": bool(default_acl),
        "grants": [
            {"grantee": grantee, "privilege": privilege, "grantable": grantable == "true"}
            for grantee, privilege, grantable in entries or []
        ],
        "settings": [{"role": role, "settings": list(config or [])} for role, config in settings],
    }


def check_password_access(connection: Any) -> None:
    """Raise SourceError unless the connected user may read the password hashes (pg_authid:
    a superuser or a member of pg_read_all_data)."""
    user, allowed = connection.execute(
        "SELECT current_user, has_table_privilege('pg_catalog.pg_authid', 'SELECT')"
    ).fetchone()
    if not allowed:
        raise SourceError(
            f"roles.passwords is on, but {user} may not read the password hashes (pg_authid): "
            f"back up as a superuser, or GRANT pg_read_all_data TO {user}; or turn roles.passwords "
            "off (roles are then recreated without passwords). Nothing was stored"
        )


def role_passwords(connection: Any, roles: list[dict[str, Any]]) -> bytes:
    """The password hashes (SCRAM-SHA-256 or MD5, as stored) of the recorded `roles` that have
    one, as the JSON of the secrets artifact. Never logged, never in the manifest."""
    rows = connection.execute(
        "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) AND rolpassword IS NOT NULL",
        ([role["name"] for role in roles],),
    ).fetchall()
    return secrets_document("postgres", {str(name): str(secret) for name, secret in rows})


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


def create_missing_roles(
    connection: Any, roles: list[dict[str, Any]], passwords: dict[str, str] | None = None
) -> RolesOutcome:
    """Create, in one transaction, the recorded `roles` the connected cluster lacks (never as
    superusers; LOGIN ones with their recorded password hash from `passwords`, else without a
    password) and the memberships of those it created; roles that exist are left exactly as
    they are. Raises psycopg.Error (nothing created)."""
    passwords = passwords or {}
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
            # A SCRAM or MD5 hash given as PASSWORD is stored as it is: the role logs in with
            # its production password. (A literal, not a parameter: utility statements take none.)
            recorded = passwords.get(role["name"])
            secret = f" PASSWORD {_literal(recorded)}" if recorded else ""
            connection.execute(f"CREATE ROLE {_identifier(role['name'])} {_attributes(role)}{secret}")
        for role in missing:
            for group in role.get("member_of", []):
                if group in names:
                    connection.execute(f"GRANT {_identifier(group)} TO {_identifier(role['name'])}")
    outcome.created = [role["name"] for role in missing]
    with_password = [role["name"] for role in missing if role.get("login") and role["name"] in passwords]
    if with_password:
        outcome.notes.append(f"login role(s) {', '.join(with_password)} created with their recorded password")
    logins = [role["name"] for role in missing if role.get("login") and role["name"] not in passwords]
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


def apply_database_grants(connection: Any, database: str, recorded: dict[str, Any]) -> list[str]:
    """Replay the `database_grants` facts on `database` (in one transaction): its ACL (when the
    recorded one was not the default: PUBLIC's privileges revoked, then the recorded ones
    granted) and its settings. Grantees and roles the cluster lacks are skipped. Returns the
    statements applied. Raises psycopg.Error (nothing applied)."""
    present = {name for (name,) in connection.execute("SELECT rolname FROM pg_roles").fetchall()}
    target = _identifier(database)
    statements: list[str] = []
    if not recorded.get("default_acl", True):
        statements.append(f"REVOKE ALL ON DATABASE {target} FROM PUBLIC")
    for grant in recorded.get("grants", []):
        grantee = grant["grantee"]
        if grantee != "PUBLIC" and grantee not in present:
            continue
        who = "PUBLIC" if grantee == "PUBLIC" else _identifier(grantee)
        option = " WITH GRANT OPTION" if grant.get("grantable") else ""
        statements.append(f"GRANT {grant['privilege']} ON DATABASE {target} TO {who}{option}")
    for entry in recorded.get("settings", []):
        role = entry.get("role")
        if role is not None and role not in present:
            continue
        scope = f"ROLE {_identifier(role)} IN DATABASE {target}" if role else f"DATABASE {target}"
        for setting in entry.get("settings", []):
            name, _, value = str(setting).partition("=")
            setting_name = ".".join(_identifier(part) for part in name.split("."))
            statements.append(f"ALTER {scope} SET {setting_name} TO {_setting_value(name, value)}")
    with connection.transaction():
        for statement in statements:
            connection.execute(statement)
    return statements


def _setting_value(name: str, value: str) -> str:
    """A recorded `name=value` setting's value as SQL (list settings element by element)."""
    if name.lower() not in LIST_SETTINGS:
        return _literal(value)
    elements, current, quoted, position = [], "", False, 0
    while position < len(value):
        char = value[position]
        if char == '"':
            if quoted and value[position + 1 : position + 2] == '"':
                current += '"'
                position += 1
            else:
                quoted = not quoted
        elif char == "," and not quoted:
            elements.append(current.strip())
            current = ""
        else:
            current += char
        position += 1
    elements.append(current.strip())
    return ", ".join(_literal(element) for element in elements)
