"""An example in every command's `--help`, and optional arguments shown as optional.

Applied to each command as the lazy group loads it (cli/main.py), so command modules stay as
they are: a command whose help already shows a `backupctl ...` line keeps its own; the others get
the example below as their epilog. An optional argument with an explicit metavar (`POLICY`) is
shown as `[POLICY]` (click only brackets metavars it makes itself).
"""

from __future__ import annotations

import click

EXAMPLES: dict[str, list[str]] = {
    "backup": ["backupctl backup shop", "backupctl backup -q shop --json > result.json"],
    "catalog rebuild": ["backupctl catalog rebuild --target offsite"],
    "daemon": ["backupctl daemon            # every policy's backup and drill schedule, in the foreground"],
    "doctor": ["backupctl doctor", "backupctl doctor shop --json"],
    "drill": ["backupctl drill drills/shop.yaml --from offsite"],
    "drills": ["backupctl drills", "backupctl drills shop --json"],
    "keys generate": ["backupctl keys generate"],
    "keys rotate": ["backupctl keys rotate"],
    "policy example": ["backupctl policy example --name app > policies/app.yaml"],
    "policy reference": ["backupctl policy reference > docs/policy-reference.md"],
    "policy show": ["backupctl policy show shop --json"],
    "policy validate": ["backupctl policy validate", "backupctl policy validate policies/app.yaml --json"],
    "prune": ["backupctl prune shop --dry-run"],
    "replicate": ["backupctl replicate shop"],
    "restore": [
        "backupctl restore shop latest --source shop-db --to-db postgresql://postgres@db1/postgres \\\n"
        "      --as shop_copy",
        "backupctl restore shop latest --source uploads --to-dir /tmp/uploads",
        "backupctl restore shop latest --source shop-db --to-container shop-db-1 \\\n"
        "      --to-db mysql://root@localhost/shop --as shop_copy",
    ],
    "schedule install": ["backupctl schedule install --dry-run"],
    "schedule list": ["backupctl schedule list"],
    "schedule remove": ["backupctl schedule remove"],
    "snapshots": ["backupctl snapshots shop", "backupctl snapshots shop --all --json"],
    "status": ["backupctl status", "backupctl status shop --json"],
    "target setup": ["backupctl target setup shop offsite"],
    "verify": ["backupctl verify shop latest", "backupctl verify shop latest --target offsite"],
    "binlog collect": ["backupctl binlog collect shop --source shop-db --watch"],
    "binlog drill": ["backupctl binlog drill shop --source shop-db --at random"],
    "binlog prune": ["backupctl binlog prune shop --source shop-db --dry-run"],
    "binlog restore": [
        "backupctl binlog restore shop --source shop-db --to-time 2026-12-06T05:30:00Z \\\n"
        "      --to-db mysql://root@127.0.0.1/shop_at_0530 --create",
    ],
    "binlog status": ["backupctl binlog status shop --source shop-db --json"],
    "binlog verify": ["backupctl binlog verify shop --source shop-db"],
    "wal fetch": ["backupctl wal fetch shop --source db %f %p     restore_command (wal restore writes it)"],
    "wal push": ["backupctl wal push shop --source db %p %f      archive_command in postgresql.conf"],
}


def polish(command: click.Command, path: str) -> click.Command:
    """Add the example for `path` (e.g. "policy show") and bracket optional arguments; recurse into groups."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            polish(sub, f"{path} {name}")
        return command
    for param in command.params:
        optional = isinstance(param, click.Argument) and not param.required
        if optional and param.metavar and not param.metavar.startswith("["):
            param.metavar = f"[{param.metavar}]"
    shown = (command.help or "") + "\n" + (command.epilog or "")
    examples = EXAMPLES.get(path)
    if examples and not any(line.strip().startswith("backupctl ") for line in shown.splitlines()):
        command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)
    return command
