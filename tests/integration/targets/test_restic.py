"""The restic repository target against the real `restic` binary (local directories and moto S3).

Every restic call re-derives the repository key (about 0.8 s): tests are frugal with calls.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from backupctl.errors import ConfigError, TargetError
from backupctl.targets.restic import ResticRepository, tags_for
from tests.fixtures.restic import RESTIC_PASSWORD_ENV
from tests.fixtures.s3 import free_port

if TYPE_CHECKING:  # imported at run time by pytest_plugins only, so that pytest rewrites it
    from tests.fixtures.restic import RepositoryFactory

MiB = 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def dumped_sha256(repo: ResticRepository, snapshot: str, filename: str) -> str:
    digest = hashlib.sha256()
    with repo.dump(snapshot, filename) as stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}  # fmt: skip


def backup_file(repo: ResticRepository, path: Path, tags: list[str]):  # type: ignore[no-untyped-def]
    with path.open("rb") as stream:
        return repo.backup_stream(stream, "shop.sql", tags)


# --------------------------------------------------------------------------- local repository
def test_stream_round_trip(restic_repository: RepositoryFactory, pg_like_dump: Path) -> None:
    repo = restic_repository()
    assert repo.init() is True
    assert repo.init() is False  # already there: nothing happens
    tags = tags_for("shop", "20250101T020000Z-ab12", "shop-db")
    progress: list[int] = []
    with pg_like_dump.open("rb") as stream:
        result = repo.backup_stream(stream, "shop.sql", tags, progress=progress.append)
    assert len(result.snapshot_id) == 64  # the full id, not the summary's short one
    assert result.files_new == 1 and result.total_bytes_processed == pg_like_dump.stat().st_size
    assert result.data_added > 0  # restic 0.14 counts it before compression
    assert repo.stats()["total_size"] < 0.6 * pg_like_dump.stat().st_size  # compressed (format v2)
    assert all(step > 0 for step in progress) and sum(progress) <= pg_like_dump.stat().st_size

    (found,) = repo.find("shop", "20250101T020000Z-ab12")
    assert found.id == result.snapshot_id and found.paths == ["/shop.sql"] and set(found.tags) == set(tags)
    assert repo.snapshots(["backupctl", "policy=other"]) == []
    assert dumped_sha256(repo, found.id, "shop.sql") == sha256_of(pg_like_dump)
    with repo.dump(found.short_id, "shop.sql") as stream:  # stopping early is not an error
        assert len(stream.read(MiB)) == MiB
    with pytest.raises(TargetError, match="not found"), repo.dump(found.id, "other.sql") as stream:
        assert stream.read() == b""
    assert repo.check("10%") == []

    repo.forget([found.id])
    assert repo.find("shop", "20250101T020000Z-ab12") == []
    assert repo.stats()["snapshots_count"] == 0


def test_unchanged_data_is_deduplicated(restic_repository: RepositoryFactory, pg_like_dump: Path) -> None:
    repo = restic_repository()
    repo.init()
    empty = repo.stats()["total_size"]
    first = backup_file(repo, pg_like_dump, tags_for("shop", "s1", "shop-db"))
    after_first = repo.stats()["total_size"]
    second = backup_file(repo, pg_like_dump, tags_for("shop", "s2", "shop-db"))
    after_second = repo.stats()["total_size"]
    print(
        f"\ndedup: plain {pg_like_dump.stat().st_size} B; data_added first {first.data_added} B, "
        f"second {second.data_added} B; repository raw-data {empty} -> {after_first} -> {after_second} B "
        f"(second run grew it by {after_second - after_first} B = "
        f"{100 * (after_second - after_first) / (after_first - empty):.3f}% of the first)"
    )
    assert second.data_added < 0.05 * first.data_added
    assert after_second - after_first < 0.05 * (after_first - empty)
    assert first.snapshot_id != second.snapshot_id


def test_stdin_writer_and_interruption(
    restic_repository: RepositoryFactory, restic_password: str, tmp_path: Path
) -> None:
    repo = restic_repository()
    repo.init()
    tags = tags_for("shop", "s1", "shop-db")
    chunk = os.urandom(MiB)
    with repo.stdin_writer("shop.sql", tags) as sink:
        for _ in range(6):
            sink.write(chunk)
            # While restic runs: the password is in neither its argv nor its environment; it
            # reads it from an inherited memfd (no file on disk).
            proc = Path(f"/proc/{sink.pid}")
            assert restic_password.encode() not in (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
            assert not any(restic_password.encode() in entry for entry in environ)
            assert f"{repo.config.password.target}=".encode() in environ  # its variable is blanked
            (password_file,) = [entry for entry in environ if entry.startswith(b"RESTIC_PASSWORD_FILE=")]
            fd = password_file.decode().rpartition("/")[2]
            assert os.readlink(proc / "fd" / fd).startswith("/memfd:restic-password")
    first = sink.result
    assert first is not None and first.files_new == 1
    assert first.total_bytes_processed == 6 * MiB and sink.bytes_written == 6 * MiB

    # A failure inside the block: restic is interrupted before EOF, so nothing is committed.
    broken = tags_for("shop", "s2", "shop-db")
    with pytest.raises(RuntimeError, match="dump failed"), repo.stdin_writer("shop.sql", broken) as sink:
        for _ in range(4):
            sink.write(os.urandom(MiB))
        pid = sink.pid
        raise RuntimeError("dump failed")
    assert not Path(f"/proc/{pid}").exists()
    assert repo.snapshots(broken) == []
    assert [info.id for info in repo.snapshots(["backupctl"])] == [first.snapshot_id]
    assert list((Path(repo.config.repository) / "locks").iterdir()) == []  # SIGINT: lock removed


def test_background_writer_runs_at_the_lowest_priority_through_a_wide_pipe(
    restic_repository: RepositoryFactory,
) -> None:
    """The manifest's restic process is started long before it is fed: nice 19, so that its key
    derivation takes only CPU the dump leaves idle. Data pipes get 1 MiB buffers (fewer wake-ups)."""
    repo = restic_repository()
    repo.init()
    tags = tags_for("shop", "s1")
    with repo.stdin_writer("backupctl-manifest.json", tags, background=True) as sink:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{sink.pid}/exe").resolve().name != "restic":  # nice(1) execs it
            assert time.monotonic() < deadline, "nice did not exec restic"
            time.sleep(0.01)
        fields = Path(f"/proc/{sink.pid}/stat").read_text().rpartition(")")[2].split()
        assert int(fields[16]) == 19  # field 19 of /proc/PID/stat: nice
        assert fcntl.fcntl(sink._pipe.fileno(), fcntl.F_GETPIPE_SZ) == 1 << 20
        sink.write(b'{"manifest": true}\n')
    assert sink.result is not None and sink.result.total_bytes_processed == 19
    with repo.stdin_writer("shop.sql", tags_for("shop", "s1", "shop-db")) as plain:
        fields = Path(f"/proc/{plain.pid}/stat").read_text().rpartition(")")[2].split()
        assert int(fields[16]) == 0
        plain.write(b"data")


def test_backup_path_is_incremental(restic_repository: RepositoryFactory, tmp_path: Path) -> None:
    site = tmp_path / "site"
    for index in range(40):
        path = site / f"dir{index % 4}" / f"file{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(32 * 1024))
    (site / "dir0" / "scratch.tmp").write_bytes(b"left out")
    repo = restic_repository()
    repo.init()
    first = repo.backup_path(str(site), ["*.tmp"], tags_for("files", "s1", "uploads"))
    assert (first.files_new, first.files_changed) == (40, 0)
    (site / "dir1" / "file5.bin").write_bytes(os.urandom(32 * 1024))
    second = repo.backup_path(str(site), ["*.tmp"], tags_for("files", "s2", "uploads"))
    print(f"\nincremental: first data_added {first.data_added} B, second {second.data_added} B")
    assert (second.files_new, second.files_changed) == (0, 1)
    assert second.data_added < 100 * 1024  # the one changed file plus metadata

    repo.restore(second.snapshot_id, tmp_path / "restored")
    (site / "dir0" / "scratch.tmp").unlink()
    assert tree_digest(tmp_path / "restored" / site.relative_to("/")) == tree_digest(site)


def test_check_clears_stale_locks_and_reports_damaged_data(restic_repository: RepositoryFactory) -> None:
    repo = restic_repository()
    repo.init()
    with repo.stdin_writer("blob.bin", ["test"]) as sink:
        sink.write(os.urandom(3 * MiB))
    locks = Path(repo.config.repository) / "locks"
    # A restic killed outright leaves its lock behind; the writer that saw it fail removes it.
    with pytest.raises(RuntimeError), repo.stdin_writer("other.bin", ["test"]) as sink:
        # More than the 1 MiB pipe holds: the write returns once restic reads, so it has its lock.
        sink.write(os.urandom(4 * MiB))
        os.kill(sink.pid, signal.SIGKILL)
        raise RuntimeError("killed")
    assert list(locks.iterdir()) == []
    # When backupctl died too, the lock stays, and blocks check's exclusive lock.
    env = {**os.environ, "RESTIC_PASSWORD": os.environ[RESTIC_PASSWORD_ENV]}
    orphan = subprocess.Popen(
        ["restic", "-r", repo.config.repository, "backup", "--stdin", "--stdin-filename", "x.bin"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert orphan.stdin is not None
    orphan.stdin.write(os.urandom(4 * MiB))  # returns once restic reads: it holds its lock
    orphan.kill()
    orphan.wait()
    assert len(list(locks.iterdir())) == 1
    assert repo.check(None) == []  # the stale lock was removed (`restic unlock`), then checked
    pack = max((Path(repo.config.repository) / "data").rglob("*"), key=lambda path: path.stat().st_size)
    pack.chmod(stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(pack.read_bytes())
    data[1000] ^= 0xFF
    pack.write_bytes(bytes(data))
    problems = repo.check("100%")
    assert problems and any("does not match" in problem for problem in problems), problems


def test_posture(restic_repository: RepositoryFactory, tmp_path: Path) -> None:
    repo = restic_repository(append_only=True, medium="nas", offsite=True)
    repo.init()
    posture = repo.posture()
    assert posture.reachable and posture.medium == "nas" and posture.offsite
    assert not posture.immutable  # declared only: restic cannot prove append-only mode
    assert posture.details["repository_version"] == 2 and posture.free_bytes
    assert any("rest-server --append-only" in problem for problem in posture.problems)

    missing = restic_repository(str(tmp_path / "nothing"))
    assert missing.exists() is False
    posture = missing.posture()
    assert not posture.reachable and "backupctl target setup" in posture.problems[0]
    with pytest.raises(TargetError, match="does not exist"):
        missing.snapshots()


# --------------------------------------------------------------------------- S3 (moto)
def test_s3_repository_round_trip(
    restic_repository: RepositoryFactory, s3_server: str, s3_bucket: str
) -> None:
    env = {"AWS_ACCESS_KEY_ID": "env:AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "env:AWS_SECRET_ACCESS_KEY"}
    repo = restic_repository(f"s3:{s3_server}/{s3_bucket}", environment=env)
    assert repo.init() is True
    data = os.urandom(3 * MiB) + b"COPY public.orders FROM stdin;\n" * 50_000
    tags = tags_for("shop", "s1", "shop-db")
    with repo.stdin_writer("shop.sql", tags) as sink:
        for start in range(0, len(data), MiB):
            sink.write(data[start : start + MiB])
    assert sink.result is not None
    with repo.dump(sink.result.snapshot_id, "shop.sql") as stream:
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(data).digest()


# --------------------------------------------------------------------------- errors
def test_wrong_password_is_a_clear_error(
    restic_repository: RepositoryFactory, restic_password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = restic_repository()
    repo.init()
    monkeypatch.setenv("OTHER_RESTIC_PASSWORD", "not-the-password-123")
    wrong = restic_repository(repo.config.repository, password="env:OTHER_RESTIC_PASSWORD")
    with pytest.raises(TargetError, match="wrong password") as raised:
        wrong.exists()
    assert not raised.value.transient
    endless = open("/dev/zero", "rb")  # noqa: SIM115 -- written until restic gives up
    with pytest.raises(TargetError, match="wrong password") as raised, endless:
        wrong.backup_stream(endless, "x.sql", [])
    for secret in (restic_password, "not-the-password-123"):
        assert secret not in str(raised.value)


def test_missing_or_old_restic_is_a_config_error(
    restic_repository: RepositoryFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = restic_repository()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"restic is not installed .*apt install restic"):
        repo.snapshots()
    fake = tmp_path / "old" / "restic"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'restic 0.9.6 compiled with go1.13.8 on linux/amd64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(ConfigError, match=r"restic 0\.9\.6 .* too old"):
        repo.version()


def test_unreachable_server_is_transient(restic_repository: RepositoryFactory) -> None:
    # (An unreachable S3 endpoint is reported the same way, after minio-go's ~12 s of retries.)
    repo = restic_repository(f"rest:http://backup:url-secret-77@127.0.0.1:{free_port()}/shop")
    with pytest.raises(TargetError, match="unreachable") as raised:
        repo.exists()
    assert raised.value.transient and "url-secret-77" not in str(raised.value)  # URL credentials masked


def test_dump_from_a_backend_frozen_mid_stream_stops_within_the_stall_deadline(
    restic_repository: RepositoryFactory, moto_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `restic dump` whose S3 backend freezes (SIGSTOP) after the first MiB: the reader gets
    a TargetError naming the stall within stall_timeout (+ grace), not a hang."""
    server = moto_server_factory()
    server.client().create_bucket(Bucket="frozen-dump")
    monkeypatch.setenv("TEST_AWS_KEY", "testing")
    monkeypatch.setenv("TEST_AWS_SECRET", "testing")
    repo = restic_repository(
        f"s3:{server.url}/frozen-dump", stall_timeout="3s",
        environment={"AWS_ACCESS_KEY_ID": "env:TEST_AWS_KEY", "AWS_SECRET_ACCESS_KEY": "env:TEST_AWS_SECRET"},
    )  # fmt: skip
    repo.init()
    payload = os.urandom(48 * MiB)  # incompressible: many packs, fetched one after another
    result = repo.backup_stream(io.BytesIO(payload), "big.bin", ["frozen-dump"])
    started = 0.0
    with pytest.raises(TargetError, match="no progress"):
        try:
            with repo.dump(result.snapshot_id, "big.bin") as stream:
                assert stream.read(MiB)
                server.pause()
                started = time.monotonic()
                while stream.read(MiB):
                    pass
        finally:
            server.resume()
    elapsed = time.monotonic() - started
    assert elapsed < 30, elapsed
