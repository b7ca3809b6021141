"""The full shop policy: local + SFTP (real sshd) + S3 (moto) + restic in one run; 3-2-1-1-0."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.pgcheck import fingerprints
from tests.e2e.test_backup_restore import make_tree
from tests.fixtures.core import Workspace
from tests.fixtures.postgres import PgDatabase
from tests.fixtures.s3 import new_bucket_name
from tests.fixtures.sshd import SshdServer


def test_local_sftp_s3_restic_in_one_run(
    workspace: Workspace,
    pg_database: PgDatabase,
    pg_empty_database: PgDatabase,
    s3_server: str,
    sshd_server: SshdServer,
    tmp_path: Path,
) -> None:
    space = workspace
    uploads = space.root / "uploads"
    make_tree(uploads)
    space.env["SHOP_TEST_DB_PASSWORD"] = pg_database.password
    space.env["RESTIC_TEST_PASSWORD"] = "restic-test-password"
    sftp_root = sshd_server.root / "sftp-backups"
    space.write_policy(
        "shop",
        space.base_policy(
            "shop",
            [
                {
                    "name": "shop-db",
                    "type": "postgres",
                    "url": pg_database.url,
                    "password": "env:SHOP_TEST_DB_PASSWORD",
                },
                {"name": "uploads", "type": "files", "path": str(uploads), "exclude": ["cache/*"]},
            ],
            [
                {"name": "local", "type": "local", "path": str(space.backups)},
                {
                    "name": "vault",
                    "type": "sftp",
                    "host": sshd_server.host,
                    "port": sshd_server.port,
                    "user": sshd_server.user,
                    "key_file": sshd_server.key_file,
                    "known_hosts": sshd_server.known_hosts,
                    "path": str(sftp_root),
                    "medium": "disk",
                },
                {
                    "name": "offsite",
                    "type": "s3",
                    "bucket": new_bucket_name(),
                    "endpoint_url": s3_server,
                    "region": "us-east-1",
                    "object_lock": {"mode": "COMPLIANCE", "days": 1},
                },
                {
                    "name": "dedup",
                    "type": "restic",
                    "repository": str(tmp_path / "restic"),
                    "password": "env:RESTIC_TEST_PASSWORD",
                    "medium": "disk",
                },
            ],
        ),
    )
    assert space.run("target", "setup", "shop", "offsite").returncode == 0
    setup = space.run_json("target", "setup", "shop", "dedup")
    assert setup["changes"] == [{"what": "repository", "current": "absent", "desired": "initialised"}]

    first = space.run_json("backup", "shop")
    assert first["status"] == "complete", first
    assert {name: t["status"] for name, t in first["targets"].items()} == {
        "local": "complete",
        "vault": "complete",
        "offsite": "complete",
        "dedup": "complete",
    }
    assert (sftp_root / "shop" / first["snapshot_id"] / "manifest.json").exists()

    second = space.run_json("backup", "shop")  # restic's dedup: tests/e2e/test_restic_only.py

    for target in ("local", "vault", "offsite", "dedup"):
        verified = space.run_json("verify", "shop", second["snapshot_id"], "--target", target)
        assert verified[0]["ok"], verified

    status = space.run("status", "shop", "--json")
    assert status.returncode == 0, status.stdout
    rules = json.loads(status.stdout)[0]["rules"]
    assert rules["copies"]["detail"].startswith("5 copies")

    # Restore from restic: the database from its plain stream, the files from its tree.
    done = space.run(
        "restore",
        "shop",
        "latest",
        "--source",
        "shop-db",
        "--from",
        "dedup",
        "--to-db",
        pg_empty_database.url,
        "--db-password",
        "env:RESTORE_PW",
        env={"RESTORE_PW": pg_empty_database.password},
    )
    assert done.returncode == 0, done.stderr
    with pg_database.connect() as original, pg_empty_database.connect() as restored:
        assert fingerprints(restored) == fingerprints(original)
    restored_dir = tmp_path / "from-restic"
    done = space.run(
        "restore", "shop", "latest", "--source", "uploads", "--from", "dedup", "--to-dir", str(restored_dir)
    )
    assert done.returncode == 0, done.stderr
    assert (restored_dir / "products" / "p007.jpg").read_bytes() == (
        uploads / "products" / "p007.jpg"
    ).read_bytes()
    # And from SFTP.
    sftp_restore = tmp_path / "from-sftp"
    done = space.run(
        "restore", "shop", "latest", "--source", "uploads", "--from", "vault", "--to-dir", str(sftp_restore)
    )
    assert done.returncode == 0, done.stderr
