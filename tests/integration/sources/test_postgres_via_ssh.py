"""PostgreSQL source with `via: ssh://...`: pg_dump and the snapshot session run behind a real sshd.

The sshd runs on this machine, so the "remote" pg_dump and psql are the local binaries reached
through SSH; the database is the throwaway cluster. Everything else is as in production: strict
host keys, key authentication, the password sent over the channel's stdin.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backupctl.core import ssh
from backupctl.errors import ConfigError, SourceError
from backupctl.policy.schema import PostgresSource
from backupctl.sources import remote
from backupctl.sources.base import RestoreRequest, build_source
from backupctl.sources.postgres import PostgresDumpSource
from tests.fixtures.postgres import EXPECTED_TABLES, PgDatabase
from tests.fixtures.sshd import SshdServer
from tests.integration.sources.test_postgres import PASSWORD_ENV, checksums, dump_to_file, live_count

ODD_TABLE = 'odd|name\nwith "quotes"'  # a name the remote answers must survive


@pytest.fixture
def via_env(sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch) -> SshdServer:
    """The environment a `via` source reads its SSH key and known_hosts from."""
    monkeypatch.setenv(remote.KEY_FILE_ENV, sshd_server.key_file)
    monkeypatch.setenv(remote.KNOWN_HOSTS_ENV, sshd_server.known_hosts)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return sshd_server


def via_source(
    database: PgDatabase, server: SshdServer, monkeypatch: pytest.MonkeyPatch, **extra: Any
) -> PostgresDumpSource:
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    config = PostgresSource(
        name="shop-db", type="postgres", url=database.url, password=f"env:{PASSWORD_ENV}",
        via=f"ssh://{server.user}@{server.host}:{server.port}", **extra,
    )  # fmt: skip
    source = build_source(config)
    assert isinstance(source, PostgresDumpSource)
    return source


def test_via_dump_restores_locally_with_equal_counts_and_content(
    pg_database: PgDatabase,
    pg_empty_database: PgDatabase,
    via_env: SshdServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with pg_database.connect() as connection:
        connection.execute(
            f'CREATE TABLE "{ODD_TABLE.replace(chr(34), chr(34) * 2)}" (id int); '  # type: ignore[arg-type]
            f'INSERT INTO "{ODD_TABLE.replace(chr(34), chr(34) * 2)}" SELECT generate_series(1, 7)'
        )
    source = via_source(pg_database, via_env, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.pgdump")

    assert sorted(facts["row_counts"]) == sorted([*EXPECTED_TABLES, f"public.{ODD_TABLE}"])
    assert facts["row_counts"]["public.customers"] == 50
    assert facts["row_counts"]["public.events"] == 150
    assert facts["row_counts"][f"public.{ODD_TABLE}"] == 7
    assert facts["server_version"].startswith("15.")
    assert facts["pg_dump_version"].startswith("15.")
    assert facts["dumped_on"] == f"{via_env.user}@{via_env.host}:{via_env.port}"

    # Restores run here (pg_restore locally), into the database --to-db names.
    request = RestoreRequest(to_db=pg_empty_database.url, password=pg_empty_database.password)
    with open(tmp_path / "shop.pgdump", "rb") as artifact:
        outcome = source.restore(artifact, request)
    assert outcome.facts["row_counts"] == facts["row_counts"]
    assert source.compare(facts, outcome.facts) == []
    assert checksums(pg_empty_database) == checksums(pg_database)
    assert any("do not go through via" in note for note in outcome.notes)
    with open(os.devnull, "rb") as empty, pytest.raises(ConfigError, match=r"--to-db.*do not go through via"):
        source.restore(empty, RestoreRequest())


def test_via_counts_come_from_the_dump_snapshot_despite_concurrent_writes(
    pg_database: PgDatabase,
    pg_empty_database: PgDatabase,
    via_env: SshdServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    source = via_source(pg_database, via_env, monkeypatch)
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
    try:
        with source.dump() as dump, open(tmp_path / "busy.pgdump", "wb") as out:
            thread.start()  # the snapshot is exported: later writes are invisible to it
            while inserted < 20:
                time.sleep(0.01)
            shutil.copyfileobj(dump.stream, out)
            time.sleep(0.2)  # keep writing while the remote counts may still run
            facts = dump.finish()
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()

    assert facts["row_counts"]["public.customers"] == 50
    assert facts["row_counts"]["public.orders"] == 200
    assert live_count(pg_database, "customers") == 50 + inserted
    with open(tmp_path / "busy.pgdump", "rb") as artifact:
        outcome = source.restore(
            artifact, RestoreRequest(to_db=pg_empty_database.url, password=pg_database.password)
        )
    assert outcome.facts["row_counts"] == facts["row_counts"]


def _processes() -> Iterator[tuple[int, bytes]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes()
            except OSError:
                pass  # gone meanwhile


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


def _spawned_by_sshd(pid: int) -> bool:
    while pid > 1:
        if Path(f"/proc/{pid}/comm").read_text().startswith("sshd"):
            return True
        pid = _parent(pid)
    return False


def _find(program: bytes, marker: bytes, database: str, deadline: float) -> int:
    """The pid of `program` (itself: Debian's perl wrapper execs it) whose command line has
    `marker` and the database name."""
    while time.monotonic() < deadline:
        for pid, cmdline in _processes():
            argv = cmdline.split(b"\0")
            if argv[0].endswith(b"/" + program) and marker in cmdline and database.encode() in cmdline:
                return pid
        time.sleep(0.05)
    pytest.fail(f"no {program!r} process for {database} appeared")


def test_via_password_is_never_on_any_command_line(
    pg_database: PgDatabase, via_env: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # More data than the SSH window and pipes hold: pg_dump blocks until we read.
    with pg_database.connect() as connection:
        connection.execute(
            "INSERT INTO archive.attachments (name, content) SELECT 'big ' || i, "
            "convert_to(repeat(md5(i::text), 64), 'UTF8') FROM generate_series(1, 12000) i"
        )
    source = via_source(pg_database, via_env, monkeypatch)
    password = pg_database.password.encode()

    with source.dump() as dump, open(tmp_path / "d.pgdump", "wb") as out:
        deadline = time.monotonic() + 15
        pg_dump = _find(b"pg_dump", b"--snapshot=", pg_database.name, deadline)
        psql = _find(b"psql", b"ON_ERROR_STOP=1", pg_database.name, deadline)
        assert _spawned_by_sshd(pg_dump) and _spawned_by_sshd(psql)
        leaks = [cmdline for _, cmdline in _processes() if password in cmdline]
        assert leaks == []
        # It did arrive, through stdin, in the tools' environment only.
        for pid in (pg_dump, psql):
            assert b"PGPASSWORD=" + password in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        shutil.copyfileobj(dump.stream, out)
        facts = dump.finish()
    assert facts["row_counts"]["archive.attachments"] == 21 + 12000
    assert password.decode() not in via_env.log()


def test_via_wrong_password_reports_the_remote_stderr(
    pg_database: PgDatabase, via_env: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = via_source(pg_database, via_env, monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with pytest.raises(SourceError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert "snapshot session (psql) of shop-db" in message
    assert "exited with status 2" in message
    assert "password authentication failed" in message
    assert "not-the-password" not in message


def test_via_refuses_an_unknown_host_key(
    pg_database: PgDatabase, via_env: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "known_hosts"
    other.write_text("")
    monkeypatch.setenv(remote.KNOWN_HOSTS_ENV, str(other))
    source = via_source(pg_database, via_env, monkeypatch)
    with pytest.raises(ssh.SshHostKeyError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert isinstance(raised.value, ConfigError)  # exit 2, not retried
    assert message.startswith("source shop-db: via ")
    assert f"is not in {other}" in message
    assert f"ssh-keyscan -p {via_env.port} {via_env.host} >> {other}" in message
    assert other.read_text() == ""  # never added


def test_via_missing_remote_pg_dump_names_status_127(
    pg_database: PgDatabase, via_env: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = via_source(pg_database, via_env, monkeypatch, pg_dump="/nonexistent/bin/pg_dump")
    with pytest.raises(SourceError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert "/nonexistent/bin/pg_dump --version" in message
    assert "exited with status 127" in message
    assert "not found" in message


def test_via_leaving_the_context_early_stops_the_remote_tools(
    pg_database: PgDatabase, via_env: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg_database.connect() as connection:
        connection.execute(
            "INSERT INTO archive.attachments (name, content) SELECT 'big ' || i, "
            "convert_to(repeat(md5(i::text), 64), 'UTF8') FROM generate_series(1, 12000) i"
        )
    source = via_source(pg_database, via_env, monkeypatch)
    with pytest.raises(RuntimeError, match="downstream"), source.dump() as dump:
        dump.stream.read(100)
        raise RuntimeError("downstream failure")
    cluster = pg_database.cluster
    deadline = time.monotonic() + 10
    with psycopg.connect(cluster.url(), password=cluster.password, autocommit=True) as admin:
        while True:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name IN ('backupctl', 'pg_dump')",
                (pg_database.name,),
            ).fetchone()
            if row == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert row == (0,), "the remote pg_dump and snapshot session must end"


def test_remote_command_quotes_every_argument_and_holds_no_secret() -> None:
    command = remote.remote_command(
        ["pg_dump", "--dbname=postgresql://u@h/db name", "-T", "a'b"], "PGPASSWORD"
    )
    assert command == (
        "sh -c 'IFS= read -r PGPASSWORD || exit 125; export PGPASSWORD; exec \"$@\"' backupctl "
        "pg_dump '--dbname=postgresql://u@h/db name' -T 'a'\"'\"'b'"
    )
    assert remote.remote_command(["pg_dump", "--version"]) == "pg_dump --version"
