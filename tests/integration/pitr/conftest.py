"""A PostgreSQL 15 cluster whose archive_command is the real `backupctl wal push`.

`PitrSetup` is a private backupctl installation (policies, state, keys, a local target, and
optionally the moto S3 target) that the server's system user can read and write: when the
tests run as root, PostgreSQL runs as `postgres`, so the directory is handed to that user and
archive_command runs backupctl through a small wrapper script with the interpreter and the
environment it needs (the venv's interpreter usually lives under /root, which `postgres` cannot
traverse; Debian's python3.11 with the venv's site-packages on PYTHONPATH runs the same code).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from backupctl.core.crypto import generate_keys
from backupctl.errors import ConfigError
from backupctl.local_cluster.postgres import LocalPostgres, find_postgres_bindir, free_port

REPO = Path(__file__).resolve().parents[3]
POLICY = "shop"
SOURCE = "db"


@dataclass
class PitrSetup:
    root: Path
    cluster: LocalPostgres
    env: dict[str, str]
    spool: Path | None = None  # the archiver's spool, when the policy has an archiver

    @property
    def keys(self) -> Path:
        return self.root / "state" / "keys"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def wrapper(self) -> Path:
        return self.root / "backupctl"

    def run(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`backupctl ARGS` as a subprocess run by the server's system user (as in production:
        the archive, base backups and restores all belong to that user)."""
        argv = [str(self.wrapper), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            timeout=timeout,
            check=False,
        )

    def scratch(self) -> Path:
        """A fresh directory the server's user owns."""
        path = self.root / "scratch" / uuid.uuid4().hex[:8]
        path.mkdir(parents=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for directory in (path.parent, path):
                os.chown(directory, owner.pw_uid, owner.pw_gid)
        return path

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.cluster.url("postgres"), password=self.cluster.password, autocommit=True)

    def switch_and_wait(self, timeout: float = 60) -> str:
        """Force a segment switch and wait until that segment is archived; its name."""
        with self.connect() as connection:
            connection.execute("SELECT txid_current()")
            name = connection.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                row = connection.execute(
                    "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver"
                ).fetchone()
                assert row is not None
                if row[0] is not None and row[0] >= name:
                    return str(name)
                time.sleep(0.2)
        raise AssertionError(
            f"{name} was not archived within {timeout}s: {self.cluster.log_file.read_text()[-3000:]}"
        )


def _interpreter_and_path() -> tuple[str, str]:
    """An interpreter the server's user can run, and the PYTHONPATH it needs."""
    site = sysconfig.get_paths()["purelib"]
    paths = os.pathsep.join([str(REPO), site])
    if os.geteuid() == 0 and not _traversable_by_others(Path(sys.executable).resolve()):
        return "/usr/bin/python3", paths
    return sys.executable, paths


def _traversable_by_others(path: Path) -> bool:
    return all(parent.stat().st_mode & 0o001 for parent in path.parents)


def make_setup(
    root: Path,
    *,
    s3: dict[str, Any] | None = None,
    settings: Mapping[str, str] | None = None,
    spool: Path | None = None,
) -> PitrSetup:
    """Keys, wrapper, cluster (not started) and a policy for it; everything owned by the server's user.

    With `spool`, the policy's source has an archiver spooling there and archive_command is
    `wal push --spool` (`settings` may still override it).
    """
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    keys = root / "state" / "keys"
    generate_keys(keys)
    (root / "backups").mkdir()
    interpreter, python_path = _interpreter_and_path()
    env = {
        "BACKUPCTL_STATE_DIR": str(root / "state"),
        "BACKUPCTL_POLICIES": str(root / "policies"),
    }
    passthrough = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    exports = " ".join(
        f"{k}={shlex.quote(v)}" for k, v in {**passthrough, **env, "PYTHONPATH": python_path}.items()
    )
    (root / "backupctl").write_text(f'#!/bin/sh\nexec env {exports} {interpreter} -m backupctl "$@"\n')
    os.chmod(root / "backupctl", 0o755)
    port = free_port()
    spooled = "" if spool is None else f" --spool {spool}"
    cluster = LocalPostgres(
        root / "pg",
        port=port,
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_timeout": "0",
            "archive_command": f"{root / 'backupctl'} wal push {POLICY} --source {SOURCE}{spooled} %p %f",
            "max_wal_senders": "4",
            **(settings or {}),
        },
    )
    targets: list[dict[str, Any]] = [{"name": "nas", "type": "local", "path": str(root / "backups")}]
    pitr: dict[str, Any] = {"archive_timeout": "60s"}
    if spool is not None:
        pitr["archiver"] = {"spool": str(spool)}
    if s3 is not None:
        targets.append(s3)
    policy = {
        "name": POLICY,
        "objectives": {"rpo": "15m", "rto": "1h"},
        "encryption": {
            "recipients": [f"file:{keys}/age-recipient.txt"],
            "identity": f"file:{keys}/age-identity.txt",
        },
        "sources": [
            {
                "name": SOURCE,
                "type": "postgres",
                "url": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                "password": "env:PITR_TEST_PG_PASSWORD",
                "pitr": pitr,
            }
        ],
        "targets": targets,
    }
    (root / "policies").mkdir()
    (root / "policies" / f"{POLICY}.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for directory, _, files in os.walk(root):
            os.chown(directory, owner.pw_uid, owner.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), owner.pw_uid, owner.pw_gid)
    return PitrSetup(root, cluster, env, spool)


def start(setup: PitrSetup) -> PitrSetup:
    setup.cluster.start()
    setup.env["PITR_TEST_PG_PASSWORD"] = setup.cluster.password
    return setup


@contextmanager
def archiving_cluster(
    prefix: str,
    *,
    spool: str | None = None,
    settings: Mapping[str, str] | None = None,
    before_start: Callable[[PitrSetup], None] | None = None,
) -> Iterator[PitrSetup]:
    """A started archiving cluster (local target) in a new directory under /tmp, stopped and
    removed afterwards; skips the test when the server binaries are missing.

    `spool` names the archiver's spool directory under that root (see `make_setup`), `settings`
    are extra postgresql.conf settings, and `before_start` runs on the setup before the server
    starts.
    """
    try:
        find_postgres_bindir()
    except ConfigError as error:
        pytest.skip(f"PostgreSQL server binaries are not installed: {error}")
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    setup = make_setup(root, settings=settings, spool=None if spool is None else root / spool)
    try:
        if before_start is not None:
            before_start(setup)
        start(setup)
        yield setup
    finally:
        try:
            setup.cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pitr_cluster() -> Iterator[PitrSetup]:
    """One archiving cluster for the session (local target only)."""
    with archiving_cluster("backupctl-pitr-") as setup:
        yield setup
