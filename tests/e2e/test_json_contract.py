"""The machine contract (docs/json.md) through the real CLI: versioned JSON, errors as JSON under
`--json` and `--log-json`, one timestamp format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.fixtures.core import Workspace

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
ISO_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _times(data: Any) -> list[str]:
    """Every string in `data` that looks like a timestamp."""
    if isinstance(data, dict):
        return [time for value in data.values() for time in _times(value)]
    if isinstance(data, list):
        return [time for value in data for time in _times(value)]
    return [data] if isinstance(data, str) and ISO_LIKE.match(data) else []


def _files_policy(space: Workspace, data: Path) -> None:
    space.write_policy(
        "app", space.base_policy("app", [{"name": "files", "type": "files", "path": str(data)}])
    )


def test_success_outputs_are_versioned_with_utc_times(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello")
    _files_policy(workspace, data)
    backup = workspace.run_json("backup", "app")
    assert backup["schema"] == "backupctl.backup/1"
    assert backup["status"] == "complete"  # existing keys are kept
    snapshots = workspace.run_json("snapshots", "app")
    assert isinstance(snapshots, list) and snapshots[0]["id"] == backup["snapshot_id"]
    times = _times(snapshots)
    assert times and all(RFC3339_UTC.match(time) for time in times), times
    validate = workspace.run_json("policy", "validate")
    assert validate["schema"] == "backupctl.policy.validate/1"


def test_arrays_are_versioned_per_element(workspace: Workspace, tmp_path: Path) -> None:
    """Commands that print an array keep the array; every element leads with its schema."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello")
    files = [{"name": "files", "type": "files", "path": str(data)}]
    workspace.write_policy("app", workspace.base_policy("app", files, schedule="15 2 * * *"))
    workspace.run_json("backup", "app")
    expected = {
        ("snapshots", "app"): "backupctl.snapshot/1",
        ("verify", "app"): "backupctl.verify.target/1",
        ("status", "app"): "backupctl.status.policy/1",
        ("schedule", "list"): "backupctl.schedule.entry/1",
        ("drills", "app"): "backupctl.drills.run/1",
    }
    for command, schema in expected.items():
        done = workspace.run(*command, "--json")
        document = json.loads(done.stdout)
        assert isinstance(document, list), (command, document)
        assert all(next(iter(element)) == "schema" for element in document), (command, document)
        assert {element["schema"] for element in document} <= {schema}, (command, document)
        if command[0] in ("snapshots", "verify", "status", "schedule"):
            assert document, command  # one backup: these are never empty


def test_failing_backup_prints_a_json_error(workspace: Workspace, tmp_path: Path) -> None:
    _files_policy(workspace, tmp_path / "missing")
    done = workspace.run("backup", "app", "--json")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)
    assert error["schema"] == "backupctl.error/1"
    assert error["ok"] is False
    assert error["exit_code"] == done.returncode
    assert error["command"] == "backup"
    assert "missing" in error["error"]
    assert RFC3339_UTC.match(error["time"])


def test_config_error_json_carries_the_issues(workspace: Workspace, tmp_path: Path) -> None:
    workspace.policies.mkdir(parents=True)
    (workspace.policies / "app.yaml").write_text("name: app\nschedul: daily\n")
    done = workspace.run("backup", "app", "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)
    assert error["kind"] == "config" and error["exit_code"] == 2
    assert any(issue["path"] == "schedul" and issue["line"] == 2 for issue in error["issues"])
    # A command that prints its own result on failure prints exactly one document.
    validate = workspace.run("policy", "validate", "--json")
    assert validate.returncode == 2
    assert json.loads(validate.stdout)["schema"] == "backupctl.policy.validate/1"


def test_log_json_final_error_is_a_json_line(workspace: Workspace, tmp_path: Path) -> None:
    _files_policy(workspace, tmp_path / "missing")
    done = workspace.run("--log-json", "backup", "app")
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]  # every line is JSON
    final = lines[-1]
    assert final["level"] == "error" and final["final"] is True
    assert final["exit_code"] == 1 and "missing" in final["message"]
    assert all(RFC3339_UTC.match(line["time"]) for line in lines)


def test_usage_error_json(workspace: Workspace) -> None:
    done = workspace.run("backup", "--json")  # POLICY missing
    assert done.returncode == 2
    error = json.loads(done.stdout)
    assert error["kind"] == "usage" and error["exit_code"] == 2
