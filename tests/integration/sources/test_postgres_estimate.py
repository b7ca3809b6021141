"""PostgreSQL estimate_size against a real cluster: close to the dump, cheap, never failing."""

from __future__ import annotations

import time

import pytest

from backupctl.policy.schema import PostgresSource
from backupctl.sources.base import build_source
from backupctl.sources.postgres import PostgresDumpSource
from tests.fixtures.core import streamed_bytes
from tests.fixtures.postgres import PgDatabase

PASSWORD_ENV = "BACKUPCTL_TEST_PG_PASSWORD"


def make_source(database: PgDatabase, monkeypatch: pytest.MonkeyPatch, **extra: object) -> PostgresDumpSource:
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    config = PostgresSource.model_validate(
        {
            "name": "shop-db",
            "type": "postgres",
            "url": database.url,
            "password": f"env:{PASSWORD_ENV}",
            **extra,
        }
    )
    source = build_source(config)
    assert isinstance(source, PostgresDumpSource)
    return source


def grow(database: PgDatabase) -> None:
    """Enough rows that table data, not the dump's fixed overhead, makes up the dump."""
    with database.connect() as connection:
        connection.execute(
            "INSERT INTO orders (customer_id, payload, total) "
            "SELECT 1 + i % 50, jsonb_build_object('n', i, 'note', repeat('x', 40)), i "
            "FROM generate_series(1, 40000) i"
        )
        connection.execute("ANALYZE")


def test_estimate_is_close_to_the_dump(pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    grow(pg_database)
    source = make_source(pg_database, monkeypatch)
    estimate = source.estimate_size()
    actual = streamed_bytes(source)
    assert estimate is not None
    # Heap pages vs COPY text: the same order of magnitude, not the same number.
    assert actual / 2 < estimate < actual * 2, (estimate, actual)
    with pg_database.connect() as connection:
        row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None and row[0] > 2 * actual  # why not pg_database_size: indexes, catalogs


def test_estimate_leaves_out_tables_whose_data_is_not_dumped(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    grow(pg_database)
    full = make_source(pg_database, monkeypatch).estimate_size()
    partial = make_source(
        pg_database, monkeypatch, dump_options=["--exclude-table-data=orders"]
    ).estimate_size()
    assert full is not None and partial is not None
    assert partial < full / 4


def test_estimate_is_none_when_the_server_cannot_be_reached(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong password")
    config = PostgresSource.model_validate(
        {"name": "db", "type": "postgres", "url": pg_database.url, "password": f"env:{PASSWORD_ENV}"}
    )
    assert build_source(config).estimate_size() is None
    closed = PostgresSource.model_validate(
        {"name": "db", "type": "postgres", "url": "postgresql://nobody@127.0.0.1:9/db"}
    )
    started = time.monotonic()
    assert build_source(closed).estimate_size() is None
    assert time.monotonic() - started < 10


def test_estimate_with_via_is_none(pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(pg_database, monkeypatch, via="ssh://backup@db.example.invalid")
    assert source.estimate_size() is None
