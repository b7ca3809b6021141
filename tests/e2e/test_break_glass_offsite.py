"""docs/break-glass.md beyond the local layout: a MariaDB database and a file tree restored from
S3 (curl with SigV4), SFTP (OpenSSH's sftp) and restic (`restic dump`) with standard tools only —
no backupctl, no catalog: the commands the page shows, run against real servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.e2e.test_backup_restore import make_tree
from tests.e2e.test_mysql_cli import checksums
from tests.fixtures.core import Workspace
from tests.fixtures.mariadb import MariaDatabase, new_database
from tests.fixtures.s3 import TEST_ENV, new_bucket_name
from tests.fixtures.sshd import SshdServer


def sh(script: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a break-glass pipeline in bash (pipefail); return stdout, fail with stderr."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, f"{script}\n{done.stderr}"
    return done.stdout


def test_break_glass_from_s3_sftp_and_restic(
    workspace: Workspace,
    mariadb_database: MariaDatabase,
    mariadb_empty_database: MariaDatabase,
    s3_server: str,
    sshd_server: SshdServer,
    tmp_path: Path,
) -> None:
    for tool in ("age", "zstd", "curl", "sftp", "restic", "mariadb", "tar"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    space = workspace
    uploads = tmp_path / "uploads"
    make_tree(uploads)
    address = urlparse(mariadb_database.url)
    bucket = new_bucket_name()
    space.env |= {"BG_MYSQL_PASSWORD": mariadb_database.password, "BG_RESTIC_PASSWORD": "restic-bg-password"}
    sftp_root = sshd_server.root / "bg-backups"
    space.write_policy("shop", space.base_policy("shop", [
        {"name": "shop-db", "type": "mysql", "host": address.hostname, "port": address.port,
         "user": mariadb_database.user, "password": "env:BG_MYSQL_PASSWORD",
         "database": mariadb_database.name},
        {"name": "uploads", "type": "files", "path": str(uploads)},
    ], [
        {"name": "offsite", "type": "s3", "bucket": bucket, "prefix": "backupctl", "endpoint_url": s3_server,
         "region": "us-east-1"},
        {"name": "vault", "type": "sftp", "host": sshd_server.host, "port": sshd_server.port,
         "user": sshd_server.user, "key_file": sshd_server.key_file, "known_hosts": sshd_server.known_hosts,
         "path": str(sftp_root), "medium": "disk"},
        {"name": "dedup", "type": "restic", "repository": str(tmp_path / "restic"),
         "password": "env:BG_RESTIC_PASSWORD", "medium": "disk"},
    ]))  # fmt: skip
    assert space.run("target", "setup", "shop", "offsite").returncode == 0
    assert space.run("target", "setup", "shop", "dedup").returncode == 0
    result = space.run_json("backup", "shop")
    assert result["status"] == "complete", result
    snapshot = result["snapshot_id"]
    identity = space.keys / "age-identity.txt"
    tables = sorted(result["sources"]["shop-db"]["facts"]["row_counts"])
    expected = checksums(mariadb_database, tables)
    root_env = {"MYSQL_PWD": mariadb_empty_database.password}  # the mariadb client reads it

    # --- S3 with curl (SigV4; the keys reach curl through its config on stdin, not argv)
    s3_env = {**TEST_ENV, "ENDPOINT": s3_server, "BUCKET": bucket}
    fetch = (
        'printf \'user = "%s:%s"\\n\' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" | '
        'curl -sSf -K - --aws-sigv4 "aws:amz:${AWS_DEFAULT_REGION}:s3" '
    )
    listing = sh(fetch + '"$ENDPOINT/$BUCKET?list-type=2&prefix=backupctl/shop/"', s3_env)
    assert f"backupctl/shop/{snapshot}/shop-db.sql.zst.age" in listing
    sh(fetch + f'"$ENDPOINT/$BUCKET/backupctl/shop/{snapshot}/shop-db.sql.zst.age" | age -d -i {identity} | '
       f"zstd -d | mariadb --host={address.hostname} --port={address.port} --user=root "
       f"--database={mariadb_empty_database.name}", {**s3_env, **root_env})  # fmt: skip
    assert checksums(mariadb_empty_database, tables) == expected

    # --- SFTP with OpenSSH's sftp
    ssh_options = (
        f"-i {sshd_server.key_file} -o UserKnownHostsFile={sshd_server.known_hosts} -P {sshd_server.port}"
    )
    fetched = tmp_path / "from-sftp"
    fetched.mkdir()
    sh(
        f"sftp -q {ssh_options} '{sshd_server.user}@{sshd_server.host}:{sftp_root}/shop/{snapshot}/*' .",
        cwd=fetched,
    )
    assert {"manifest.json", "manifest.json.sig", "uploads.tar.zst.age"} <= {
        p.name for p in fetched.iterdir()
    }
    (tmp_path / "uploads.restored").mkdir()
    sh(f"age -d -i {identity} uploads.tar.zst.age | zstd -d | tar -x -C ../uploads.restored", cwd=fetched)
    assert (tmp_path / "uploads.restored" / "products" / "p007.jpg").read_bytes() == (
        uploads / "products" / "p007.jpg").read_bytes()  # fmt: skip

    # --- restic: plain streams (restic encrypts), found by the snapshot's tags
    restic_env = {"RESTIC_REPOSITORY": str(tmp_path / "restic"), "RESTIC_PASSWORD": "restic-bg-password"}
    found = json.loads(sh(f"restic snapshots --json --tag snapshot={snapshot}", restic_env))
    assert found, "restic snapshots: nothing tagged with the snapshot id"
    second = new_database(mariadb_empty_database.server, prefix="bg")
    try:
        sh(f"restic dump --tag snapshot={snapshot},source=shop-db latest /shop-db.sql | "
           f"mariadb --host={address.hostname} --port={address.port} --user=root --database={second}",
           {**restic_env, **root_env})  # fmt: skip
        copy = MariaDatabase(mariadb_empty_database.server, second, "root", mariadb_empty_database.password)
        assert checksums(copy, tables) == expected
    finally:
        mariadb_empty_database.server.drop_database(second)
