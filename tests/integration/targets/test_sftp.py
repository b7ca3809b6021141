"""The SFTP target and the SSH helper against a real OpenSSH sshd on a loopback port."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from backupctl.core import ssh
from backupctl.errors import ConfigError, TargetError
from backupctl.policy.schema import SftpTarget
from backupctl.targets import sftp as sftp_module
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.local import temp_name
from backupctl.targets.sftp import SftpBlobTarget
from tests.fixtures.sshd import SshdServer
from tests.integration.targets.contract import BlobTargetContract, payload, read, write
from tests.integration.targets.test_local import FileTreeChecks, tree


def sftp_target(server: SshdServer, path: Path | str, **extra: object) -> SftpBlobTarget:
    settings: dict[str, object] = {
        "name": "offsite", "type": "sftp", "host": server.host, "port": server.port, "user": server.user,
        "key_file": server.key_file, "known_hosts": server.known_hosts, "path": str(path), **extra,
    }  # fmt: skip
    target = build_target(SftpTarget.model_validate(settings))
    assert isinstance(target, SftpBlobTarget)
    return target


@pytest.fixture
def remote_dir(sshd_server: SshdServer) -> Path:
    """A fresh directory on the "remote" host (the same machine), not created yet."""
    return sshd_server.root / uuid.uuid4().hex / "backups"


@pytest.fixture
def target(sshd_server: SshdServer, remote_dir: Path) -> Iterator[SftpBlobTarget]:
    target = sftp_target(sshd_server, remote_dir)
    yield target
    target.close()


class TestSftpContract(BlobTargetContract, FileTreeChecks):
    # sshd runs on this machine, so the remote root is visible as a local directory too.
    def stored_names(self, target: BlobTarget, directories: bool = False) -> list[str]:
        assert isinstance(target, SftpBlobTarget)
        return tree(Path(target.root), directories)


def test_uses_the_openssh_extensions(target: SftpBlobTarget) -> None:
    write(target, "shop/s1/a", b"a")
    posture = target.posture()
    extensions = posture.details["extensions"]
    assert isinstance(extensions, list)
    assert {"posix-rename@openssh.com", "fsync@openssh.com", "statvfs@openssh.com"} <= set(extensions)
    local = os.statvfs(target.root)
    # Same file system seen from both ends; other processes write to it meanwhile.
    assert posture.free_bytes == pytest.approx(local.f_bavail * local.f_frsize, rel=0.05)


def test_reads_across_prefetch_windows(target: SftpBlobTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp_module, "READ_WINDOW", 300_001)  # odd: windows end mid-request
    data = payload(2 * 1024 * 1024 + 17)
    write(target, "shop/s1/db.age", data)
    with target.reader("shop/s1/db.age") as stream:
        assert stream.read(5) == data[:5]
        assert stream.read() == data[5:]


def test_list_while_writing_does_not_lose_write_errors(target: SftpBlobTarget) -> None:
    # Pipelined write replies must not be swallowed by other requests on the connection.
    with target.writer("shop/s1/db.age") as out:
        for _ in range(4):
            out.write(payload(1024 * 1024))
            assert [info.key for info in target.list_keys("")] == []
    assert read(target, "shop/s1/db.age")[: 1024 * 1024] == payload(1024 * 1024)


def test_reconnects_after_the_connection_drops(target: SftpBlobTarget) -> None:
    write(target, "shop/s1/a", b"first")
    transport = target._client.get_transport() if target._client else None
    assert transport is not None
    transport.close()  # as a network failure would
    write(target, "shop/s1/b", b"second")
    assert [info.key for info in target.list_keys("shop/")] == ["shop/s1/a", "shop/s1/b"]


def test_stale_remote_temp_files_are_swept(target: SftpBlobTarget) -> None:
    write(target, "shop/s1/manifest.json", b"{}")
    stale = Path(target.root) / "shop" / "s1" / temp_name("db.age")
    fresh = Path(target.root) / "shop" / "s1" / temp_name("db2.age")
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert target.sweep_temp_files("shop/") == [f"shop/s1/{stale.name}"]
    assert fresh.exists() and not stale.exists()


def test_remote_disk_full_is_a_clear_error(sshd_server: SshdServer, tmp_path: Path) -> None:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root with CAP_SYS_ADMIN")
    target = sftp_target(sshd_server, mount_point / "store")
    try:
        full = r"target offsite: disk full at .*store/shop/s1/db\.age \("
        with pytest.raises(TargetError, match=full), target.writer("shop/s1/db.age") as out:
            for _ in range(12):
                out.write(payload(256 * 1024))
                # Other requests on the connection must not swallow the failed writes' replies.
                assert target.list_keys("") == []
        assert tree(mount_point / "store") == []  # the temp file was removed
        # sshd releases the removed file's space once it has closed the aborted handle, which
        # can lag behind our next request on a loaded machine: allow it a moment.
        for attempt in range(20):
            try:
                write(target, "shop/s1/small", b"fits")
                break
            except TargetError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
        assert read(target, "shop/s1/small") == b"fits"
    finally:
        target.close()
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


# --------------------------------------------------------------------------- host keys, auth
def fingerprint(public_key_file: Path) -> str:
    listing = subprocess.run(
        ["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True
    )
    return listing.stdout.split()[1]  # "256 SHA256:... comment (ED25519)"


def test_unknown_host_key_is_refused_with_the_fix(sshd_server: SshdServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = sftp_target(sshd_server, tmp_path / "r", known_hosts=str(empty))
    with pytest.raises(TargetError) as caught:
        target.list_keys("")
    message = str(caught.value)
    assert not caught.value.transient
    assert fingerprint(Path(sshd_server.key_file).parent / "host_ed25519.pub") in message
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1 >> {empty}" in message
    assert empty.read_text() == ""  # never added automatically


def test_missing_known_hosts_file_is_refused(sshd_server: SshdServer, tmp_path: Path) -> None:
    with pytest.raises(ssh.SshHostKeyError, match="does not exist yet") as caught:
        ssh.connect(sshd_server.host, sshd_server.port, sshd_server.user, sshd_server.key_file,
                    known_hosts=str(tmp_path / "nope"))  # fmt: skip
    assert isinstance(caught.value, ConfigError)


def test_changed_host_key_is_refused(sshd_server: SshdServer, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {other}\n")
    target = sftp_target(sshd_server, tmp_path / "r", known_hosts=str(known))
    with pytest.raises(TargetError, match="has CHANGED") as caught:
        target.posture().reachable or target.list_keys("")
    assert not caught.value.transient
    assert fingerprint(tmp_path / "other.pub") in str(caught.value)
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd_server.port}'" in str(caught.value)


def test_posture_reports_unreachable_instead_of_raising(sshd_server: SshdServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    posture = sftp_target(sshd_server, tmp_path / "r", known_hosts=str(known)).posture()
    assert not posture.reachable
    assert "ssh-keyscan" in posture.problems[0]


def test_unauthorized_key_is_a_permanent_auth_error(sshd_server: SshdServer, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True
    )
    target = sftp_target(sshd_server, tmp_path / "r", key_file=str(tmp_path / "stranger"))
    with pytest.raises(TargetError, match=r"authentication .* failed") as caught:
        target.list_keys("")
    assert not caught.value.transient and "authorized_keys" in str(caught.value)


def test_encrypted_key_with_a_passphrase_secret(
    sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "locked"
    subprocess.run(["cp", sshd_server.key_file, str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "s3cret-words", "-f", str(key)], check=True)
    monkeypatch.setenv("BACKUPCTL_TEST_PASSPHRASE", "s3cret-words")
    target = sftp_target(
        sshd_server, tmp_path / "r", key_file=str(key), key_passphrase="env:BACKUPCTL_TEST_PASSPHRASE"
    )
    assert target.posture().reachable
    target.close()
    without = sftp_target(sshd_server, tmp_path / "r", key_file=str(key))
    with pytest.raises(TargetError, match="is encrypted: set key_passphrase"):
        without.list_keys("")


def test_closed_port_is_transient(sshd_server: SshdServer, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = sftp_target(sshd_server, tmp_path / "r", port=port)
    with pytest.raises(TargetError, match=r"cannot connect to .*: Connection refused") as caught:
        target.list_keys("")
    assert caught.value.transient


# --------------------------------------------------------------------------- ssh helper
@pytest.fixture
def client(sshd_server: SshdServer) -> Iterator[paramiko.SSHClient]:
    client = ssh.connect(sshd_server.host, sshd_server.port, sshd_server.user, sshd_server.key_file,
                         None, sshd_server.known_hosts)  # fmt: skip
    yield client
    client.close()


def test_run_streaming_streams_a_remote_file(client: paramiko.SSHClient, tmp_path: Path) -> None:
    data = payload(3 * 1024 * 1024 + 7)
    (tmp_path / "dump file").write_bytes(data)  # a space: argv must be quoted for the remote shell
    stdout, finish = ssh.run_streaming(client, ["cat", str(tmp_path / "dump file")])
    received = b"".join(iter(lambda: stdout.read(65536), b""))
    result = finish()
    assert received == data
    assert (result.status, result.ok, result.stderr) == (0, True, "")


def test_run_streaming_reports_failure_and_stderr(client: paramiko.SSHClient) -> None:
    stdout, finish = ssh.run_streaming(client, ["cat", "/nonexistent/dump"])
    assert stdout.read() == b""
    result = finish()
    assert result.status == 1 and not result.ok
    assert "No such file or directory" in result.stderr


def test_run_streaming_passes_env_not_argv(client: paramiko.SSHClient) -> None:
    stdout, finish = ssh.run_streaming(client, ["sh", "-c", 'printf %s "$BACKUPCTL_SECRET"'],
                                       {"BACKUPCTL_SECRET": "tiger"})  # fmt: skip
    assert stdout.read() == b"tiger" and finish().ok
    with pytest.raises(ssh.SshError, match="AcceptEnv PGPASSWORD"):
        ssh.run_streaming(client, ["true"], {"PGPASSWORD": "tiger"})


def test_finish_early_stops_the_remote_command(client: paramiko.SSHClient) -> None:
    stdout, finish = ssh.run_streaming(client, ["sh", "-c", "yes | head -c 100000000"])
    assert len(stdout.read(1000)) == 1000
    started = time.monotonic()
    result = finish()
    assert not result.ok and time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("url", "expected"),
    [("ssh://backup@db1.example.net", ("backup", "db1.example.net", 22)),
     ("ssh://root@10.0.0.5:2222", ("root", "10.0.0.5", 2222))],
)  # fmt: skip
def test_parse_ssh_url(url: str, expected: tuple[str, str, int]) -> None:
    assert ssh.parse_ssh_url(url) == expected


@pytest.mark.parametrize("url", ["db1", "ssh://db1", "sftp://u@db1", "ssh://u:pw@db1", "ssh://u@db1/x"])
def test_parse_ssh_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError):
        ssh.parse_ssh_url(url)
