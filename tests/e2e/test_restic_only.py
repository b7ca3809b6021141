"""Sources kept only in restic: no age-encrypted copy, the signed manifest stored in restic.

Real PostgreSQL, the real restic binary, the real CLI as a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.pgcheck import fingerprints
from tests.e2e.test_backup_restore import make_tree
from tests.fixtures.core import Workspace
from tests.fixtures.postgres import PgDatabase

PASSWORD = "restic-only-test-password"


def _repository(path: Path) -> object:
    from backupctl.policy.schema import ResticTarget
    from backupctl.targets.restic import ResticRepository

    os.environ["RESTIC_ONLY_TEST_PASSWORD"] = PASSWORD
    return ResticRepository(
        ResticTarget(
            name="dedup", type="restic", repository=str(path), password="env:RESTIC_ONLY_TEST_PASSWORD"
        )
    )


@pytest.fixture
def restic_only_policy(workspace: Workspace, pg_database: PgDatabase, tmp_path: Path) -> Path:
    """shop-db goes to restic only; uploads to the local target and restic."""
    uploads = workspace.root / "uploads"
    make_tree(uploads)
    workspace.env["SHOP_TEST_DB_PASSWORD"] = pg_database.password
    workspace.env["RESTIC_ONLY_TEST_PASSWORD"] = PASSWORD
    repository = tmp_path / "restic"
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
                    "targets": ["dedup"],
                },
                {"name": "uploads", "type": "files", "path": str(uploads)},
            ],
            [
                {"name": "local", "type": "local", "path": str(workspace.backups)},
                {
                    "name": "dedup",
                    "type": "restic",
                    "repository": str(repository),
                    "password": "env:RESTIC_ONLY_TEST_PASSWORD",
                },
            ],
        ),
    )
    assert workspace.run("target", "setup", "shop", "dedup").returncode == 0
    return repository


def test_restic_only_source_backup_verify_restore(
    workspace: Workspace, pg_database: PgDatabase, pg_empty_database: PgDatabase, restic_only_policy: Path
) -> None:
    space = workspace
    backup = space.run_json("backup", "shop")
    assert backup["status"] == "complete", backup
    snapshot = backup["snapshot_id"]
    assert backup["sources"]["shop-db"]["stored_bytes"] == 0  # no age copy anywhere
    assert backup["sources"]["shop-db"]["plain_bytes"] > 0

    # The local target holds uploads only; its manifest lists only what it holds.
    local_files = sorted(p.name for p in (space.backups / "shop" / snapshot).iterdir())
    assert not [name for name in local_files if name.startswith("shop-db")], local_files
    local_manifest = json.loads((space.backups / "shop" / snapshot / "manifest.json").read_text())
    assert [a["source"] for a in local_manifest["artifacts"]] == ["uploads"]

    # restic holds one snapshot per source plus the signed manifest listing both.
    repository = _repository(restic_only_policy)
    tagged = repository.find("shop", snapshot)  # type: ignore[attr-defined]
    tags = sorted(next(t for t in info.tags if t.startswith(("source=", "manifest"))) for info in tagged)
    assert tags == ["manifest", "source=shop-db", "source=uploads"]
    manifest_snapshot = next(info for info in tagged if "manifest" in info.tags)
    with repository.dump(manifest_snapshot.id, "backupctl-manifest.json") as stream:  # type: ignore[attr-defined]
        envelope = json.loads(stream.read())
    stored = json.loads(base64.b64decode(envelope["manifest"]))
    assert {a["source"]: a["encryption"] for a in stored["artifacts"]} == {
        "shop-db": "restic",
        "uploads": "age-x25519",
    }

    verified = space.run_json("verify", "shop", snapshot, "--target", "dedup")
    assert verified[0]["ok"], verified
    assert "manifest from the repository" in verified[0]["signature"]

    # No --from: the only copy of shop-db is in restic, so restore reads it from there.
    done = space.run(
        "restore", "shop", "latest", "--source", "shop-db",
        "--to-db", pg_empty_database.url, "--db-password", "env:RESTORE_PW",
        env={"RESTORE_PW": pg_empty_database.password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with pg_database.connect() as original, pg_empty_database.connect() as restored:
        assert fingerprints(restored) == fingerprints(original)


def test_restic_manifest_signed_by_an_untrusted_key_is_refused(
    workspace: Workspace, pg_empty_database: PgDatabase, restic_only_policy: Path
) -> None:
    space = workspace
    backup = space.run_json("backup", "shop")
    assert backup["status"] == "complete", backup
    # Another host's key: the signature no longer comes from a trusted key.
    from backupctl.core.crypto import SIGNING_KEY_FILE, SIGNING_PUB_FILE

    (space.keys / SIGNING_KEY_FILE).unlink()
    (space.keys / SIGNING_PUB_FILE).unlink()
    assert space.run("keys", "generate").returncode == 0
    verified = space.run("verify", "shop", backup["snapshot_id"], "--target", "dedup", "--json")
    assert verified.returncode == 1
    assert "signature" in verified.stdout
    done = space.run(
        "restore", "shop", "latest", "--source", "shop-db",
        "--to-db", pg_empty_database.url, "--db-password", "env:RESTORE_PW",
        env={"RESTORE_PW": pg_empty_database.password},
    )  # fmt: skip
    assert done.returncode == 1
    assert "signature" in done.stderr
    with pg_empty_database.connect() as restored:
        assert fingerprints(restored) == {}  # nothing was written


def test_failed_backup_commits_no_restic_manifest(workspace: Workspace, restic_only_policy: Path) -> None:
    space = workspace
    space.env["SHOP_TEST_DB_PASSWORD"] = "wrong-password"
    failed = space.run("backup", "shop")
    assert failed.returncode == 1, failed.stderr
    repository = _repository(restic_only_policy)
    tags = {tag for info in repository.snapshots() for tag in info.tags}  # type: ignore[attr-defined]
    assert "manifest" not in tags
    assert "source=shop-db" not in tags


def test_catalog_rebuild_from_a_restic_repository(
    workspace: Workspace, pg_empty_database: PgDatabase, restic_only_policy: Path
) -> None:
    space = workspace
    first = space.run_json("backup", "shop")["snapshot_id"]
    second = space.run_json("backup", "shop")["snapshot_id"]
    for path in space.state.glob("catalog.sqlite*"):
        path.unlink()  # the backup host lost its catalog
    report = space.run_json("catalog", "rebuild", "--target", "dedup")
    assert report["found"] == 2 and report["imported"] == 2 and not report["skipped"], report
    assert [s["id"] for s in space.run_json("snapshots", "shop")] == [second, first]
    verified = space.run_json("verify", "shop", first, "--target", "dedup")
    assert verified[0]["ok"], verified


def test_a_second_backup_of_an_unchanged_database_adds_under_5_percent(
    workspace: Workspace, pg_database: PgDatabase, restic_only_policy: Path
) -> None:
    """restic deduplicates the plain stream: only the chunk holding pg_dump's header (its
    timestamp changes every run) is stored again. restic's chunks are 0.5 to 8 MiB, so the
    database is made large enough (~170 MB dump) that even the largest chunk is under 5 %."""
    with pg_database.connect() as connection:
        connection.execute(
            "CREATE TABLE bulk AS SELECT i, md5(i::text) AS a, md5((-i)::text) AS b "
            "FROM generate_series(1, 2400000) i"
        )
    repository = _repository(restic_only_policy)
    first = workspace.run_json("backup", "shop")
    size_after_first = repository.stats()["total_size"]  # type: ignore[attr-defined]
    second = workspace.run_json("backup", "shop")
    size_after_second = repository.stats()["total_size"]  # type: ignore[attr-defined]
    added = size_after_second - size_after_first
    print(
        f"restic repository: {size_after_first} bytes after the first backup "
        f"({first['sources']['shop-db']['plain_bytes']} bytes dumped), +{added} after the second "
        f"({100 * added / size_after_first:.2f}%)"
    )
    assert second["status"] == "complete"
    assert added < 0.05 * size_after_first


def _sqlite_database(path: Path, rows: int) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT)")
        rows_data = [(f"row {i}",) for i in range(rows)]
        connection.executemany("INSERT INTO events (payload) VALUES (?)", rows_data)
    return path


def _restic_processes() -> list[str]:
    """restic processes of this test run (their command line names the test's repository)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"restic"):
            found.append(b" ".join(cmdline).decode(errors="replace"))
    return found


def test_several_stream_sources_and_runs_that_end_early(workspace: Workspace, tmp_path: Path) -> None:
    """Three restic-only stream sources (the first one's restic process and dump are started
    ahead, actions/ahead.py). A source that fails, or a catalog that cannot be opened after
    restic was started, ends the run with nothing committed for it and no process left."""
    space = workspace
    databases = {f"db{i}": _sqlite_database(tmp_path / f"db{i}.sqlite", 500 * i) for i in (1, 2, 3)}
    repository = tmp_path / "restic"
    space.env["RESTIC_ONLY_TEST_PASSWORD"] = PASSWORD
    space.write_policy(
        "apps",
        space.base_policy(
            "apps",
            [{"name": name, "type": "sqlite", "path": str(path)} for name, path in databases.items()],
            [{"name": "dedup", "type": "restic", "repository": str(repository),
              "password": "env:RESTIC_ONLY_TEST_PASSWORD"}],
        ),
    )  # fmt: skip
    assert space.run("target", "setup", "apps", "dedup").returncode == 0
    backup = space.run_json("backup", "apps")
    assert backup["status"] == "complete", backup
    repo = _repository(repository)
    tagged = repo.find("apps", backup["snapshot_id"])  # type: ignore[attr-defined]
    assert sorted(t for info in tagged for t in info.tags if t.startswith(("source=", "manifest"))) == [
        "manifest", "source=db1", "source=db2", "source=db3",
    ]  # fmt: skip
    assert space.run_json("verify", "apps", "latest")[0]["ok"]
    restored = tmp_path / "db3-restored.sqlite"
    done = space.run("restore", "apps", "latest", "--source", "db3", "--to-file", str(restored))
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(restored) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone()[0] == 1500

    before = {info.id for info in repo.snapshots()}  # type: ignore[attr-defined]
    # The second source fails: the manifest's restic process commits nothing.
    databases["db2"].unlink()
    failed = space.run("backup", "apps", "--json")
    assert failed.returncode == 1, failed.stderr
    assert "db2" in failed.stderr
    after = [info for info in repo.snapshots() if info.id not in before]  # type: ignore[attr-defined]
    assert [t for info in after for t in info.tags if t.startswith(("source=", "manifest"))] == ["source=db1"]
    _sqlite_database(databases["db2"], 10)

    # The catalog cannot be opened: restic and the first dump were started before it.
    unreachable = space.run("--catalog", "postgresql://backupctl@127.0.0.1:9/none", "backup", "apps")
    assert unreachable.returncode == 2, unreachable.stderr
    assert "catalog" in unreachable.stderr
    assert {info.id for info in repo.snapshots()} == before | {info.id for info in after}  # type: ignore[attr-defined]
    assert [p for p in _restic_processes() if str(repository) in p] == []
    assert not list((repository / "locks").iterdir())  # aborted with SIGINT: locks removed
