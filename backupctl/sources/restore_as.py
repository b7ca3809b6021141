"""`restore --to-db URL --as NAME`: restore into a new database NAME on the destination server.

The point is safety: restoring a copy next to the live database must never need to drop or
overwrite the database that carries the source's name. NAME is created (it must not exist), the
dump is restored into it, nothing else on the server is touched.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.conninfo import make_conninfo

from backupctl.errors import ConfigError

NAME_LIMIT = 63  # PostgreSQL's identifier length; MariaDB allows 64


def check_name(name: str) -> None:
    """Raise ConfigError for a name no server accepts as a database name."""
    if not name or len(name) > NAME_LIMIT or "\x00" in name or "/" in name:
        raise ConfigError(f"--as: '{name}' is not a usable database name (1-{NAME_LIMIT} characters, no '/')")


def create_postgres_database(conninfo: str, password: str | None, name: str) -> str:
    """Create database `name` on the server `conninfo` points at; return the conninfo for it.

    Raises ConfigError when it exists already (nothing changed) or cannot be created.
    """
    from backupctl.sources.postgres_sql import connect

    check_name(name)
    connection: Any
    with connect(conninfo, password, "the restore destination") as connection:
        connection.autocommit = True
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise ConfigError(
                f"database {name} already exists on the destination; choose another --as name "
                "(nothing was changed)"
            )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return str(make_conninfo(conninfo, dbname=name))


def as_note(name: str | None) -> str:
    """The destination suffix shown after the URL when restoring under a new name."""
    return f" as new database {name}" if name else ""
