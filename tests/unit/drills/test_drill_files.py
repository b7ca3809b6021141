"""Drill files as first-class config: the example validates, the reference is current, and
every key added for real applications has a bad-file case that names file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backupctl.drills.example import example_yaml, reference_markdown
from backupctl.drills.loader import load_drill_for_validation
from backupctl.errors import PolicyInvalid

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "drill.yaml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_the_example_validates_and_uses_every_new_feature(tmp_path: Path) -> None:
    drill = load_drill_for_validation(write(tmp_path, example_yaml()))
    assert drill.post_restore[0].sql and drill.post_restore[1].command
    assert drill.checks[0].type == "http" and drill.checks[0].timeout is not None


def test_drill_reference_is_generated_from_the_schema() -> None:
    current = (ROOT / "docs" / "drill-reference.md").read_text()
    assert current.strip() == reference_markdown().strip(), (
        "docs/drill-reference.md is stale: run `backupctl drill reference > docs/drill-reference.md`"
    )


def test_shipped_drill_files_validate() -> None:
    for path in sorted((ROOT / "drills").glob("*.yaml")):
        load_drill_for_validation(path)


# (what to replace in the example, its replacement, the dotted key, what the message says)
BAD = [
    ("      timeout: 90s\n", "      timeout: 90s\n      command: [wp-ready]\n",
     "services[1].ready.command", "not both"),
    ("      http: /wp-login.php", "      http: http://prod.example/wp-login.php",
     "services[1].ready.http", "starting with /"),
    ("    command: [test, -r, /etc/wordpress/config-default.php]", "    command: []",
     "post_restore[1].command", "at least 1"),
    ("  - name: app-config\n    service: app\n", "  - name: app-config\n    service: nowhere\n",
     "post_restore[1].service", "not defined"),
    ("    command: [test, -r, /etc/wordpress/config-default.php]\n", "",
     "post_restore[1]", "needs `sql` or `command`"),
    ("    database: wordpress\n    sql:", "    sql:", "post_restore[0].sql", "needs the `database`"),
    ("  - name: staging-url\n    service: db\n", "  - name: staging-url\n    service: app\n",
     "post_restore[0].service", "database service"),
    ("  - name: app-config\n    service: app\n", "  - name: app-config\n    service: app\n    database: x\n",
     "post_restore[1].database", "goes with `sql`"),
    ("  - name: app-config\n", "  - name: staging-url\n", "post_restore[1].name", "duplicate"),
    ("    command: [test, -r, /etc/wordpress/config-default.php]\n",
     "    command: [test, -r, /etc/wordpress/config-default.php]\n    exit_code: zero\n",
     "post_restore[1].exit_code", "integer"),
    ("    timeout: 20s ", "    timeout: soon ", "checks[0].timeout", "not a duration"),
    ("        timeout: 30s\n", "        timeout: 30 seconds\n",
     "checks[1].steps[2].timeout", "not a duration"),
    ("          not_contains: [There has been a critical error]", "          not_contains: {a: b}",
     "checks[0].steps[0].expect.not_contains", "valid"),
    ("          contains: [Hello world!, wp-content]", "          contains: 42",
     "checks[0].steps[0].expect.contains", "valid"),
    ("          headers: {Content-Type: text/html}", "          headers: [Content-Type]",
     "checks[0].steps[0].expect.headers", "dictionary"),
    ("          headers: {Content-Type: text/html}", "          sha256: not-a-digest",
     "checks[0].steps[0].expect.sha256", "pattern"),
    ('save: {test_cookie: "header:Set-Cookie"}', "save: [header]", "checks[1].steps[0].save", "dictionary"),
]


@pytest.mark.parametrize(("old", "new", "key", "message"), BAD, ids=[f"{case[2]}:{case[3]}" for case in BAD])
def test_bad_drill_files_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    text = example_yaml()
    assert old in text, old
    bad = text.replace(old, new, 1)
    path = write(tmp_path, bad)
    with pytest.raises(PolicyInvalid) as caught:
        load_drill_for_validation(path)
    issues = [i for i in caught.value.issues if i.path == key or i.path.startswith(key + ".")]
    assert issues, [issue.render() for issue in caught.value.issues]
    issue = issues[0]
    assert issue.file == str(path) and issue.line is not None
    assert message.lower() in issue.message.lower(), issue.render()
    # The line is where the key (or its parent item) is written.
    assert re.search(r"drill\.yaml:\d+: at '", issue.render())
    lines = bad.splitlines()
    assert 1 <= issue.line <= len(lines)
