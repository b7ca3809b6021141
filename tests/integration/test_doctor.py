"""`backupctl doctor` through the real CLI: a healthy host, a missing tool, a leaky key, a dead target."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.core import Workspace
from tests.fixtures.postgres import PgDatabase

# Until cli/main.py registers the command, add it here; afterwards this is a no-op re-registration.
RUN_CLI = (
    "from backupctl.cli.main import cli, main\n"
    "from backupctl.cli.commands_doctor import COMMANDS\n"
    "for command in COMMANDS:\n"
    "    cli.add_command(command)\n"
    "main()\n"
)


def doctor(space: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `backupctl doctor ARGS` as a subprocess with the workspace's environment."""
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, "doctor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **space.env},
        timeout=60,
        check=False,
    )


def findings(space: Workspace, *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = doctor(space, *args, "--json")
    report = json.loads(done.stdout)
    assert report["ok"] == (done.returncode == 0)
    return done.returncode, report["findings"]


def failures(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if item["level"] == "FAIL"]


def pg_policy(space: Workspace, database: PgDatabase, **source: Any) -> None:
    space.env["DOCTOR_DB_PASSWORD"] = database.password
    space.write_policy(
        "shop",
        space.base_policy(
            "shop",
            [{"name": "db", "type": "postgres", "url": database.url, "password": "env:DOCTOR_DB_PASSWORD",
              **source}],
        ),
    )  # fmt: skip


def files_policy(space: Workspace, targets: list[dict[str, Any]] | None = None) -> None:
    tree = space.root / "tree"
    tree.mkdir(exist_ok=True)
    space.write_policy("files", space.base_policy("files", [{"name": "tree", "type": "files",
                                                            "path": str(tree)}], targets))  # fmt: skip


def test_healthy_policy_exits_zero(workspace: Workspace, pg_database: PgDatabase) -> None:
    pg_policy(workspace, pg_database)
    done = doctor(workspace, "shop")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    code, items = findings(workspace, "shop")
    assert code == 0 and not failures(items)
    checks = {item["check"] for item in items if item["ok"]}
    assert {"signing key", "shop/local: target", "shop/local: space", "shop/db: postgres tools"} <= checks
    versions = [item["detail"] for item in items if ">= server" in item["detail"]]
    assert versions, items  # pg_dump's major was compared with the server's
    assert any(item["detail"].startswith("clock agrees with") for item in items)


def test_missing_tool_fails_with_fix(workspace: Workspace, pg_database: PgDatabase) -> None:
    pg_policy(workspace, pg_database, pg_dump=str(workspace.root / "no-such" / "pg_dump"))
    done = doctor(workspace)
    assert done.returncode == 1
    assert "no-such/pg_dump not found" in done.stdout
    assert "install the PostgreSQL client" in done.stdout
    _, items = findings(workspace)
    [failed] = failures(items)
    assert failed["check"] == "shop/db: postgres tools" and "postgresql-client" in failed["fix"]


def test_world_readable_key_fails(workspace: Workspace) -> None:
    files_policy(workspace)
    key = workspace.keys / "signing-ed25519.key"
    key.chmod(0o644)
    done = doctor(workspace, "files")
    assert done.returncode == 1
    assert f"chmod 600 {key}" in done.stdout
    _, items = findings(workspace, "files")
    assert [item["check"] for item in failures(items)] == ["signing key"]


def test_world_readable_identity_fails(workspace: Workspace) -> None:
    files_policy(workspace)
    identity = workspace.keys / "age-identity.txt"
    identity.chmod(0o644)
    code, items = findings(workspace)
    assert code == 1
    [failed] = failures(items)
    assert failed["check"] == "files: secret encryption.identity"
    assert failed["fix"] == f"chmod 600 {identity}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_target_fails_with_fix(workspace: Workspace) -> None:
    workspace.env.update({"DOCTOR_AK": "doctor-access", "DOCTOR_SK": "doctor-secret-key"})
    files_policy(
        workspace,
        [
            {"name": "local", "type": "local", "path": str(workspace.backups)},
            {"name": "offsite", "type": "s3", "bucket": "nowhere", "region": "us-east-1",
             "endpoint_url": f"http://127.0.0.1:{closed_port()}", "versioning": "optional",
             "access_key_id": "env:DOCTOR_AK", "secret_access_key": "env:DOCTOR_SK"},
        ],
    )  # fmt: skip
    done = doctor(workspace, "files")
    assert done.returncode == 1, done.stdout
    assert "unreachable" in done.stdout and "check endpoint_url" in done.stdout
    _, items = findings(workspace, "files")
    [failed] = failures(items)
    assert failed["check"] == "files/offsite: target" and failed["fix"].startswith("check endpoint_url")


def test_json_output_parses(workspace: Workspace) -> None:
    files_policy(workspace)
    done = doctor(workspace, "--json")
    report = json.loads(done.stdout)
    assert set(report) == {"schema", "ok", "findings"} and report["schema"] == "backupctl.doctor/1"
    for item in report["findings"]:
        assert set(item) == {"check", "ok", "detail", "fix", "warn", "level"}
        assert item["level"] in ("ok", "WARN", "FAIL")
        assert item["ok"] or item["fix"]


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_modes_pass(workspace: Workspace, mode: int) -> None:
    files_policy(workspace)
    (workspace.keys / "signing-ed25519.key").chmod(mode)
    code, items = findings(workspace, "files")
    assert code == 0, failures(items)


def test_unknown_policy_is_a_usage_error(workspace: Workspace) -> None:
    files_policy(workspace)
    done = doctor(workspace, "nope")
    assert done.returncode == 2 and "no policy named 'nope'" in done.stderr


def test_pure_findings() -> None:
    from datetime import UTC, datetime, timedelta

    from backupctl.actions import doctor as d

    assert d.parse_major("pg_dump (PostgreSQL) 16.2 (Debian 16.2-1.pgdg120+2)") == 16
    assert d.parse_major("pg_dump (PostgreSQL) 9.6.24") == 9
    old = d.pg_version_finding("t", "pg_dump", 15, 16)
    assert old.failed and "postgresql-client-16" in old.fix
    assert d.pg_version_finding("t", "pg_dump", 17, 16).ok
    assert d.free_space_finding("s", "/x", 50 << 20).failed
    assert d.free_space_finding("s", "/x", 500 << 20).level == "WARN"
    assert d.free_space_finding("s", "/x", 5 << 30).ok
    now = datetime.now(UTC)
    assert d.clock_finding(now + timedelta(hours=1), now, "c").failed
    assert d.clock_finding(now - timedelta(hours=1), now, "c").ok
    assert d.skew_finding(now + timedelta(minutes=6), now, "db").level == "WARN"
    assert d.mode_finding("k", Path("/k"), 0o640, "gen").fix == "chmod 600 /k"
