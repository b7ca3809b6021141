"""Hooks around `backupctl backup`: before/after/on_failure per policy and per source, timeouts,
output in the log, a failing `before` → exit 1 and nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.core import Workspace


def write(
    space: Workspace, tree: Path, hooks: dict[str, Any], source_hooks: dict[str, Any] | None = None
) -> None:
    source: dict[str, Any] = {"name": "files", "type": "files", "path": str(tree)}
    if source_hooks:
        source["hooks"] = source_hooks
    data = space.base_policy(
        "app", [source], [{"name": "local", "type": "local", "path": str(space.backups)}]
    )
    data["hooks"] = hooks
    space.write_policy("app", data)


def record(log: Path) -> str:
    """A shell hook that appends its stage (and source) to `log` and prints a line."""
    # $NAME, not ${NAME}: the policy loader interpolates ${...} from its own environment at load.
    stage = 'echo "$BACKUPCTL_HOOK" $BACKUPCTL_SOURCE policy | cut -d" " -f1,2'
    return f'{stage} >> {log}; echo "said $BACKUPCTL_HOOK"'


def snapshots_written(space: Workspace) -> list[Path]:
    return list((space.backups / "app").glob("*/manifest.json")) if (space.backups / "app").exists() else []


def test_before_after_in_order_with_output_in_the_log(workspace: Workspace, tmp_path: Path) -> None:
    tree, log = tmp_path / "tree", tmp_path / "hooks.log"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    write(workspace, tree, {"before": [record(log)], "after": [record(log)], "on_failure": [record(log)]},
          {"before": [record(log)], "after": [["sh", "-c", f"echo after-argv >> {log}"]]})  # fmt: skip
    done = workspace.run("backup", "app")
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["before policy", "before files", "after-argv", "after policy"]
    assert "hook app before | said before" in done.stderr and "hook app after | said after" in done.stderr
    assert len(snapshots_written(workspace)) == 1


def test_failing_before_aborts_and_writes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    tree, log = tmp_path / "tree", tmp_path / "hooks.log"
    tree.mkdir()
    write(workspace, tree, {"before": ["echo maintenance mode refused >&2; exit 3"], "after": [record(log)],
                            "on_failure": [f'echo "failed: $BACKUPCTL_ERROR" >> {log}']})  # fmt: skip
    done = workspace.run("backup", "app")
    assert done.returncode == 1, done.stderr
    assert "hook app before exited with 3" in done.stderr
    assert "hook app before | maintenance mode refused" in done.stderr
    assert snapshots_written(workspace) == []
    assert workspace.run_json("snapshots", "app", "--all") == []
    assert log.read_text().startswith("failed: hook app before exited with 3")  # on_failure, no after


def test_on_failure_after_a_failed_backup_and_timeouts(workspace: Workspace, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    missing = tmp_path / "not-there"
    write(workspace, missing, {"after": [record(log)], "on_failure": [record(log)]})
    done = workspace.run("backup", "app")
    assert done.returncode != 0
    assert log.read_text().splitlines() == ["on_failure policy"]

    tree = tmp_path / "tree"
    tree.mkdir()
    write(workspace, tree, {"before": ["sleep 30"], "timeout": "1s"})
    done = workspace.run("backup", "app", timeout=60)
    assert done.returncode == 1 and "did not finish within 1s" in done.stderr, done.stderr
