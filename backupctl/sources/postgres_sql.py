"""PostgreSQL helpers shared by the source and its restore variants: connections, the user
tables pg_dump sees, exact row counts. A module of its own so that `restore_as` and
`container_restore` use them without importing the source (which imports them)."""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backupctl.core.secrets import mask, mask_url_password, register_secret
from backupctl.errors import ConfigError, SourceError

# User tables (plain and partitioned) as pg_dump sees them: no system schemas, no temp tables,
# no tables owned by an extension (pg_dump leaves those to CREATE EXTENSION).
TABLES_QUERY = """
SELECT n.nspname, c.relname, c.relkind, c.relpersistence, pg_table_is_visible(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


# Heap + TOAST data of every ordinary table (partitions included), keyed like Table.key: about
# what pg_dump copies of it. Indexes (rebuilt on restore), free space and visibility maps and
# system catalogs are left out.
TABLE_SIZES_QUERY = """
SELECT n.nspname || '.' || c.relname,
       pg_relation_size(c.oid) + COALESCE(pg_relation_size(NULLIF(c.reltoastrelid, 0)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


# Run in the snapshot-holding transaction, local or remote. A server-wide idle timeout must
# not end the transaction while pg_dump streams (it is idle once the counts are done, and
# COMMIT at the end would fail). The counts run beside pg_dump, which keeps the server busy
# already: parallel workers would only compete with it (all tables of the 1 GiB benchmark
# database: 0.52 CPU-s with the default two workers, 0.37 without).
SNAPSHOT_SESSION_SETTINGS = (
    "SET LOCAL idle_in_transaction_session_timeout = 0",
    "SET LOCAL max_parallel_workers_per_gather = 0",
)


def split_password(url: str) -> tuple[str, str | None]:
    """Split a URL or conninfo string into (conninfo without password, password or None).

    The password is registered for masking. Raises ConfigError for an unparsable URL.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ConfigError(f"invalid PostgreSQL URL {mask_url_password(url)}: {error}") from None
    password = params.pop("password", None)
    if password is None:
        return url, None
    register_secret(str(password))
    return make_conninfo(**{key: str(value) for key, value in params.items()}), str(password)


def connect(conninfo: str, password: str | None, purpose: str) -> psycopg.Connection[Any]:
    """Open an autocommit connection. Raises SourceError saying what we tried to reach and why."""
    try:
        # A None password is dropped by psycopg: libpq then falls back to ~/.pgpass.
        return psycopg.connect(
            conninfo, autocommit=True, connect_timeout=30, application_name="backupctl", password=password
        )
    except psycopg.Error as error:
        target = mask(mask_url_password(conninfo))
        raise SourceError(f"cannot connect to {purpose} ({target}): {mask(str(error).strip())}") from None


class Table(NamedTuple):
    """A user table: `kind` is pg_class.relkind, `persistence` relpersistence ('u' unlogged),
    `visible` whether the default search_path finds it (unqualified pg_dump patterns need that)."""

    schema: str
    name: str
    kind: str
    persistence: str
    visible: bool

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"


def user_tables(connection: psycopg.Connection[Any]) -> list[Table]:
    """Every user table of the connected database, sorted by schema and name."""
    return [Table(*row) for row in connection.execute(TABLES_QUERY).fetchall()]


def count_rows(connection: psycopg.Connection[Any], tables: list[Table]) -> dict[str, int]:
    """Exact `count(*)` per table, keyed "schema.table", in the connection's current transaction."""
    counts: dict[str, int] = {}
    for table in tables:
        row = connection.execute(count_query(table)).fetchone()
        counts[table.key] = int(row[0]) if row else 0
    return counts


def count_query(table: Table) -> sql.Composed:
    """The exact row count of `table` as pg_dump copies it (also sent to a remote psql)."""
    # A plain table's own rows (ONLY): pg_dump copies each inheritance child separately.
    # A partitioned table has no rows of its own: count its partitions' rows.
    template = "SELECT count(*) FROM {}" if table.kind == "p" else "SELECT count(*) FROM ONLY {}"
    return sql.SQL(template).format(sql.Identifier(table.schema, table.name))
