"""docs/json.md documents every command that has `--json` (the machine contract, issue #13)."""

from __future__ import annotations

from pathlib import Path

import click

from backupctl.cli.main import cli

ROOT = Path(__file__).resolve().parents[3]


def _json_commands(group: click.Group, context: click.Context, prefix: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if command is None:
            continue
        path = (*prefix, name)
        if isinstance(command, click.Group):
            found += _json_commands(command, context, path)
        elif any(param.name == "as_json" for param in command.params):
            found.append(" ".join(path))
    return found


def test_every_json_command_is_documented() -> None:
    docs = (ROOT / "docs" / "json.md").read_text()
    commands = _json_commands(cli, click.Context(cli), ())
    assert "backup" in commands and "policy validate" in commands
    missing = [command for command in commands if f"| `{command}`" not in docs]
    assert not missing, f"add these commands to the table in docs/json.md: {missing}"
