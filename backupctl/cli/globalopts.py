"""Global options anywhere on the command line: `backupctl backup -q app` = `backupctl -q backup app`.

click only accepts a group's options before the subcommand. `hoist` rewrites argv before click
parses it: the group's options found after the subcommand move in front of it, unless the
subcommand defines an option of the same name (then it is the subcommand's). `--json`, which
every data command defines itself, moves the other way: given before the subcommand it goes to
the end. Everything after `--` is left alone.
"""

from __future__ import annotations

import click


def _option_table(command: click.Command) -> dict[str, bool]:
    """Option spelling → whether it takes a value, for every option of `command`."""
    table: dict[str, bool] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in [*param.opts, *param.secondary_opts]:
                table[name] = not (param.is_flag or param.count)
    return table


def hoist(group: click.Group, argv: list[str]) -> list[str]:
    """`argv` with global options moved before the subcommand (pure apart from loading commands)."""
    global_options = _option_table(group)
    global_options.pop("--help", None)
    global_options.pop("--version", None)
    ctx = click.Context(group)
    front: list[str] = []
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "--":  # before the command
        token = argv[index]
        front.append(token)
        if global_options.get(token.split("=", 1)[0]) and "=" not in token and index + 1 < len(argv):
            index += 1
            front.append(argv[index])
        index += 1
    json_before = "--json" in front
    front = [token for token in front if token != "--json"]
    command: click.Command = group
    path: list[str] = []
    while index < len(argv) and isinstance(command, click.Group) and not argv[index].startswith("-"):
        found = command.get_command(ctx, argv[index])
        if found is None:
            return argv  # unknown command: let click report it
        command = found
        path.append(argv[index])
        index += 1
    own = _option_table(command)
    hoisted: list[str] = []
    rest: list[str] = []
    tail = argv[index:]
    position = 0
    while position < len(tail):
        token = tail[position]
        if token == "--":
            rest += tail[position:]
            break
        name = token.split("=", 1)[0]
        if name in global_options and name not in own:
            hoisted.append(token)
            if global_options[name] and "=" not in token and position + 1 < len(tail):
                position += 1
                hoisted.append(tail[position])
        elif name.startswith("-") and not name.startswith("--") and len(name) > 2 and set(name[1:]) <= {"v"}:
            hoisted.append(token)  # -vv
        else:
            rest.append(token)
            if own.get(name) and "=" not in token and position + 1 < len(tail):
                position += 1
                rest.append(tail[position])
        position += 1
    if json_before and "--json" in own and "--json" not in rest:
        rest.append("--json")
    elif json_before:
        front.append("--json")  # not a data command: let click say so
    return [*front, *hoisted, *path, *rest]
