"""Evidence from real runs: `backupctl backup` of a real PostgreSQL to a local target, `verify`
and `status`, then `report` and `evidence export|verify` of the current period."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.fixtures.core import Workspace
from tests.fixtures.postgres import PgDatabase


def test_real_backup_run_is_evidence(workspace: Workspace, pg_database: PgDatabase, tmp_path: Path) -> None:
    workspace.env["SHOP_TEST_DB_PASSWORD"] = pg_database.password
    source = {
        "name": "shop-db",
        "type": "postgres",
        "url": pg_database.url,
        "password": "env:SHOP_TEST_DB_PASSWORD",
    }
    workspace.write_policy("shop", workspace.base_policy("shop", [source], schedule="0 2 * * *"))
    backup = workspace.run_json("backup", "shop")
    assert backup["status"] == "complete"
    workspace.run("verify", "shop", "latest", check=True)
    workspace.run("status", "shop")  # exit 1 (3-2-1 not met by one local target) is fine here

    now = datetime.now(UTC)
    document = workspace.run_json("report", "--month", f"{now:%Y-%m}")
    controls = {c["control"]: c for c in document["controls"]}
    run = next(r for r in document["runs"] if r["id"] == backup["snapshot_id"])
    assert run["status"] == "complete" and run["encrypted"] is True
    assert run["trigger"].startswith("non-interactive:")  # a subprocess without a terminal
    assert controls["verify-runs"]["status"] == "COMPLIANT"
    assert controls["encryption"]["status"] == "COMPLIANT"
    assert controls["3-2-1-1-0"]["status"] == "NON_COMPLIANT"  # one local target: 2 copies, 1 medium
    assert controls["3-2-1-1-0"]["measured"]["observations"] >= 1  # what `status` saw is history
    assert controls["catalog-integrity"]["status"] == "COMPLIANT"

    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    out = tmp_path / "bundle.tar"
    workspace.run_json("evidence", "export", "--quarter", quarter, "--out", str(out))
    verified = workspace.run_json("evidence", "verify", str(out))
    assert verified["ok"] is True and verified["ledger_records"] >= 4, verified
