"""doctor's archive_command checks: the plain line and the shell line both archive with backupctl;
with an archiver, the shell line is the one without a warning; the fix is a valid conf literal."""

from __future__ import annotations

import os

from backupctl.actions.doctor_pitr import ServerFacts, archive_command_for, pitr_findings
from backupctl.pitr.archive_command import archive_command, conf_literal
from backupctl.policy.loader import load_policy
from backupctl.policy.schema import Policy, PostgresSource
from tests.fixtures.core import Workspace


def _load(space: Workspace, spool: str | None) -> tuple[Policy, PostgresSource]:
    pitr: dict[str, object] = {"archive_timeout": "60s"}
    if spool is not None:
        pitr["archiver"] = {"spool": spool, "user": "postgres"}
    url = "postgresql://backup@db.example.net/shop"
    sources = [{"name": "db", "type": "postgres", "url": url, "pitr": pitr}]
    targets = [{"name": "local", "type": "local", "path": str(space.root / "backups")}]
    path = space.write_policy("shop", space.base_policy("shop", sources, targets, schedule="15 2 * * *"))
    policy = load_policy(path, check_secrets=False).policy
    source = policy.source("db")
    assert isinstance(source, PostgresSource)
    return policy, source


def _findings(policy: Policy, source: PostgresSource, command: str) -> dict[str, tuple[str, str]]:
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_timeout": "60s",
                "max_wal_senders": "4", "archive_command": command}  # fmt: skip
    facts = ServerFacts(settings, True, True, False, archiver_pid=4242)
    return {f.detail: (f.level, f.fix) for f in pitr_findings(policy, source, facts)}


def test_both_lines_archive_with_backupctl_a_foreign_one_gets_the_shell_line(workspace: Workspace) -> None:
    spool = str(workspace.root / "spool")
    os.makedirs(spool, mode=0o700)
    policy, source = _load(workspace, spool)
    shell = archive_command("shop", "db", spool, program="/usr/local/bin/backupctl")
    plain = f"backupctl wal push shop --source db --spool {spool} %p %f"
    for command in (shell, plain, "backupctl wal push shop --source db %p %f"):
        assert _findings(policy, source, command)[f"archive_command = {command}"][0] == "ok"
    with_shell = _findings(policy, source, shell)
    assert with_shell[f"archive_command reads the archiver's spool {spool}"][0] == "ok"
    with_plain = [(level, fix) for detail, (level, fix) in _findings(policy, source, plain).items()
                  if detail.startswith("archive_command reads the archiver's spool")]  # fmt: skip
    assert with_plain == [("WARN", with_plain[0][1])]
    assert conf_literal(archive_command_for("shop", source)) in with_plain[0][1]
    foreign = _findings(policy, source, "cp %p /mnt/archive/%f")
    level, fix = foreign["archive_command = 'cp %p /mnt/archive/%f' does not archive with backupctl"]
    assert level == "FAIL" and "identity" in fix and "wal archive-command shop --source db" in fix
    other_policy = _findings(policy, source, shell.replace("wal push shop", "wal push crm"))
    assert any(detail.endswith("does not archive with backupctl") for detail in other_policy)


def test_a_spool_others_can_write_fails_doctor(workspace: Workspace) -> None:
    spool = workspace.root / "open spool"
    spool.mkdir()
    spool.chmod(0o777)
    policy, source = _load(workspace, str(spool))
    findings = _findings(policy, source, archive_command("shop", "db", str(spool)))
    [(detail, (level, fix))] = [(d, f) for d, f in findings.items() if d.startswith(f"the spool {spool}")]
    assert level == "FAIL" and "not private to postgres" in detail and "chmod 0700" in fix
