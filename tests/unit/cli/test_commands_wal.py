"""`backupctl wal archive-command`: the line an operator sets is the one doctor recognises."""

from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path

from backupctl.pitr import archive_command as ac
from tests.fixtures.core import Workspace
from tests.unit.test_scheduling import run_cli


def _policy(space: Workspace, archiver: dict[str, object] | None) -> None:
    pitr: dict[str, object] = {} if archiver is None else {"archiver": archiver}
    url = "postgresql://backup@db.example.net/shop"
    sources = [{"name": "db", "type": "postgres", "url": url, "pitr": pitr}]
    targets = [{"name": "local", "type": "local", "path": str(space.root / "backups")}]
    space.write_policy("shop", space.base_policy("shop", sources, targets, schedule="15 2 * * *"))


def test_the_printed_line_is_the_shell_line_with_the_servers_spool(workspace: Workspace) -> None:
    _policy(workspace, {"spool": "~/backupctl spool", "user": "postgres"})
    done = run_cli(workspace, "wal", "archive-command", "shop", "--source", "db")
    assert done.returncode == 0, done.stderr
    prefix = "archive_command = '"
    assert done.stdout.startswith(prefix) and done.stdout.endswith("'\n")
    value = done.stdout[len(prefix) : -2].replace("''", "'")
    parsed = ac.parse(value)
    home = pwd.getpwnam("postgres").pw_dir  # `~` is the server user's, as for the archiver
    assert parsed is not None and parsed.fast
    assert (parsed.policy, parsed.source, parsed.spool) == ("shop", "db", f"{home}/backupctl spool")
    # the server runs it in its own directory and PATH: an absolute program, and this
    # installation's directories (the policy, the signing key) as absolute options
    fallback = shlex.split(value.rsplit("exec ", 1)[1].replace("%%", "%"))
    assert os.path.isabs(fallback[0])
    words = fallback[: fallback.index("wal")]
    options = {name: words[words.index(name) + 1] for name in ("--policies", "--state-dir", "--keys-dir")}
    assert all(os.path.isabs(path) for path in options.values())
    assert Path(options["--policies"]) == (workspace.root / "policies").absolute()
    sql = run_cli(workspace, "wal", "archive-command", "shop", "--source", "db", "--sql")
    assert sql.stdout.startswith("ALTER SYSTEM SET archive_command = '") and "pg_reload_conf()" in sql.stdout


def test_without_an_archiver_the_plain_push_is_printed(workspace: Workspace) -> None:
    _policy(workspace, None)
    done = run_cli(workspace, "wal", "archive-command", "shop", "--source", "db")
    assert done.returncode == 0, done.stderr
    parsed = ac.parse(done.stdout.split("= ", 1)[1].strip().strip("'"))
    assert parsed is not None and (parsed.policy, parsed.source, parsed.spool, parsed.fast) == (
        "shop", "db", None, False)  # fmt: skip
    assert done.stdout.strip().endswith('wal push shop --source db "%p" "%f"\'')
