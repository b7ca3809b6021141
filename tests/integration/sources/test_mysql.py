"""MySQL/MariaDB source against a real throwaway server: round trips, consistency, secrets."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from backupctl.core import runner
from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import MysqlSource
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.sources.mysql import DumpScanner, MysqlDumpSource, parse_url, quote_identifier
from tests.fixtures.mariadb import AWKWARD, EXPECTED_OBJECTS, EXPECTED_ROWS, MariaDatabase

PASSWORD_ENV = "BACKUPCTL_TEST_MYSQL_PASSWORD"


def make_source(database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> MysqlDumpSource:
    """A source for the backup user; the password comes from env:PASSWORD_ENV unless `password=`."""
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    fields = {
        "name": "shop-db", "type": "mysql", "host": "127.0.0.1", "port": database.server.port,
        "user": database.user, "password": f"env:{PASSWORD_ENV}", "database": database.name, **extra,
    }  # fmt: skip
    source = build_source(MysqlSource.model_validate(fields))
    assert isinstance(source, MysqlDumpSource)
    return source


def dump_to_file(source: MysqlDumpSource, path: Path) -> dict[str, Any]:
    with source.dump() as dump, open(path, "wb") as out:
        assert (dump.format, dump.extension) == ("sql", "sql")
        shutil.copyfileobj(dump.stream, out, 1 << 20)
        return dump.finish()


def restore_as_root(source: MysqlDumpSource, artifact: Path, into: MariaDatabase, **options: Any) -> Any:
    request = RestoreRequest(to_db=into.root_url, password=into.server.password, **options)
    with open(artifact, "rb") as stream:
        outcome = source.restore(stream, request)
        assert stream.read() == b"", "the whole stream must be consumed"
    return outcome


def checksums(database: MariaDatabase) -> dict[str, str]:
    """CHECKSUM TABLE of every expected table (the rows' full content), keyed by table name."""
    tables = ", ".join(quote_identifier(table) for table in EXPECTED_ROWS)
    lines = database.sql(f"CHECKSUM TABLE {tables};").splitlines()
    return {line.split("\t")[0].split(".", 1)[1]: line.split("\t")[1] for line in lines}


def scalar(database: MariaDatabase, query: str) -> str:
    return database.sql(query).strip()


def add_filler(database: MariaDatabase, rows: int = 4000) -> None:
    """About 4 MB in a table dumped first, so mariadb-dump blocks on its full stdout pipe."""
    database.sql(
        "CREATE TABLE aaa_filler (id INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB;"
        f"INSERT INTO aaa_filler SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_{rows};"
    )


def read_until(stream: Any, marker: bytes, out: Any) -> None:
    seen = b""
    while marker not in seen:
        chunk = stream.read(65536)
        assert chunk, f"{marker!r} never appeared in the dump"
        out.write(chunk)
        seen = seen[-len(marker) :] + chunk


@pytest.mark.parametrize("jobs", [1, 3])
def test_round_trip_preserves_rows_content_and_objects(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, jobs: int,
) -> None:  # fmt: skip
    """Serial (one connection) and parallel (structure, table data over 3 connections, then
    triggers/views/routines: the trigger must not fire while audit_log's rows load)."""
    source = make_source(mariadb_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.sql")

    assert facts["row_counts"] == EXPECTED_ROWS
    assert facts["tables"] == len(EXPECTED_ROWS)
    assert facts["objects"] == EXPECTED_OBJECTS
    assert facts["non_transactional_tables"] == {"legacy": "MyISAM"}
    assert facts["server_version"].startswith("10.")
    assert facts["dump_tool"] == "mariadb-dump" and facts["dump_tool_version"].startswith("10.")
    assert facts["database"] == mariadb_database.name
    assert b"CREATE DATABASE" not in (tmp_path / "shop.sql").read_bytes()  # restorable under any name

    outcome = restore_as_root(source, tmp_path / "shop.sql", mariadb_empty_database, jobs=jobs)
    assert outcome.jobs == jobs
    assert outcome.notes == []
    restored = mariadb_empty_database
    assert outcome.facts["row_counts"] == facts["row_counts"]
    assert outcome.facts["objects"] == EXPECTED_OBJECTS
    assert source.compare(facts, outcome.facts) == []
    assert checksums(restored) == checksums(mariadb_database)
    assert scalar(restored, "SELECT HEX(content) FROM attachments WHERE id = 21") == "00FF000A0D5C27"
    assert scalar(restored, "SELECT name FROM customers WHERE id = 1") == "customer 1 😀 ü"
    assert scalar(restored, "SELECT total FROM orders WHERE id = 3") == "4.50"
    # The stored programs work in the restored database.
    assert scalar(restored, "SELECT with_tax(10.00)") == "12.00"
    assert scalar(restored, "CALL order_count(1, @n); SELECT @n") == "4"
    assert scalar(restored, "SELECT COUNT(*) FROM customer_totals") == "50"
    restored.sql("INSERT INTO orders (customer_id, total) VALUES (1, 1.00)")
    assert scalar(restored, "SELECT COUNT(*) FROM audit_log") == "201"  # the trigger fired


def test_scanner_counts_do_not_depend_on_chunking_or_the_insert_layout(
    mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = make_source(mariadb_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.sql")
    one_row_per_line = (tmp_path / "shop.sql").read_bytes()
    assert b" VALUES\n(" in one_row_per_line  # mariadb-dump 10.x's layout
    # mysqldump's layout: a whole INSERT on one line (dumped values never hold a raw newline).
    one_line = one_row_per_line.replace(b" VALUES\n(", b" VALUES (").replace(b"),\n(", b"),(")
    for artifact in (one_row_per_line, one_line):
        for size in (1, 2, 3, 7, 4096):
            scanner = DumpScanner()
            for start in range(0, len(artifact), size):
                scanner.feed(artifact[start : start + size])
            scanner.check_complete()
            assert (scanner.row_counts, scanner.objects) == (facts["row_counts"], facts["objects"]), size
    truncated = DumpScanner()
    truncated.feed(one_row_per_line[: one_row_per_line.index(b"(1,'customer 1")])
    with pytest.raises(SourceError, match="ended before"):
        truncated.check_complete()


def test_row_counts_describe_the_artifact_despite_concurrent_writes(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    """The guarantee: InnoDB tables are one snapshot; every count is what the artifact holds."""
    add_filler(mariadb_database)
    source = make_source(mariadb_database, monkeypatch)
    writes = 30
    with source.dump() as dump, open(tmp_path / "busy.sql", "wb") as out:
        # mariadb-dump's snapshot is taken before any table is dumped; it is now blocked on its
        # full stdout pipe in the middle of aaa_filler, before customers, orders and legacy.
        read_until(dump.stream, b"-- Dumping data for table `aaa_filler`", out)
        mariadb_database.sql(
            "".join(
                "START TRANSACTION; INSERT INTO customers (name) VALUES ('late');"
                "INSERT INTO orders (customer_id, total) VALUES (LAST_INSERT_ID(), 9.99); COMMIT;"
                f"INSERT INTO legacy VALUES ({100 + n}, 'late');"
                for n in range(writes)
            )
        )
        assert scalar(mariadb_database, "SELECT COUNT(*) FROM orders") == str(200 + writes)
        shutil.copyfileobj(dump.stream, out)
        facts = dump.finish()

    # InnoDB: the state at the snapshot, consistent across tables (orders and the trigger's rows).
    assert facts["row_counts"]["customers"] == 52
    assert facts["row_counts"]["orders"] == facts["row_counts"]["audit_log"] == 200
    # MyISAM has no snapshot: mariadb-dump read it after the writes, and the count says so.
    assert facts["row_counts"]["legacy"] == 5 + writes
    assert facts["non_transactional_tables"] == {"legacy": "MyISAM"}
    outcome = restore_as_root(source, tmp_path / "busy.sql", mariadb_empty_database)
    assert outcome.facts["row_counts"] == facts["row_counts"]


def test_password_is_never_on_a_command_line_nor_in_the_environment(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    add_filler(mariadb_database)
    started: list[subprocess.Popen[bytes]] = []
    argvs: list[list[str]] = []
    real_start, real_run = runner.start, runner.run

    def spy_start(argv: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        argvs.append(list(argv))
        started.append(real_start(argv, **kwargs))
        return started[-1]

    def spy_run(argv: Any, **kwargs: Any) -> runner.Completed:
        argvs.append(list(argv))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(runner, "start", spy_start)
    monkeypatch.setattr(runner, "run", spy_run)
    # A file: secret, so that the test's own environment does not hold the password either.
    secret = tmp_path / "password"
    secret.write_text(mariadb_database.password + "\n")
    secret.chmod(0o600)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    source = make_source(mariadb_database, monkeypatch, password=f"file:{secret}")
    monkeypatch.delenv(PASSWORD_ENV)
    password = mariadb_database.password
    assert AWKWARD in password  # and yet it authenticates: the option file quoting holds

    with source.dump() as dump, open(tmp_path / "d.sql", "wb") as out:
        (mariadb_dump,) = started
        assert mariadb_dump.poll() is None, "mariadb-dump should be blocked on its full stdout pipe"
        cmdline = Path(f"/proc/{mariadb_dump.pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{mariadb_dump.pid}/environ").read_bytes().split(b"\0")
        assert cmdline[1].startswith(b"--defaults-extra-file=/dev/fd/")
        fd = cmdline[1].rsplit(b"/", 1)[1].decode()
        assert os.readlink(f"/proc/{mariadb_dump.pid}/fd/{fd}").startswith("pipe:")
        assert not any(password.encode() in arg for arg in cmdline)
        assert not any(password.encode() in var or var.startswith(b"MYSQL_PWD=") for var in environ)
        shutil.copyfileobj(dump.stream, out)
        dump.finish()

    # A restore URL carrying the password: it is taken out and passed through the pipe too.
    server = mariadb_empty_database.server
    url = server.url(mariadb_empty_database.name, "root", server.password)
    with open(tmp_path / "d.sql", "rb") as artifact:
        outcome = source.restore(artifact, RestoreRequest(to_db=url))
    assert server.password not in outcome.destination
    assert any(os.path.basename(argv[0]) == "mariadb" for argv in argvs)
    for argv in argvs:
        assert not any(password in arg or server.password in arg for arg in argv), argv


def test_wrong_password_is_a_clear_source_error(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(mariadb_database, monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with pytest.raises(SourceError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert "cannot connect to the database to back up" in message
    assert f"Access denied for user '{mariadb_database.user}'" in message
    assert "not-the-password" not in message

    request = RestoreRequest(to_db=mariadb_empty_database.root_url, password="wrong-restore-password")
    with pytest.raises(SourceError, match="Access denied") as raised:
        source.restore(_Unread(), request)  # type: ignore[arg-type]
    assert "wrong-restore-password" not in str(raised.value)


class _Unread:
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("nothing may be read before the destination is checked")


def test_restore_refuses_a_non_empty_or_missing_database_unless_told(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    source = make_source(mariadb_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "d.sql")
    mariadb_database.sql("INSERT INTO customers (name) VALUES ('after the dump')")
    with pytest.raises(ConfigError, match="already has 9 tables or views and 3 routines or events"):
        request = RestoreRequest(to_db=mariadb_database.root_url, password=mariadb_database.server.password)
        source.restore(_Unread(), request)  # type: ignore[arg-type]
    assert scalar(mariadb_database, "SELECT COUNT(*) FROM customers") == "53"

    # force: the dump's DROP ... IF EXISTS statements replace what it holds.
    outcome = restore_as_root(source, tmp_path / "d.sql", mariadb_database, force=True)
    assert source.compare(facts, outcome.facts) == []
    assert scalar(mariadb_database, "SELECT COUNT(*) FROM customers") == "52"

    server = mariadb_empty_database.server
    missing = MariaDatabase(server, f"{mariadb_empty_database.name}_new", "root", server.password)
    with pytest.raises(ConfigError, match="does not exist on the destination; use --create"):
        source.restore(_Unread(), RestoreRequest(to_db=missing.root_url, password=server.password))  # type: ignore[arg-type]
    try:
        outcome = restore_as_root(source, tmp_path / "d.sql", missing, create=True, jobs=4)
        assert outcome.facts["row_counts"] == EXPECTED_ROWS
        assert outcome.jobs == 4
    finally:
        server.drop_database(missing.name)


def test_parallel_restore_spreads_one_large_table_over_connections(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    """4 MB in one table (several INSERT statements) cut into chunks at statement ends,
    loaded by 3 connections at once: every row arrives once, the trigger fires for none."""
    from backupctl.sources import mysql_parallel

    add_filler(mariadb_database)
    source = make_source(mariadb_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.sql")
    monkeypatch.setattr(mysql_parallel, "CHUNK_TARGET", 256 << 10)
    chunks: list[int] = []
    original = mysql_parallel.load_chunks

    def counting(chunk_paths: Any, *args: Any) -> None:
        chunks.append(len(chunk_paths))
        original(chunk_paths, *args)

    monkeypatch.setattr(mysql_parallel, "load_chunks", counting)
    outcome = restore_as_root(source, tmp_path / "shop.sql", mariadb_empty_database, jobs=3)
    assert chunks and chunks[0] >= 3, chunks  # INSERT statements are ~1 MB: the cuts fall between them
    assert outcome.jobs == 3 and outcome.notes == []
    assert source.compare(facts, outcome.facts) == []
    assert checksums(mariadb_empty_database) == checksums(mariadb_database)
    assert scalar(mariadb_empty_database, "SELECT COUNT(*) FROM aaa_filler") == "4000"
    assert scalar(mariadb_empty_database, "SELECT COUNT(*) FROM audit_log") == "200"


def test_parallel_restore_goes_serial_when_the_spool_runs_out_of_room_and_loses_nothing(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    from backupctl.sources import mysql_parallel

    source = make_source(mariadb_database, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.sql")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setenv("BACKUPCTL_SPOOL_DIR", str(spool_dir))
    # Room at the start, none after the first data section's first bytes.
    monkeypatch.setattr(mysql_parallel, "FREE_CHECK_EVERY", 1)
    monkeypatch.setattr(mysql_parallel, "reserve_bytes", lambda directory: 1 << 62)
    outcome = restore_as_root(source, tmp_path / "shop.sql", mariadb_empty_database, jobs=2)
    assert any("replayed on one connection" in note for note in outcome.notes), outcome.notes
    assert source.compare(facts, outcome.facts) == []
    assert checksums(mariadb_empty_database) == checksums(mariadb_database)
    assert scalar(mariadb_empty_database, "SELECT COUNT(*) FROM audit_log") == "200"
    assert list(spool_dir.iterdir()) == []


def test_a_restore_that_fails_midway_reports_the_client_error_and_reads_the_whole_stream(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    add_filler(mariadb_database)  # megabytes still unsent when the client gives up
    source = make_source(mariadb_database, monkeypatch)
    dump_to_file(source, tmp_path / "d.sql")
    # The backup user may see the destination but not drop or create tables in it.
    target = mariadb_empty_database
    target.sql(f"GRANT SELECT ON `{target.name}`.* TO '{mariadb_database.user}'@'localhost'")
    url = target.server.url(target.name, mariadb_database.user)
    with open(tmp_path / "d.sql", "rb") as artifact:
        with pytest.raises(SourceError, match=r"mariadb restore of shop-db .*exited with status 1") as raised:
            source.restore(artifact, RestoreRequest(to_db=url, password=mariadb_database.password))
        assert artifact.read() == b"", "the rest of the stream must still be consumed"
    assert "DROP command denied" in str(raised.value)
    assert mariadb_database.password not in str(raised.value)


def test_a_backup_user_blind_to_routines_is_refused(
    mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without it mariadb-dump exits 0 and leaves out the routines root defined.
    mariadb_database.sql(f"REVOKE SELECT ON mysql.proc FROM '{mariadb_database.user}'@'localhost'")
    source = make_source(mariadb_database, monkeypatch)
    with pytest.raises(SourceError, match=r"GRANT SELECT ON mysql\.proc"), source.dump():
        pytest.fail("the dump should not start")


def test_a_failing_dump_raises_from_finish_with_its_error(
    mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    mariadb_database.sql(
        f"REVOKE SHOW VIEW ON `{mariadb_database.name}`.* FROM '{mariadb_database.user}'@'localhost'"
    )
    source = make_source(mariadb_database, monkeypatch)
    with source.dump() as dump:
        while dump.stream.read(1 << 16):
            pass
        with pytest.raises(SourceError, match="mariadb-dump of shop-db exited with status") as raised:
            dump.finish()
    assert "SHOW VIEW command denied" in str(raised.value)
    assert mariadb_database.password not in str(raised.value)


def test_leaving_the_context_early_kills_mariadb_dump(
    mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_filler(mariadb_database)
    started: list[subprocess.Popen[bytes]] = []
    real_start = runner.start

    def spy_start(argv: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_start(argv, **kwargs))
        return started[-1]

    monkeypatch.setattr(runner, "start", spy_start)
    source = make_source(mariadb_database, monkeypatch)
    with pytest.raises(RuntimeError, match="downstream"), source.dump() as dump:
        dump.stream.read(100)
        raise RuntimeError("downstream failure")
    assert started[0].poll() is not None
    deadline = time.monotonic() + 10  # the server notices the closed connection shortly after
    query = f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{mariadb_database.user}'"
    while scalar(mariadb_database, query) != "0" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scalar(mariadb_database, query) == "0", "the dump's connection must be gone"


def test_configuration_edges(mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    described = make_source(mariadb_database, monkeypatch).describe()
    assert described["password"] == f"env:{PASSWORD_ENV}"
    assert mariadb_database.password not in repr(described)

    missing = "/nonexistent/known_hosts"  # checked before any connection is attempted
    remote = make_source(mariadb_database, monkeypatch, via="ssh://backup@db1", via_known_hosts=missing)
    monkeypatch.delenv("BACKUPCTL_SSH_KNOWN_HOSTS", raising=False)
    expected = f"source shop-db: via_known_hosts: known_hosts file {missing}"
    with pytest.raises(ConfigError, match=expected), remote.dump():
        pass
    with pytest.raises(ConfigError, match="--no-owner is not supported"):
        remote_free = make_source(mariadb_database, monkeypatch)
        remote_free.restore(_Unread(), RestoreRequest(to_db=mariadb_database.root_url, no_owner=True))  # type: ignore[arg-type]

    endpoint = parse_url("mariadb://app:p%40ss%23w@db.example:3307/shop%20db?socket=/run/m.sock")
    assert (endpoint.user, endpoint.host, endpoint.port, endpoint.database) == (
        "app",
        "db.example",
        3307,
        "shop db",
    )
    assert endpoint.password == "p@ss#w" and endpoint.socket == "/run/m.sock"
    assert parse_url("mysql://app:url@h/db", password="given").password == "given"
    for bad in ("postgresql://app@h/db", "mysql://h/db", "mysql://app@h/", "mysql://app:secret@h:99999/db"):
        with pytest.raises(ConfigError) as raised:
            parse_url(bad)
        assert "secret" not in str(raised.value)


def test_estimate_size_is_the_table_data_and_never_raises(
    mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(mariadb_database, monkeypatch)
    size = source.estimate_size()
    assert size is not None and size > 0
    add_filler(mariadb_database)  # about 4 MB more
    mariadb_database.sql("ANALYZE TABLE aaa_filler")
    grown = source.estimate_size()
    assert grown is not None and grown > size + 2_000_000
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    assert source.estimate_size() is None
    monkeypatch.delenv(PASSWORD_ENV)
    assert source.estimate_size() is None  # even an unresolvable secret is no error here
