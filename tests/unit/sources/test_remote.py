"""`backupctl.sources.remote` without a network: credential precedence, file checks, and the
secret-carrying wrappers run by real shells (dash and bash, as `sh` is on Debian and Red Hat)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from backupctl.core import ssh
from backupctl.errors import ConfigError
from backupctl.sources import remote
from backupctl.sources.mysql import option_file_value
from backupctl.sources.mysql_remote import OPTION_FILE

VIA = remote.ViaHost("backup", "db1.example", 2222)
AWKWARD = "pw #'\"\\ ;%s\\n $HOME `id` $(id) \t end"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, no agent and no BACKUPCTL_SSH_* overrides."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (remote.KEY_FILE_ENV, remote.KNOWN_HOSTS_ENV, "SSH_AUTH_SOCK"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_environment_overrides_the_source_config_which_overrides_the_defaults(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert remote.credentials() == remote.Credentials(
        None, str(home / ".ssh/known_hosts"), "the SSH agent", "via_known_hosts"
    )
    (home / ".ssh").mkdir()
    (home / ".ssh/id_ed25519").write_text("key")
    assert remote.credentials().key_file == str(home / ".ssh/id_ed25519")  # no agent: the usual file
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent.sock")
    assert remote.credentials().key_file is None  # an agent comes first, as with OpenSSH

    configured = remote.credentials("~/keys/backup", "~/hosts")
    assert configured == remote.Credentials(
        str(home / "keys/backup"), str(home / "hosts"), "via_key_file", "via_known_hosts"
    )
    monkeypatch.setenv(remote.KEY_FILE_ENV, "~/override_key")
    monkeypatch.setenv(remote.KNOWN_HOSTS_ENV, "/etc/override_hosts")
    assert remote.credentials("~/keys/backup", "~/hosts") == remote.Credentials(
        str(home / "override_key"), "/etc/override_hosts", remote.KEY_FILE_ENV, remote.KNOWN_HOSTS_ENV
    )


def test_missing_files_are_configuration_errors_naming_source_and_setting(home: Path) -> None:
    (home / "hosts").write_text("")
    (home / "key").write_text("")
    remote.credentials("~/key", "~/hosts").check("shop-db", VIA)  # both exist: fine

    with pytest.raises(ssh.SshAuthError) as raised:
        remote.credentials("~/nokey", "~/hosts").check("shop-db", VIA)
    assert isinstance(raised.value, ConfigError)
    assert str(raised.value) == f"source shop-db: via_key_file: SSH key file {home / 'nokey'} does not exist"
    with pytest.raises(ssh.SshAuthError, match="is not a file"):
        remote.credentials("~", "~/hosts").check("shop-db", VIA)

    with pytest.raises(ssh.SshHostKeyError) as raised:
        remote.credentials("~/key", "~/nohosts").check("shop-db", VIA)
    assert isinstance(raised.value, ConfigError)
    message = str(raised.value)
    assert message.startswith(
        f"source shop-db: via_known_hosts: known_hosts file {home / 'nohosts'} does not exist"
    )
    assert "host key of [db1.example]:2222" in message
    assert message.endswith(f"ssh-keyscan -p 2222 db1.example >> {home / 'nohosts'}")


def test_connect_via_checks_the_files_before_connecting(home: Path) -> None:
    # 192.0.2.1 is unroutable (TEST-NET-1): reaching the network would time out, not fail at once.
    with pytest.raises(ssh.SshHostKeyError, match="via_known_hosts: known_hosts file"):
        remote.connect_via("ssh://backup@192.0.2.1", "shop-db", known_hosts="~/nohosts")
    with pytest.raises(ConfigError, match=r"^source shop-db: via: expected ssh://"):
        remote.connect_via("backup@192.0.2.1", "shop-db")


def test_secret_pipe_rejects_what_printf_or_a_descriptor_would_not_take() -> None:
    for fd, layout in ((2, "%s"), (10, "%s"), (3, "no placeholder"), (3, "%s and %d"), (3, "100%% %s")):
        with pytest.raises(ValueError):
            remote.SecretPipe(fd, layout)


def test_remote_command_holds_no_secret_and_is_one_line() -> None:
    command = remote.remote_command(
        ["mariadb-dump", f"--defaults-extra-file={OPTION_FILE.path}", "db name"], OPTION_FILE
    )
    assert "\n" not in command  # csh-family login shells refuse line breaks inside quotes
    assert command.startswith("sh -c ")
    assert command.endswith(" backupctl mariadb-dump --defaults-extra-file=/dev/fd/3 'db name'")
    with pytest.raises(ValueError):
        remote.remote_command(["x"], "NOT A NAME")


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_secret_pipe_wrapper_hands_the_option_file_to_the_tool(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    # The "tool" shows what it finds on fd 3 and on its stdin, and its environment.
    tool = ["sh", "-c", 'cat /dev/fd/3; echo "stdin:"; cat; echo "env:"; env', "tool"]
    command = remote.remote_command(tool, OPTION_FILE)
    line = option_file_value(AWKWARD)
    assert AWKWARD not in command and line not in command
    # As sshd runs it: the login shell gets the command line; the secret line and more on stdin.
    done = subprocess.run(
        [shell, "-c", command], input=f"{line}\nnot for the tool\n".encode(), capture_output=True, check=True
    )
    option_file, rest = done.stdout.decode().split("stdin:\n", 1)
    assert option_file == f"[client]\npassword={line}\n"
    stdin, environment = rest.split("env:\n", 1)
    assert stdin == ""  # /dev/null: nothing after the secret line reaches the tool
    assert AWKWARD not in environment and line not in environment


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_wrappers_report_a_missing_tool_with_status_127(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    for secret in ("PGPASSWORD", OPTION_FILE):
        command = remote.remote_command(["/nonexistent/mariadb-dump", "--version"], secret)
        done = subprocess.run([shell, "-c", command], input=b"x\n", capture_output=True)
        assert done.returncode == remote.NOT_FOUND
        assert b"backupctl" in done.stderr and b"not found" in done.stderr
