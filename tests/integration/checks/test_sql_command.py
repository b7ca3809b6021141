"""SQL checks against real SQLite and PostgreSQL, command checks against real processes."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from backupctl.checks import CheckContext, run_check
from backupctl.core.secrets import register_secret
from backupctl.drills.schema import CommandCheck, SqlCheck
from backupctl.local_cluster.postgres import LocalPostgres

from .conftest import SERVICES, RuntimeDouble


def sql_check(query: str, service: str = "lite", database: str = "shop", **expect: Any) -> SqlCheck:
    return SqlCheck.model_validate({"type": "sql", "name": "orders", "service": service,
                                    "database": database, "query": query, "expect": expect})


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript("""
            CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, total REAL, note TEXT);
            INSERT INTO orders (status, total, note) VALUES ('paid', 19.98, NULL), ('paid', 25.0, 'gift'),
                ('pending', 7.5, NULL), ('refunded', 3.25, NULL), ('paid', 1.0, NULL), ('paid', 2.0, NULL),
                ('paid', 3.0, NULL);
        """)
    return path


@pytest.fixture
def sqlite_context(tmp_path: Path, shop_db: Path) -> CheckContext:
    return CheckContext(RuntimeDouble(tmp_path), SERVICES)


def test_sql_equals_converts_numbers(sqlite_context: CheckContext) -> None:
    result = run_check(sql_check("SELECT count(*) FROM orders", equals=7), sqlite_context)
    assert result.ok, result.detail
    assert result.detail == "expected first value = 7: ok (1 row: [7])"
    assert run_check(sql_check("SELECT count(*) FROM orders", equals="7"), sqlite_context).ok
    assert run_check(sql_check("SELECT sum(total) FROM orders WHERE id = 2", equals=25), sqlite_context).ok
    assert run_check(sql_check("SELECT status FROM orders WHERE id = 1", equals="paid"), sqlite_context).ok
    assert run_check(sql_check("SELECT note FROM orders WHERE id = 1", equals=None), sqlite_context).ok
    assert run_check(sql_check("SELECT count(*) > 0 FROM orders", equals=True), sqlite_context).ok


def test_sql_failure_shows_expectation_and_first_rows(sqlite_context: CheckContext) -> None:
    result = run_check(sql_check("SELECT id, status FROM orders ORDER BY id", equals=2), sqlite_context)
    assert not result.ok
    assert result.detail == (
        "expected first value = 2, got '1' (7 rows: [1 | paid], [2 | paid], [3 | pending], [4 | refunded], "
        "[5 | paid], … (2 more))"
    )


def test_sql_bounds_and_empty(sqlite_context: CheckContext) -> None:
    count = "SELECT count(*) FROM orders WHERE status = 'paid'"
    assert run_check(sql_check(count, at_least=5, at_most=5), sqlite_context).ok
    low = run_check(sql_check(count, at_least=6), sqlite_context)
    assert low.detail == "expected first value >= 6, got '5' (1 row: [5])"
    high = run_check(sql_check(count, at_most=4), sqlite_context)
    assert high.detail == "expected first value <= 4, got '5' (1 row: [5])"
    text = run_check(sql_check("SELECT status FROM orders", at_least=1), sqlite_context)
    assert "got 'paid', which is not a number" in text.detail

    violations = "SELECT id FROM orders WHERE total < 0"
    assert run_check(sql_check(violations, empty=True), sqlite_context).ok
    assert run_check(sql_check("SELECT id FROM orders", empty=False), sqlite_context).ok
    broken = run_check(sql_check("SELECT id, status FROM orders WHERE status = 'refunded'", empty=True),
                       sqlite_context)
    assert broken.detail == "expected no rows, got 1 (1 row: [4 | refunded])"
    none = run_check(sql_check(violations, empty=False, equals=1), sqlite_context)
    assert none.detail == "expected first value = 1, no rows; expected at least one row, got none (0 rows)"


def test_sql_error_is_a_failed_check(sqlite_context: CheckContext) -> None:
    result = run_check(sql_check("SELECT * FROM no_such_table", equals=1), sqlite_context)
    assert not result.ok
    assert result.detail == "OperationalError: no such table: no_such_table"


def test_sql_against_real_postgres(tmp_path: Path, postgres_cluster: LocalPostgres) -> None:
    postgres_cluster.psql("DROP DATABASE IF EXISTS checks_test;")
    postgres_cluster.psql("CREATE DATABASE checks_test;")
    try:
        postgres_cluster.psql("""
            CREATE TABLE orders (id serial PRIMARY KEY, paid boolean, total numeric(10, 2));
            INSERT INTO orders (paid, total) SELECT i % 2 = 0, i * 1.5 FROM generate_series(1, 42) i;
        """, "checks_test")
        context = CheckContext(RuntimeDouble(tmp_path, postgres=postgres_cluster), SERVICES)

        def run(query: str, **expect: Any) -> Any:
            return run_check(sql_check(query, service="db", database="checks_test", **expect), context)

        assert run("SELECT count(*) FROM orders", equals=42).ok
        assert run("SELECT total FROM orders WHERE id = 2", equals=3).ok  # '3.00' equals 3
        assert run("SELECT bool_or(paid) FROM orders", equals=True).ok  # psql prints 't'
        assert run("SELECT count(*) FROM orders WHERE paid", at_least=21, at_most=21).ok
        failed = run("SELECT id, total FROM orders WHERE id <= 2 ORDER BY id", equals=5)
        assert failed.detail == "expected first value = 5, got '1' (2 rows: [1 | 1.50], [2 | 3.00])"
        error = run("SELECT nope FROM orders", equals=1)
        assert not error.ok and 'column "nope" does not exist' in error.detail
    finally:
        postgres_cluster.drop_database("checks_test")


def command_check(argv: list[str], **extra: Any) -> CommandCheck:
    return CommandCheck.model_validate({"type": "command", "name": "uploads", "service": "app",
                                        "command": argv} | extra)


def test_command_exit_code_and_output(sqlite_context: CheckContext) -> None:
    ok = run_check(command_check([sys.executable, "-c", "print('42 files ok')"], output_contains="files ok"),
                   sqlite_context)
    assert ok.ok, ok.detail
    assert ok.detail == "expected exit code 0 and output containing 'files ok': ok (output: 42 files ok)"

    failing = [sys.executable, "-c", "import sys; print('checking'); sys.exit('3 files missing')"]
    result = run_check(command_check(failing), sqlite_context)
    assert result.detail == "expected exit code 0, got 1; output: checking 3 files missing"
    assert run_check(command_check(failing, exit_code=1, output_contains="missing"), sqlite_context).ok

    wrong = run_check(command_check(["true"], output_contains="done"), sqlite_context)
    assert wrong.detail == "expected the output to contain 'done'; no output"


def test_command_output_is_masked_and_cut_to_its_tail(sqlite_context: CheckContext) -> None:
    register_secret("pw-in-output-31337")
    script = "print('x' * 2000); print('password=pw-in-output-31337 rejected')"
    result = run_check(command_check([sys.executable, "-c", script]), sqlite_context)
    assert result.ok
    assert "pw-in-output-31337" not in result.detail
    assert result.detail.endswith("password=******** rejected)")
    assert len(result.detail) < 400


def test_missing_program_is_a_failed_check(sqlite_context: CheckContext) -> None:
    result = run_check(command_check(["/nonexistent/program"]), sqlite_context)
    assert not result.ok
    assert "FileNotFoundError" in result.detail
