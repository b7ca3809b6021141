"""The backup spine end to end: the real CLI, a real PostgreSQL, real files, the local target."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pyrage import x25519

from backupctl.core.crypto import load_signing_key
from backupctl.core.pipeline import decrypt_stream
from tests.e2e.pgcheck import fingerprints
from tests.fixtures.core import Workspace
from tests.fixtures.postgres import PgDatabase


def make_tree(root: Path) -> None:
    (root / "products").mkdir(parents=True)
    for index in range(30):
        (root / "products" / f"p{index:03d}.jpg").write_bytes(os.urandom(1000 + index * 37))
    (root / "invoices" / "2026").mkdir(parents=True)
    (root / "invoices" / "2026" / "inv-1.txt").write_text("invoice 1\n")
    (root / "cache").mkdir()
    (root / "cache" / "tmp-1.tmp").write_text("excluded")
    (root / "latest.jpg").symlink_to("products/p001.jpg")


@pytest.fixture
def shop(workspace: Workspace, pg_database: PgDatabase) -> tuple[Workspace, PgDatabase, Path]:
    uploads = workspace.root / "uploads"
    make_tree(uploads)
    workspace.env["SHOP_TEST_DB_PASSWORD"] = pg_database.password
    workspace.write_policy(
        "shop",
        workspace.base_policy(
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
        ),
    )
    return workspace, pg_database, uploads


def artifact(space: Workspace, snapshot: str, name: str) -> Path:
    return space.backups / "shop" / snapshot / name


def test_backup_verify_restore_round_trip(
    shop: tuple[Workspace, PgDatabase, Path], pg_empty_database: PgDatabase
) -> None:
    space, database, uploads = shop
    result = space.run_json("backup", "shop")
    assert result["status"] == "complete"
    snapshot = result["snapshot_id"]
    assert set(result["sources"]) == {"shop-db", "uploads"}

    listed = space.run_json("snapshots", "shop")
    assert [item["id"] for item in listed] == [snapshot]
    assert listed[0]["targets"] == {"local": "complete"}

    files = sorted(p.name for p in (space.backups / "shop" / snapshot).iterdir())
    assert files == ["manifest.json", "manifest.json.sig", "shop-db.pgdump.zst.age", "uploads.tar.zst.age"]
    manifest = json.loads(artifact(space, snapshot, "manifest.json").read_text())
    assert manifest["format"] == "backupctl-manifest" and manifest["version"] == 2
    db_record = next(a for a in manifest["artifacts"] if a["source"] == "shop-db")
    assert db_record["plain_digest"].startswith("blake3:") and len(db_record["plain_digest"]) == 71
    db_facts = db_record["facts"]
    assert db_facts["row_counts"]["public.orders"] == 200

    verified = space.run_json("verify", "shop", "latest")
    assert [item["ok"] for item in verified] == [True]

    # Restore the database into a new one: every table's rows and content are equal.
    env = {"RESTORE_PW": pg_empty_database.password}
    done = space.run(
        "restore",
        "shop",
        "latest",
        "--source",
        "shop-db",
        "--to-db",
        pg_empty_database.url,
        "--db-password",
        "env:RESTORE_PW",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "row counts equal the manifest" in done.stdout
    with database.connect() as original, pg_empty_database.connect() as restored:
        assert fingerprints(restored) == fingerprints(original)
        assert len(fingerprints(original)) == 7

    # Restore the files: the tree hash is checked by backupctl; compare contents here too.
    target_dir = space.root / "restored"
    done = space.run("restore", "shop", snapshot[:12], "--source", "uploads", "--to-dir", str(target_dir))
    assert done.returncode == 0, done.stderr
    assert (target_dir / "products" / "p007.jpg").read_bytes() == (
        uploads / "products" / "p007.jpg"
    ).read_bytes()
    assert os.readlink(target_dir / "latest.jpg") == "products/p001.jpg"
    assert not (target_dir / "cache" / "tmp-1.tmp").exists()

    # A non-empty destination is refused without --force, and nothing is written.
    again = space.run("restore", "shop", "latest", "--source", "uploads", "--to-dir", str(target_dir))
    assert again.returncode == 2 and "--force" in again.stderr


def _rewrite_as_version_1(space: Workspace, snapshot: str, *, damage: str | None = None) -> None:
    """Turn a snapshot's manifest into what backupctl wrote before BLAKE3 (version 1: a sha256
    plain digest in `plain_sha256`) and sign it again with the host key. `damage`: that source's
    digest is changed by one hex digit."""
    identity_line = next(
        line for line in (space.keys / "age-identity.txt").read_text().splitlines()
        if line.startswith("AGE-SECRET-KEY-")
    )
    identity = x25519.Identity.from_str(identity_line)
    path = artifact(space, snapshot, "manifest.json")
    raw = json.loads(path.read_bytes())
    raw["version"] = 1
    for item in raw["artifacts"]:
        with artifact(space, snapshot, item["file"]).open("rb") as stored:
            stats = decrypt_stream(stored, None, [identity], plain_algorithm="sha256")
        digest = stats.plain_digest.removeprefix("sha256:")
        if item["source"] == damage:
            digest = ("0" if digest[0] != "0" else "1") + digest[1:]
        item.pop("plain_digest", None)  # absent the second time
        item["plain_sha256"] = digest
    data = (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()
    path.write_bytes(data)
    artifact(space, snapshot, "manifest.json.sig").write_bytes(load_signing_key(space.keys).sign(data))


def test_version_1_manifests_still_verify_and_restore(
    shop: tuple[Workspace, PgDatabase, Path], pg_empty_database: PgDatabase
) -> None:
    """Snapshots taken before manifest version 2 are checked with the digest they carry."""
    space, database, _ = shop
    snapshot = space.run_json("backup", "shop")["snapshot_id"]
    _rewrite_as_version_1(space, snapshot)
    verified = space.run_json("verify", "shop", snapshot)
    assert [item["ok"] for item in verified] == [True], verified

    done = space.run(
        "restore", "shop", snapshot, "--source", "shop-db", "--to-db", pg_empty_database.url,
        env={"PGPASSWORD": pg_empty_database.password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with database.connect() as original, pg_empty_database.connect() as restored:
        assert fingerprints(restored) == fingerprints(original)

    # The sha256 is really compared: one wrong digit in a version 1 manifest is reported.
    _rewrite_as_version_1(space, snapshot, damage="uploads")
    done = space.run("verify", "shop", snapshot)
    assert done.returncode == 1
    assert "decrypted content differs from the manifest" in done.stderr


def test_password_never_in_output_or_manifest(shop: tuple[Workspace, PgDatabase, Path]) -> None:
    space, database, _ = shop
    done = space.run("-v", "backup", "shop")
    assert done.returncode == 0, done.stderr
    assert database.password not in done.stdout + done.stderr
    for path in space.backups.rglob("manifest.json"):
        assert database.password not in path.read_text()


def test_break_glass_with_standard_tools(
    shop: tuple[Workspace, PgDatabase, Path], pg_empty_database: PgDatabase
) -> None:
    """age -d | zstd -d | pg_restore: the artifacts need no backupctl to be restored."""
    for tool in ("age", "zstd", "pg_restore"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    space, database, _ = shop
    snapshot = space.run_json("backup", "shop")["snapshot_id"]
    stored = artifact(space, snapshot, "shop-db.pgdump.zst.age")
    identity = space.keys / "age-identity.txt"
    pipeline = (
        f"age -d -i {identity} {stored} | zstd -d | "
        f"pg_restore --exit-on-error --no-owner --dbname '{pg_empty_database.url}'"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": pg_empty_database.password},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with database.connect() as original, pg_empty_database.connect() as restored:
        assert fingerprints(restored) == fingerprints(original)

    tar_stored = artifact(space, snapshot, "uploads.tar.zst.age")
    listing = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"age -d -i {identity} {tar_stored} | zstd -d | tar -t"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert "products/p007.jpg" in listing.stdout.split()


def test_tampered_snapshot_is_detected_and_refused(
    shop: tuple[Workspace, PgDatabase, Path], pg_empty_database: PgDatabase
) -> None:
    space, _, _ = shop
    snapshot = space.run_json("backup", "shop")["snapshot_id"]
    db_artifact = artifact(space, snapshot, "shop-db.pgdump.zst.age")
    files_artifact = artifact(space, snapshot, "uploads.tar.zst.age")

    data = bytearray(db_artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one byte
    db_artifact.write_bytes(bytes(data))
    files_artifact.write_bytes(files_artifact.read_bytes()[:-100])  # truncate another

    done = space.run("verify", "shop", "latest")
    assert done.returncode == 1
    assert "shop-db.pgdump.zst.age on local: sha256" in done.stderr
    assert "uploads.tar.zst.age on local: size" in done.stderr

    refused = space.run(
        "restore",
        "shop",
        "latest",
        "--source",
        "shop-db",
        "--to-db",
        pg_empty_database.url,
        env={"PGPASSWORD": pg_empty_database.password},
    )
    assert refused.returncode == 1 and "refusing to restore" in refused.stderr
    with pg_empty_database.connect() as restored:
        assert fingerprints(restored) == {}, "nothing may be written into the destination"

    # Editing the manifest breaks its signature.
    manifest = artifact(space, snapshot, "manifest.json")
    manifest.write_text(manifest.read_text().replace('"policy": "shop"', '"policy": "shop" '))
    done = space.run("verify", "shop", "latest")
    assert done.returncode == 1 and "signature does not verify" in done.stderr


def test_killed_backup_records_nothing_and_next_run_works(shop: tuple[Workspace, PgDatabase, Path]) -> None:
    space, _, uploads = shop
    # Make the files source big enough that the run is still streaming when we kill it.
    big = uploads / "big"
    big.mkdir()
    for index in range(8):
        with open(big / f"blob{index}.bin", "wb") as handle:
            handle.write(os.urandom(24 << 20))
    process = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "backup", "shop"],
        env={**os.environ, **space.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = 60.0
    import time

    started = time.monotonic()
    while time.monotonic() - started < deadline:
        temps = [p for p in space.backups.rglob(".*tmp*")] if space.backups.exists() else []
        if any(p.stat().st_size > (1 << 20) for p in temps):
            break
        time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("the backup never started streaming")
    process.kill()  # SIGKILL: no cleanup code runs
    process.wait()

    assert space.run_json("snapshots", "shop") == []
    attempts = space.run_json("snapshots", "shop", "--all")
    assert [a["status"] for a in attempts] == ["running"]
    manifests = list(space.backups.rglob("manifest.json"))
    assert manifests == [], "a killed run must not leave a manifest"

    result = space.run_json("backup", "shop")
    assert result["status"] == "complete"
    attempts = {a["id"]: a["status"] for a in space.run_json("snapshots", "shop", "--all")}
    assert sorted(attempts.values()) == ["complete", "failed"]
    assert [a["id"] for a in space.run_json("snapshots", "shop")] == [result["snapshot_id"]]
    assert space.run("verify", "shop", "latest").returncode == 0


def test_catalog_rebuild_from_target(shop: tuple[Workspace, PgDatabase, Path]) -> None:
    space, _, _ = shop
    first = space.run_json("backup", "shop")["snapshot_id"]
    second = space.run_json("backup", "shop")["snapshot_id"]
    for path in space.state.glob("catalog.sqlite*"):
        path.unlink()  # the backup host lost its catalog
    assert space.run_json("snapshots", "shop") == []
    report = space.run_json("catalog", "rebuild", "--target", "local")
    assert report["found"] == 2 and report["imported"] == 2 and not report["skipped"]
    assert [s["id"] for s in space.run_json("snapshots", "shop")] == [second, first]
    assert space.run("verify", "shop", first).returncode == 0


def test_sqlite_source_with_concurrent_writer(workspace: Workspace, tmp_path: Path) -> None:
    import sqlite3
    import sys

    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT)")
        connection.executemany("INSERT INTO events (payload) VALUES (?)", [("x" * 200,)] * 20000)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys, time\n"
                f"c = sqlite3.connect({str(database)!r}, timeout=30)\n"
                "end = time.time() + 20\n"
                "while time.time() < end:\n"
                "    c.execute('INSERT INTO events (payload) VALUES (?)', ('y' * 500,)); c.commit()\n"
            ),
        ]
    )
    try:
        workspace.write_policy(
            "app", workspace.base_policy("app", [{"name": "app-db", "type": "sqlite", "path": str(database)}])
        )
        for _ in range(3):
            result = workspace.run_json("backup", "app")
            assert result["status"] == "complete"
    finally:
        writer.kill()
        writer.wait()
    restored = tmp_path / "restored.db"
    done = workspace.run("restore", "app", "latest", "--source", "app-db", "--to-file", str(restored))
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(restored) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    expected = result["sources"]["app-db"]["facts"]["row_counts"]["events"]
    assert count == expected >= 20000


def test_missing_secret_exits_2_and_writes_nothing(shop: tuple[Workspace, PgDatabase, Path]) -> None:
    space, _, _ = shop
    env = {k: v for k, v in space.env.items() if k != "SHOP_TEST_DB_PASSWORD"}
    space.env = env
    done = subprocess.run(
        [sys.executable, "-m", "backupctl", "backup", "shop"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SHOP_TEST_DB_PASSWORD"} | env,
        check=False,
    )
    assert done.returncode == 2
    assert "SHOP_TEST_DB_PASSWORD" in done.stderr
    assert not space.backups.exists()


def test_wrong_database_password_fails_cleanly(shop: tuple[Workspace, PgDatabase, Path]) -> None:
    space, _, _ = shop
    done = space.run("backup", "shop", env={"SHOP_TEST_DB_PASSWORD": "definitely-wrong"})
    assert done.returncode == 1
    assert "password authentication failed" in done.stderr
    assert "definitely-wrong" not in done.stderr
    assert space.run_json("snapshots", "shop") == []
    assert list(space.backups.rglob("manifest.json")) == []
    _ = psycopg  # imported for fixtures' typing
