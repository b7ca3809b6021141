"""The object click passes to every command, and options defined once and reused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from backupctl.cli.output import CliEvents
from backupctl.policy.loader import LoadedPolicy, find_policy
from backupctl.settings import Settings


@dataclass
class App:
    settings: Settings
    verbosity: int

    def policy(self, name: str, *, check_secrets: bool = True) -> LoadedPolicy:
        return find_policy(name, self.settings.policies, check_secrets=check_secrets)

    def events(self) -> CliEvents:
        return CliEvents(self.verbosity)


pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
identity_option = click.option(
    "--identity",
    "identity_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="age identity file to decrypt with (default: the policy's encryption.identity).",
)
