"""`backupctl drill validate|example|reference` and `policy validate` checking a policy's drill_file."""

from __future__ import annotations

import json

from tests.fixtures.core import Workspace


def test_drill_validate_example_and_bad_file(workspace: Workspace) -> None:
    example = workspace.run("drill", "example", check=True).stdout
    path = workspace.root / "blog.yaml"
    path.write_text(example)
    done = workspace.run("drill", "validate", str(path))
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
    path.write_text(example.replace("  - name: app-config\n    service: app\n", "  - name: app-config\n"
                                    "    service: nowhere\n"))  # fmt: skip
    done = workspace.run("drill", "validate", str(path), "--json")
    assert done.returncode == 2
    issue = json.loads(done.stdout)["issues"][0]
    step_line = example.count("\n", 0, example.index("  - name: app-config")) + 1
    assert issue["path"] == "post_restore[1].service" and issue["line"] == step_line + 1


def test_policy_validate_checks_its_drill_file_and_files_symlinks(workspace: Workspace) -> None:
    content = workspace.root / "content"
    content.mkdir()
    policy = workspace.base_policy("blog", [{"name": "content", "type": "files", "path": str(content)}])
    policy["drill_file"] = "../blog-drill.yaml"  # drills live next to, not among, the policies
    workspace.write_policy("blog", policy)
    drill = workspace.run("drill", "example", check=True).stdout.replace("sql: UPDATE", "sequel: UPDATE")
    (workspace.policies.parent / "blog-drill.yaml").write_text(drill)
    done = workspace.run("policy", "validate", "--json")
    assert done.returncode == 2
    issues = json.loads(done.stdout)["issues"]
    in_drill = [i for i in issues if i["file"].endswith("blog-drill.yaml")]
    assert any(i["path"].startswith("post_restore[0]") and i["line"] for i in in_drill), issues

    policy["sources"][0]["symlinks"] = "sometimes"
    policy.pop("drill_file")
    workspace.write_policy("blog", policy)
    done = workspace.run("policy", "validate", "--json")
    assert done.returncode == 2
    issue = json.loads(done.stdout)["issues"][0]
    assert issue["path"] == "sources[0].symlinks" and issue["line"], issue
