"""Malformed policies: exit 2, a message naming file and line, and nothing written anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.core import Workspace

GOOD = """\
name: bad
objectives:
  rpo: 24h
  rto: 1h
schedule: "15 2 * * *"
encryption:
  recipients:
    - file:{keys}/age-recipient.txt
sources:
  - name: db
    type: sqlite
    path: /tmp/does-not-matter.db
targets:
  - name: local
    type: local
    path: {backups}
"""

# (case id, edit to apply to GOOD, expected line, expected text in the message)
CASES = [
    ("bad-yaml", lambda t: t.replace("  rto: 1h", "  rto: [1h"), 5, "flow sequence on line 4"),
    ("unknown-key", lambda t: t.replace("schedule:", "schedul:"), 5, "did you mean 'schedule'"),
    (
        "wrong-type",
        lambda t: t.replace("    path: /tmp/does-not-matter.db", "    path: [1, 2]"),
        12,
        "sources[0].path",
    ),
    (
        "duplicate-name",
        lambda t: t.replace("targets:\n", "  - name: db\n    type: sqlite\n    path: /tmp/b.db\ntargets:\n"),
        13,
        "duplicate source name 'db'",
    ),
    (
        "literal-password",
        lambda t: t.replace(
            "    path: /tmp/does-not-matter.db",
            "    path: /tmp/x.db\n  - name: pg\n    type: postgres\n"
            "    url: postgresql://u@h/db\n    password: hunter2",
        ),
        16,
        "literal secrets are not allowed",
    ),
    (
        "missing-secret-file",
        lambda t: t.replace(
            "    path: /tmp/does-not-matter.db",
            "    path: /tmp/x.db\n  - name: pg\n    type: postgres\n"
            "    url: postgresql://u@h/db\n    password: file:/nonexistent/pw",
        ),
        16,
        "does not exist",
    ),
    ("world-readable-secret", None, 16, "must not be accessible by group or others"),
    (
        "missing-target",
        lambda t: t.replace("    path: /tmp/does-not-matter.db", "    path: /tmp/x.db\n    targets: [locl]"),
        13,
        "did you mean 'local'",
    ),
    ("bad-duration", lambda t: t.replace("rpo: 24h", "rpo: 24 hours"), 3, "not a duration"),
    ("bad-cron", lambda t: t.replace('"15 2 * * *"', '"61 2 * * *"'), 5, "minute 61 is outside 0-59"),
    ("unknown-source-type", lambda t: t.replace("type: sqlite", "type: sqlit"), 11, "did you mean 'sqlite'"),
    (
        "password-in-url",
        lambda t: t.replace(
            "    path: /tmp/does-not-matter.db",
            "    path: /tmp/x.db\n  - name: pg\n    type: postgres\n    url: postgresql://u:secret@h/db",
        ),
        13,
        "literal password",
    ),
    ("no-targets", lambda t: t.split("targets:")[0] + "targets: []\n", 13, "needs at least 1 entry"),
    (
        "missing-drill-file",
        lambda t: t.replace("encryption:", "drill_file: ../drills/nope.yaml\nencryption:"),
        6,
        "drills/nope.yaml does not exist",
    ),
]


def _render(space: Workspace, case: str) -> str:
    text = GOOD
    for id_, edit, _, _ in CASES:
        if id_ == case and edit is not None:
            text = edit(text)
    if case == "world-readable-secret":
        secret = space.root / "pw"
        secret.write_text("hunter2\n")
        os.chmod(secret, 0o644)
        text = text.replace(
            "    path: /tmp/does-not-matter.db",
            f"    path: /tmp/x.db\n  - name: pg\n    type: postgres\n"
            f"    url: postgresql://u@h/db\n    password: file:{secret}",
        )
    return text.format(keys=space.keys, backups=space.backups)


@pytest.mark.parametrize(("case", "line", "text"), [(c[0], c[2], c[3]) for c in CASES if c[3]])
def test_malformed_policy_exit_2_with_file_and_line(
    workspace: Workspace, case: str, line: int, text: str
) -> None:
    workspace.policies.mkdir(parents=True)
    path = workspace.policies / "bad.yaml"
    path.write_text(_render(workspace, case))
    before = sorted(p for p in workspace.root.rglob("*"))

    validate = workspace.run("policy", "validate", str(path))
    assert validate.returncode == 2, validate.stderr
    assert f"{path}:{line}:" in validate.stderr, validate.stderr
    assert text in validate.stderr, validate.stderr

    backup = workspace.run("backup", "bad")
    assert backup.returncode == 2, backup.stderr
    assert f"{path}:{line}:" in backup.stderr
    assert not workspace.backups.exists(), "a bad policy must not write backups"
    assert not (workspace.state / "catalog.sqlite").exists(), "a bad policy must not touch the catalog"
    assert sorted(p for p in workspace.root.rglob("*")) == before


def test_every_error_reported_at_once(workspace: Workspace) -> None:
    workspace.policies.mkdir(parents=True)
    path = workspace.policies / "bad.yaml"
    text = (
        _render(workspace, "bad-duration")
        .replace("schedule:", "schedul:")
        .replace("type: local", "type: locl")
    )
    path.write_text(text)
    done = workspace.run("policy", "validate", "--json", str(path))
    assert done.returncode == 2
    import json

    issues = json.loads(done.stdout)["issues"]
    paths = {issue["path"] for issue in issues}
    assert {"objectives.rpo", "schedul", "targets[0].type"} <= paths, issues
    assert all(issue["line"] for issue in issues)


def test_example_policy_is_valid_as_printed(workspace: Workspace, tmp_path: Path) -> None:
    example = workspace.run("policy", "example", check=True).stdout
    path = tmp_path / "example.yaml"
    path.write_text(example)
    done = workspace.run("policy", "validate", str(path))
    assert done.returncode == 0, done.stderr
