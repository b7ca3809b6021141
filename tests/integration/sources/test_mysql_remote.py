"""MySQL/MariaDB source with `via: ssh://...`: mariadb-dump and the preflight run behind a real sshd.

The sshd runs on this machine, so the "remote" mariadb-dump and mariadb client are the local
binaries reached through SSH, connecting to the throwaway MariaDB server over TCP or its socket.
Everything else is as in production: strict host keys, key authentication from the policy's
`via_key_file` / `via_known_hosts`, the password sent over the channel's stdin into an option
file on a pipe.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from backupctl.core import ssh
from backupctl.errors import ConfigError, SourceError
from backupctl.sources import remote
from backupctl.sources.base import RestoreRequest
from backupctl.sources.mysql import MysqlDumpSource
from tests.fixtures.mariadb import EXPECTED_OBJECTS, EXPECTED_ROWS, MariaDatabase
from tests.fixtures.sshd import SshdServer
from tests.integration.sources.test_mysql import (
    add_filler,
    checksums,
    dump_to_file,
    make_source,
    restore_as_root,
    scalar,
)
from tests.integration.sources.test_postgres_via_ssh import _processes, _spawned_by_sshd


@pytest.fixture
def no_ssh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment override and no agent: only the policy chooses the key and known_hosts."""
    for name in (remote.KEY_FILE_ENV, remote.KNOWN_HOSTS_ENV, "SSH_AUTH_SOCK"):
        monkeypatch.delenv(name, raising=False)


def via_source(
    database: MariaDatabase, server: SshdServer, monkeypatch: pytest.MonkeyPatch, **extra: Any
) -> MysqlDumpSource:
    """A `via` source whose key file and known_hosts come from its own config (unless `extra`)."""
    fields = {
        "via": f"ssh://{server.user}@{server.host}:{server.port}",
        "via_key_file": server.key_file,
        "via_known_hosts": server.known_hosts,
        **extra,
    }
    return make_source(database, monkeypatch, **fields)


def remote_dump_pid(database: str, deadline: float) -> int:
    """The pid of the mariadb-dump (started through sshd) dumping `database`."""
    while time.monotonic() < deadline:
        for pid, cmdline in _processes():
            argv = cmdline.split(b"\0")
            if argv[0].endswith(b"mariadb-dump") and database.encode() in argv:
                return pid
        time.sleep(0.05)
    pytest.fail(f"no mariadb-dump process for {database} appeared")


@pytest.mark.usefixtures("no_ssh_env")
def test_via_dump_restores_locally_with_equal_counts_checksums_and_objects(
    mariadb_database: MariaDatabase, mariadb_empty_database: MariaDatabase,
    sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    source = via_source(mariadb_database, sshd_server, monkeypatch)
    facts = dump_to_file(source, tmp_path / "shop.sql")

    assert facts["row_counts"] == EXPECTED_ROWS
    assert facts["objects"] == EXPECTED_OBJECTS
    assert facts["non_transactional_tables"] == {"legacy": "MyISAM"}
    assert facts["server_version"].startswith("10.")
    assert facts["dump_tool"] == "mariadb-dump" and facts["dump_tool_version"].startswith("10.")
    assert facts["database"] == mariadb_database.name
    assert facts["dumped_on"] == f"{sshd_server.user}@{sshd_server.host}:{sshd_server.port}"

    # Restores run here (the local mariadb client), into the database --to-db names.
    outcome = restore_as_root(source, tmp_path / "shop.sql", mariadb_empty_database)
    assert outcome.facts["row_counts"] == facts["row_counts"]
    assert outcome.facts["objects"] == EXPECTED_OBJECTS
    assert source.compare(facts, outcome.facts) == []
    assert checksums(mariadb_empty_database) == checksums(mariadb_database)
    assert (
        scalar(mariadb_empty_database, "SELECT HEX(content) FROM attachments WHERE id = 21")
        == "00FF000A0D5C27"
    )
    assert scalar(mariadb_empty_database, "SELECT with_tax(10.00)") == "12.00"
    assert any("do not go through via" in note for note in outcome.notes)
    with open(os.devnull, "rb") as empty, pytest.raises(ConfigError, match=r"--to-db.*do not go through via"):
        source.restore(empty, RestoreRequest())
    assert source.estimate_size() is None  # the server may be reachable from the via host only


@pytest.mark.usefixtures("no_ssh_env")
def test_via_password_is_on_no_command_line_and_in_no_environment(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    add_filler(mariadb_database, rows=30000)  # ~30 MB: more than the SSH window and the pipes hold
    # Over the server's Unix socket this time: a path on the via host.
    source = via_source(
        mariadb_database, sshd_server, monkeypatch,
        host="localhost", socket=str(mariadb_database.server.socket_path),
    )  # fmt: skip
    password = mariadb_database.password.encode()

    with source.dump() as dump, open(tmp_path / "d.sql", "wb") as out:
        pid = remote_dump_pid(mariadb_database.name, time.monotonic() + 15)
        assert _spawned_by_sshd(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1] == b"--defaults-extra-file=/dev/fd/3"
        assert os.readlink(f"/proc/{pid}/fd/3").startswith("pipe:")
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(password in var or var.startswith(b"MYSQL_PWD=") for var in environ)
        assert [cmd for _, cmd in _processes() if password in cmd] == []
        shutil.copyfileobj(dump.stream, out)
        facts = dump.finish()
    assert facts["row_counts"]["aaa_filler"] == 30000
    assert facts["row_counts"]["customers"] == 52
    assert password.decode() not in sshd_server.log()


@pytest.mark.usefixtures("no_ssh_env")
def test_via_wrong_password_reports_the_remote_stderr_and_status(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = via_source(mariadb_database, sshd_server, monkeypatch)
    monkeypatch.setenv("BACKUPCTL_TEST_MYSQL_PASSWORD", "not-the-password")
    with pytest.raises(SourceError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert "cannot connect to the database to back up" in message
    assert (
        f"mariadb on {sshd_server.user}@{sshd_server.host}:{sshd_server.port} exited with status 1" in message
    )
    assert f"Access denied for user '{mariadb_database.user}'" in message
    assert "not-the-password" not in message


@pytest.mark.usefixtures("no_ssh_env")
def test_via_failing_dump_raises_from_finish_with_the_remote_error(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mariadb_database.sql(
        f"REVOKE SHOW VIEW ON `{mariadb_database.name}`.* FROM '{mariadb_database.user}'@'localhost'"
    )
    source = via_source(mariadb_database, sshd_server, monkeypatch)
    with source.dump() as dump:
        while dump.stream.read(1 << 16):
            pass
        with pytest.raises(SourceError, match=r"mariadb-dump of shop-db on .* exited with status") as raised:
            dump.finish()
    assert "SHOW VIEW command denied" in str(raised.value)
    assert mariadb_database.password not in str(raised.value)


@pytest.mark.usefixtures("no_ssh_env")
def test_via_backup_user_blind_to_routines_is_refused_by_the_remote_preflight(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mariadb_database.sql(f"REVOKE SELECT ON mysql.proc FROM '{mariadb_database.user}'@'localhost'")
    source = via_source(mariadb_database, sshd_server, monkeypatch)
    with pytest.raises(SourceError, match=r"GRANT SELECT ON mysql\.proc"), source.dump():
        pytest.fail("the dump should not start")


@pytest.mark.usefixtures("no_ssh_env")
def test_via_refuses_an_unknown_host_key(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "known_hosts"
    other.write_text("")
    source = via_source(mariadb_database, sshd_server, monkeypatch, via_known_hosts=str(other))
    with pytest.raises(ssh.SshHostKeyError) as raised, source.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    assert isinstance(raised.value, ConfigError)  # exit 2, not retried
    assert message.startswith("source shop-db: via ")
    assert f"is not in {other}" in message
    assert f"ssh-keyscan -p {sshd_server.port} {sshd_server.host} >> {other}" in message
    assert message.endswith(" (known_hosts file from via_known_hosts)")
    assert other.read_text() == ""  # never added


@pytest.mark.usefixtures("no_ssh_env")
def test_via_key_file_and_known_hosts_from_the_policy_expand_the_home_directory(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd_server.key_file, home / ".ssh" / "backup_key")
    shutil.copy(sshd_server.known_hosts, home / "hosts")
    monkeypatch.setenv("HOME", str(home))
    source = via_source(
        mariadb_database,
        sshd_server,
        monkeypatch,
        via_key_file="~/.ssh/backup_key",
        via_known_hosts="~/hosts",
    )
    with source.dump() as dump:
        while dump.stream.read(1 << 20):
            pass
        assert dump.finish()["row_counts"] == EXPECTED_ROWS


@pytest.mark.usefixtures("no_ssh_env")
def test_via_missing_key_or_known_hosts_file_is_a_config_error_naming_source_and_setting(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing_key = via_source(mariadb_database, sshd_server, monkeypatch, via_key_file=str(tmp_path / "nokey"))
    with pytest.raises(ConfigError) as raised, missing_key.dump():
        pytest.fail("the dump should not start")
    assert (
        str(raised.value) == f"source shop-db: via_key_file: SSH key file {tmp_path / 'nokey'} does not exist"
    )

    missing_hosts = via_source(mariadb_database, sshd_server, monkeypatch, via_known_hosts="~/no/such/hosts")
    with pytest.raises(ConfigError) as raised, missing_hosts.dump():
        pytest.fail("the dump should not start")
    message = str(raised.value)
    expanded = Path("~/no/such/hosts").expanduser()
    assert message.startswith(f"source shop-db: via_known_hosts: known_hosts file {expanded} does not exist")
    assert f"ssh-keyscan -p {sshd_server.port} {sshd_server.host} >> {expanded}" in message
    assert not expanded.exists()


@pytest.mark.usefixtures("no_ssh_env")
def test_via_environment_variables_override_the_policy(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The policy names files that do not exist; the operator's environment wins.
    source = via_source(
        mariadb_database, sshd_server, monkeypatch,
        via_key_file=str(tmp_path / "nokey"), via_known_hosts=str(tmp_path / "nohosts"),
    )  # fmt: skip
    monkeypatch.setenv(remote.KEY_FILE_ENV, sshd_server.key_file)
    monkeypatch.setenv(remote.KNOWN_HOSTS_ENV, sshd_server.known_hosts)
    with source.dump() as dump:
        while dump.stream.read(1 << 20):
            pass
        assert dump.finish()["row_counts"] == EXPECTED_ROWS

    empty = tmp_path / "empty_hosts"
    empty.write_text("")
    monkeypatch.setenv(remote.KNOWN_HOSTS_ENV, str(empty))
    refused = via_source(mariadb_database, sshd_server, monkeypatch)  # the policy's files are right
    expected = f"is not in {empty}.*from {remote.KNOWN_HOSTS_ENV}, which overrides"
    with pytest.raises(ssh.SshHostKeyError, match=expected), refused.dump():
        pytest.fail("the dump should not start")


@pytest.mark.usefixtures("no_ssh_env")
def test_via_leaving_the_context_early_stops_the_remote_dump(
    mariadb_database: MariaDatabase, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_filler(mariadb_database, rows=30000)
    source = via_source(mariadb_database, sshd_server, monkeypatch)
    with pytest.raises(RuntimeError, match="downstream"), source.dump() as dump:
        dump.stream.read(100)
        pid = remote_dump_pid(mariadb_database.name, time.monotonic() + 15)
        raise RuntimeError("downstream failure")
    deadline = time.monotonic() + 10
    query = f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{mariadb_database.user}'"
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() and scalar(mariadb_database, query) == "0":
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the remote mariadb-dump must end"
    assert scalar(mariadb_database, query) == "0", "the dump's connection must be gone"


def test_via_source_has_no_size_estimate_and_never_connects(
    mariadb_database: MariaDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    unroutable = "ssh://backup@192.0.2.1:22"  # TEST-NET-1
    source = make_source(mariadb_database, monkeypatch, via=unroutable)
    started = time.monotonic()
    assert source.estimate_size() is None
    assert time.monotonic() - started < 1
