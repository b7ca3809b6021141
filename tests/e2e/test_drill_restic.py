"""Drills read from a restic repository when the snapshot's sources are kept there (only).

The real CLI, PostgreSQL, restic and the local runtime (throwaway clusters, the shop app as a
process) with the full shop drill: login, cart, payments, uploads, exact row counts.
"""

from __future__ import annotations

import json
from pathlib import Path

from backupctl.local_cluster.postgres import LocalPostgres
from tests.e2e.test_drill import drill_file, seed_shop
from tests.fixtures.core import Workspace


def test_shop_drill_from_a_restic_only_database(
    workspace: Workspace, postgres_cluster: LocalPostgres, tmp_path: Path
) -> None:
    name, url, uploads = seed_shop(workspace, postgres_cluster)
    workspace.env["RESTIC_DRILL_PASSWORD"] = "restic-drill-test-password"
    workspace.write_policy(
        "shop",
        workspace.base_policy(
            "shop",
            [
                {"name": "shop-db", "type": "postgres", "url": url, "password": "env:SHOP_TEST_DB_PASSWORD",
                 "targets": ["dedup"]},
                {"name": "uploads", "type": "files", "path": str(uploads), "exclude": ["cache/*"]},
            ],
            [
                {"name": "local", "type": "local", "path": str(workspace.backups)},
                {"name": "dedup", "type": "restic", "repository": str(tmp_path / "restic"),
                 "password": "env:RESTIC_DRILL_PASSWORD"},
            ],
        ),
    )  # fmt: skip
    try:
        assert workspace.run("target", "setup", "shop", "dedup").returncode == 0
        backup = workspace.run_json("backup", "shop")
        assert backup["status"] == "complete", backup

        # Only the restic repository holds both sources: the drill picks it by itself.
        done = workspace.run("drill", str(drill_file(workspace)), "--runtime", "local", "--json", timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["ok"] and outcome["target"] == "dedup", outcome
        checks = {check["name"]: check for check in outcome["checks"]}
        assert checks["restic dump shop-db"]["ok"] and checks["row counts shop-db"]["ok"]
        assert checks["tree hash uploads"]["ok"] and checks["manifest signature"]["ok"]
        assert all(check["ok"] for check in outcome["checks"]), outcome["checks"]

        # Asking for the local target, which lacks shop-db, is refused before anything starts.
        refused = workspace.run("drill", str(drill_file(workspace)), "--runtime", "local", "--from", "local")
        assert refused.returncode == 2, refused.stderr
        assert "holds no copy of shop-db" in refused.stderr
    finally:
        postgres_cluster.drop_database(name)
