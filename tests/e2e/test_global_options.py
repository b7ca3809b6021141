"""Global options after the subcommand through the real CLI: `backupctl backup -q app`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.core import Workspace


def test_quiet_and_log_json_after_the_subcommand(workspace: Workspace, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    workspace.write_policy("app", workspace.base_policy(
        "app", [{"name": "files", "type": "files", "path": str(tree)}],
        [{"name": "local", "type": "local", "path": str(workspace.backups)}]))  # fmt: skip
    quiet = workspace.run("backup", "-q", "app")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    logged = workspace.run("backup", "app", "--log-json", "--json")
    assert logged.returncode == 0, logged.stderr
    assert json.loads(logged.stdout)["status"] == "complete"
    assert all(json.loads(line) for line in logged.stderr.splitlines() if line.strip())
    assert json.loads(workspace.run("--json", "snapshots", "app").stdout)[0]["status"] == "complete"
