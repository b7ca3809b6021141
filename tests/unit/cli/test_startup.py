"""Start-up cost: importing the CLI must not load the heavy libraries that only some commands use."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("rich", "sqlalchemy", "boto3", "paramiko", "docker")


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = (
        "import sys, backupctl.cli.main; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_command_is_found_in_the_module_that_defines_it() -> None:
    """cli/main.py imports a command's module only when the command runs: its table of
    command → module must name exactly the commands the modules define."""
    import importlib

    from backupctl.cli.main import COMMAND_MODULES, cli

    defined = {
        command.name: module
        for module in set(COMMAND_MODULES.values())
        for command in importlib.import_module(f"backupctl.cli.{module}").COMMANDS
    }
    assert defined == COMMAND_MODULES
    assert sorted(cli.list_commands(None)) == sorted(defined)  # type: ignore[arg-type]


def test_a_mistyped_command_gets_a_suggestion() -> None:
    result = subprocess.run([sys.executable, "-m", "backupctl", "bakup"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "No such command 'bakup'. Did you mean 'backup'?" in result.stderr
