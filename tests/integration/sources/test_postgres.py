"""PostgreSQL source against a real throwaway cluster: round trips, snapshot consistency, secrets."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from backupctl.core import runner
from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import PostgresSource
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.sources.postgres import PostgresDumpSource, TableSelection
from backupctl.sources.postgres_sql import Table
from tests.fixtures.postgres import EXPECTED_TABLES, PgDatabase

PASSWORD_ENV = "BACKUPCTL_TEST_PG_PASSWORD"


def make_source(database: PgDatabase, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> PostgresDumpSource:
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    config = PostgresSource(
        name="shop-db", type="postgres", url=database.url, password=f"env:{PASSWORD_ENV}", **extra
    )
    source = build_source(config)
    assert isinstance(source, PostgresDumpSource)
    return source


def dump_to_file(source: PostgresDumpSource, path: Path) -> dict[str, Any]:
    with source.dump() as dump, open(path, "wb") as out:
        assert (dump.format, dump.extension) == ("pgdump", "pgdump")
        shutil.copyfileobj(dump.stream, out, 1 << 20)
        return dump.finish()


def checksums(database: PgDatabase) -> dict[str, str]:
    """md5 of every table's rows in a canonical order, keyed "schema.table"."""
    result: dict[str, str] = {}
    with database.connect() as connection:
        for table in EXPECTED_TABLES:
            schema, name = table.split(".", 1)
            query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t")
            row = connection.execute(query.format(sql.Identifier(schema, name))).fetchone()
            assert row is not None
            result[table] = row[0]
    return result


def live_count(database: PgDatabase, table: str) -> int:
    with database.connect() as connection:
        row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[call-overload]
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("mode", ["file", "pipe", "jobs"])
def test_round_trip_preserves_rows_and_content(
    pg_database: PgDatabase,
    pg_empty_database: PgDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = make_source(pg_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.pgdump")

    assert sorted(facts["row_counts"]) == EXPECTED_TABLES
    assert facts["row_counts"]["public.customers"] == 50
    assert facts["row_counts"]["public.Order Items"] == 300
    assert facts["row_counts"]["public.events"] == 150  # the partitions' rows
    assert facts["row_counts"]["public.events_2024"] + facts["row_counts"]["public.events_2025"] == 150
    assert facts["server_version"].startswith("15.")
    assert facts["pg_dump_version"].startswith("15.")
    assert facts["database"] == pg_database.name
    assert facts["tables"] == len(EXPECTED_TABLES)

    request = RestoreRequest(to_db=pg_empty_database.url, password=pg_empty_database.password)
    with open(tmp_path / "shop.pgdump", "rb") as artifact:
        if mode == "pipe":  # no fileno(): the source copies the stream into pg_restore itself
            outcome = source.restore(io.BufferedReader(_NoFileno(artifact)), request)  # type: ignore[arg-type]
        else:
            request.jobs = 2 if mode == "jobs" else 1
            with caplog.at_level(logging.DEBUG, logger="backupctl.spool"):
                outcome = source.restore(artifact, request)
    # A parallel restore's spool gets the data positions in its TOC (sources/pg_toc.py).
    assert ("spool head rewritten" in caplog.text) == (mode == "jobs")

    assert outcome.facts["row_counts"] == facts["row_counts"]
    assert source.compare(facts, outcome.facts) == []
    assert checksums(pg_empty_database) == checksums(pg_database)


def test_parallel_restore_by_default_and_one_job_when_the_spool_has_no_room(
    pg_database: PgDatabase,
    pg_empty_database: PgDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from backupctl.core import spool

    source = make_source(pg_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.pgdump")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(spool_dir))
    size = (tmp_path / "shop.pgdump").stat().st_size

    # No room (a reserve larger than the file system): streamed with one job, and said so.
    monkeypatch.setattr(spool, "RESERVE_BYTES", 1 << 62)
    with open(tmp_path / "shop.pgdump", "rb") as artifact:
        request = RestoreRequest(
            to_db=pg_empty_database.url, password=pg_empty_database.password, size_hint=size
        )
        outcome = source.restore(io.BufferedReader(_NoFileno(artifact)), request)  # type: ignore[arg-type]
    assert outcome.jobs == 1
    assert any(note.startswith("restored with one job") for note in outcome.notes)
    assert checksums(pg_empty_database) == checksums(pg_database)
    monkeypatch.undo()

    # Room: the default (auto) spools privately and restores in parallel, leaving no spool behind.
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(spool_dir))
    monkeypatch.setenv(PASSWORD_ENV, pg_database.password)
    with open(tmp_path / "shop.pgdump", "rb") as artifact:
        request = RestoreRequest(
            to_db=pg_empty_database.url, password=pg_empty_database.password, size_hint=size, clean=True
        )
        outcome = source.restore(io.BufferedReader(_NoFileno(artifact)), request)  # type: ignore[arg-type]
    assert outcome.jobs == spool.default_jobs()
    assert source.compare(facts, outcome.facts) == []
    assert list(spool_dir.iterdir()) == []


class _NoFileno(io.RawIOBase):
    """A raw reader that hides the file descriptor of the file it wraps."""

    def __init__(self, inner: io.BufferedReader) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def test_row_counts_come_from_the_dump_snapshot_despite_concurrent_writes(
    pg_database: PgDatabase, pg_empty_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = make_source(pg_database, monkeypatch)
    stop = threading.Event()
    inserted = 0

    def writer() -> None:
        nonlocal inserted
        with pg_database.connect() as connection:
            while not stop.is_set():
                connection.execute("INSERT INTO customers (name) VALUES ('late')")
                connection.execute("INSERT INTO orders (customer_id, payload) VALUES (1, '{}')")
                inserted += 1
                time.sleep(0.002)

    thread = threading.Thread(target=writer)
    with source.dump() as dump, open(tmp_path / "busy.pgdump", "wb") as out:
        # The snapshot is taken: everything from here on is invisible to the dump and the counts.
        thread.start()
        while inserted < 20:
            time.sleep(0.01)
        shutil.copyfileobj(dump.stream, out)
        time.sleep(0.2)  # keep writing while the row counter may still run
        facts = dump.finish()
    stop.set()
    thread.join()

    assert inserted >= 20
    assert facts["row_counts"]["public.customers"] == 50
    assert facts["row_counts"]["public.orders"] == 200
    assert live_count(pg_database, "customers") == 50 + inserted

    with open(tmp_path / "busy.pgdump", "rb") as artifact:
        outcome = source.restore(
            artifact, RestoreRequest(to_db=pg_empty_database.url, password=pg_database.password)
        )
    assert outcome.facts["row_counts"] == facts["row_counts"]


def test_password_is_never_on_a_command_line(
    pg_database: PgDatabase,
    pg_empty_database: PgDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Enough data that pg_dump blocks on the pipe and is still alive while we inspect it.
    with pg_database.connect() as connection:
        connection.execute(
            "INSERT INTO archive.attachments (name, content) "
            "SELECT 'big ' || i, convert_to(repeat(md5(i::text), 64), 'UTF8') FROM generate_series(1, 2000) i"
        )
    started: list[subprocess.Popen[bytes]] = []
    argvs: list[list[str]] = []
    real_start, real_run = runner.start, runner.run

    def spy_start(argv: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        argvs.append(list(argv))
        process = real_start(argv, **kwargs)
        started.append(process)
        return process

    def spy_run(argv: Any, **kwargs: Any) -> runner.Completed:
        argvs.append(list(argv))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(runner, "start", spy_start)
    monkeypatch.setattr(runner, "run", spy_run)
    source = make_source(pg_database, monkeypatch)
    password = pg_database.password

    with source.dump() as dump, open(tmp_path / "d.pgdump", "wb") as out:
        # `pg_dump --version` runs beside the dump (its answer is read by finish())
        (pg_dump,) = [process for process in started if "--version" not in process.args]
        assert pg_dump.poll() is None, "pg_dump should be blocked on its full stdout pipe"
        cmdline = Path(f"/proc/{pg_dump.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pg_dump.pid}/environ").read_bytes().split(b"\0")
        assert b"pg_dump" in cmdline and b"--snapshot=" in cmdline
        assert password.encode() not in cmdline
        assert f"PGPASSWORD={password}".encode() in environ
        shutil.copyfileobj(dump.stream, out)
        dump.finish()

    # A restore URL carrying the password: it is taken out of argv and passed as PGPASSWORD.
    cluster = pg_empty_database.cluster
    url = cluster.url(pg_empty_database.name, pg_empty_database.user, password)
    with open(tmp_path / "d.pgdump", "rb") as artifact:
        outcome = source.restore(artifact, RestoreRequest(to_db=url))
    assert password not in outcome.destination
    assert any("pg_restore" in argv[0] for argv in argvs)
    for argv in argvs:
        assert not any(password in arg for arg in argv), argv


def test_wrong_password_is_a_clear_source_error(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(pg_database, monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with pytest.raises(SourceError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert "cannot connect to the database to back up" in message
    assert "password authentication failed" in message
    assert "not-the-password" not in message


def test_leaving_the_context_early_kills_pg_dump(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_start = runner.start

    def spy_start(argv: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_start(argv, **kwargs))
        return started[-1]

    monkeypatch.setattr(runner, "start", spy_start)
    source = make_source(pg_database, monkeypatch)
    with pytest.raises(RuntimeError, match="downstream"), source.dump() as dump:
        dump.stream.read(100)
        raise RuntimeError("downstream failure")
    assert started[0].poll() is not None
    deadline = time.monotonic() + 10  # a closed session leaves pg_stat_activity shortly after
    with psycopg.connect(pg_database.cluster.url(), password=pg_database.cluster.password) as admin:
        while True:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'backupctl'",
                (pg_database.name,),
            ).fetchone()
            if row == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert row == (0,), "the snapshot connection must be closed"


def test_a_server_idle_timeout_does_not_end_the_snapshot_session(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once the counts are done the snapshot session sits idle in its transaction while pg_dump
    streams; a server-wide idle_in_transaction_session_timeout must not end it (COMMIT at the
    end would fail and with it the backup)."""
    with pg_database.connect() as owner:
        owner.execute(f"ALTER DATABASE {pg_database.name} SET idle_in_transaction_session_timeout = '1s'")
    try:
        source = make_source(pg_database, monkeypatch)
        with source.dump() as dump:
            first = dump.stream.read(1000)
            time.sleep(3)  # a slow consumer: the session is idle for longer than the timeout
            rest = dump.stream.read()
            facts = dump.finish()
        assert first.startswith(b"PGDMP") and rest
        assert facts["row_counts"] == dump_to_file(source, tmp_path / "again.pgdump")["row_counts"]
    finally:
        with pg_database.connect() as owner:
            owner.execute(f"ALTER DATABASE {pg_database.name} RESET idle_in_transaction_session_timeout")


def test_restore_refuses_a_non_empty_database_and_an_existing_create_target(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = make_source(pg_database, monkeypatch)
    dump_to_file(source, tmp_path / "d.pgdump")
    with (
        open(tmp_path / "d.pgdump", "rb") as artifact,
        pytest.raises(ConfigError, match="already has 7 tables"),
    ):
        source.restore(artifact, RestoreRequest(to_db=pg_database.url, password=pg_database.password))
    # --create targets the dumped database's name, which exists here (it is the source).
    cluster = pg_database.cluster
    maintenance = cluster.url("postgres", cluster.superuser, cluster.password)
    with open(tmp_path / "d.pgdump", "rb") as artifact, pytest.raises(ConfigError, match="already exists"):
        source.restore(artifact, RestoreRequest(to_db=maintenance, create=True))
    assert live_count(pg_database, "customers") == 50


def test_dump_options_that_leave_tables_out_are_reflected_in_the_counts(
    pg_database: PgDatabase, pg_empty_database: PgDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = make_source(
        pg_database,
        monkeypatch,
        dump_options=['--exclude-table="Order Items"', "--exclude-table-data", "archive.attach*"],
    )
    facts = dump_to_file(source, tmp_path / "d.pgdump")
    assert "public.Order Items" not in facts["row_counts"]
    assert facts["row_counts"]["archive.attachments"] == 0
    with open(tmp_path / "d.pgdump", "rb") as artifact:
        outcome = source.restore(
            artifact, RestoreRequest(to_db=pg_empty_database.url, password=pg_database.password)
        )
    assert source.compare(facts, outcome.facts) == []


def test_table_selection_follows_pg_dump_patterns() -> None:
    def table(schema: str, name: str, visible: bool = True) -> Table:
        return Table(schema, name, "r", "p", visible)

    selection = TableSelection.from_dump_options(["-T", "Audit*", "-N", "tmp", "--exclude-table-data=big.*"])
    assert not selection.includes(table("public", "audit_log"))  # unquoted folds to lower case
    assert selection.includes(table("other", "audit_log", visible=False))  # not on the search_path
    assert not selection.includes(table("tmp", "x"))
    assert selection.includes(table("big", "x")) and not selection.has_data(table("big", "x"))

    quoted = TableSelection.from_dump_options(['--table="Mixed"', "-tpublic.t?"])
    assert quoted.includes(table("public", "Mixed")) and not quoted.includes(table("public", "mixed"))
    assert quoted.includes(table("public", "t1")) and not quoted.includes(table("public", "t10"))

    schema_only = TableSelection.from_dump_options(["--schema-only"])
    assert schema_only.includes(table("public", "x")) and not schema_only.has_data(table("public", "x"))
    assert not TableSelection.from_dump_options(["--section=pre-data"]).has_data(table("public", "x"))


def test_describe_has_no_secret(pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    described = make_source(pg_database, monkeypatch).describe()
    assert described["password"] == f"env:{PASSWORD_ENV}"
    assert pg_database.password not in repr(described)
