"""Table-by-table fingerprints of a PostgreSQL database: row count and content checksum."""

from __future__ import annotations

from typing import Any

TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2
"""


def fingerprints(connection: Any) -> dict[str, tuple[int, str]]:
    """{"schema.table": (row count, md5 of all rows as text in a stable order)}."""
    result: dict[str, tuple[int, str]] = {}
    for schema, table in connection.execute(TABLES_SQL).fetchall():
        quoted = '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
        count, digest = connection.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {quoted} t"
        ).fetchone()
        result[f"{schema}.{table}"] = (count, digest)
    return result
