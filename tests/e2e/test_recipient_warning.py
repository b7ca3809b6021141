"""`policy validate` and `doctor` warn when no recipient matches an identity on this host."""

from __future__ import annotations

from pyrage import x25519

from tests.fixtures.core import Workspace


def _policy(space: Workspace, recipients: list[str], escrow: bool = False) -> None:
    data = space.base_policy(
        "app",
        [{"name": "files", "type": "files", "path": str(space.root)}],
        [{"name": "local", "type": "local", "path": str(space.backups)}],
    )
    data["encryption"] = {"recipients": recipients, "escrow": escrow}
    space.write_policy("app", data)


def test_foreign_recipient_warns_own_key_and_escrow_do_not(workspace: Workspace) -> None:
    foreign = str(x25519.Identity.generate().to_public())
    _policy(workspace, [foreign])
    done = workspace.run("policy", "validate")
    assert done.returncode == 0, done.stderr
    assert "warning: policy 'app': no recipient matches an age identity" in done.stderr
    assert workspace.run_json("policy", "validate")["warnings"]
    doctor = workspace.run("doctor", "app", "--json")
    assert "app: recipients" in doctor.stdout and "no recipient matches" in doctor.stdout

    _policy(workspace, [f"file:{workspace.keys / 'age-recipient.txt'}"])
    done = workspace.run("policy", "validate")
    assert done.returncode == 0 and "WARN" not in done.stderr, done.stderr

    _policy(workspace, [foreign], escrow=True)
    warnings = workspace.run_json("policy", "validate")["warnings"]
    assert not [warning for warning in warnings if "recipient" in str(warning)], warnings
