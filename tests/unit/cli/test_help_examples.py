"""Every command's --help shows an example whose options exist; optional arguments are bracketed;
global options are accepted after the subcommand."""

from __future__ import annotations

import re
import shlex

import click
import pytest
from click.testing import CliRunner

from backupctl.cli.globalopts import hoist
from backupctl.cli.main import cli


def all_commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []

    def walk(group: click.Group, prefix: list[str], ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                walk(command, [*prefix, name], click.Context(command, parent=ctx))
            else:
                found.append((" ".join([*prefix, name]), command))

    walk(cli, [], click.Context(cli))
    return found


COMMANDS = all_commands()


def test_every_command_is_covered() -> None:
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_help_has_an_example_with_real_options(path: str, command: click.Command) -> None:
    done = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert done.exit_code == 0, done.output
    examples = [
        line.strip() for line in done.output.splitlines() if line.strip().startswith(f"backupctl {path}")
    ]
    assert examples, f"`backupctl {path} --help` shows no example:\n{done.output}"
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    options |= {opt for param in cli.params for opt in getattr(param, "opts", [])}
    for example in examples:
        # Text after two spaces is a description ("backupctl drill shop      the policy's drill").
        words = shlex.split(re.split(r"\s{2,}", example)[0].rstrip("\\"), comments=True)
        for word in words:
            if word.startswith("-") and word not in (">",):
                assert word.split("=", 1)[0] in options, f"{example}: {word} is not an option of {path}"
    usage = done.output.split("\n\n", 1)[0]  # click wraps a long usage line
    for param in command.params:
        if isinstance(param, click.Argument) and not param.required:
            assert re.search(
                r"\[" + re.escape(param.make_metavar(click.Context(command)).strip("[]")), usage
            ), usage


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["backup", "-q", "app"], ["-q", "backup", "app"]),
        (["backup", "app", "--log-json", "-vv", "--json"], ["--log-json", "-vv", "backup", "app", "--json"]),
        (["policy", "show", "app", "--state-dir", "/s"], ["--state-dir", "/s", "policy", "show", "app"]),
        (["--json", "status"], ["status", "--json"]),
        (
            ["restore", "app", "--source", "-q", "--to-dir", "/x"],
            ["restore", "app", "--source", "-q", "--to-dir", "/x"],
        ),
        (["backup", "app", "--", "-q"], ["backup", "app", "--", "-q"]),
    ],
)
def test_global_options_after_the_subcommand(argv: list[str], expected: list[str]) -> None:
    assert hoist(cli, argv) == expected
