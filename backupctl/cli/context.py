"""The object click passes to every command, and options defined once and reused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from backupctl.cli.output import CliEvents
from backupctl.core.durations import parse_duration
from backupctl.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from backupctl.policy.loader import LoadedPolicy


@dataclass
class App:
    settings: Settings
    verbosity: int

    def policy(self, name: str, *, check_secrets: bool = True) -> LoadedPolicy:
        # Imported here: the schema (pydantic) costs start-up time that commands without a
        # policy (snapshots, catalog, keys, --help) need not pay.
        from backupctl.policy.loader import find_policy

        return find_policy(name, self.settings.policies, check_secrets=check_secrets)

    def events(self) -> CliEvents:
        return CliEvents(self.verbosity)

    @property
    def quiet(self) -> bool:
        """`-q`: print only errors (cron mails nothing on success). --json output still prints."""
        return self.verbosity < 0

    def echo(self, text: str) -> None:
        """A human result line on stdout, unless `-q`."""
        if not self.quiet:
            click.echo(text)


pass_app = click.make_pass_decorator(App)


class _DurationType(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
    name = "DURATION"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


DURATION = _DurationType()
wait_option = click.option(
    "--wait",
    type=DURATION,
    default=None,
    metavar="DURATION",
    help="If another backup/prune/drill of the policy runs, wait up to this long (default: exit 1 at once).",
)

def parse_jobs(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """`auto` → 0 (one per CPU, decided by the source), else an integer from 1 to 64."""
    if value.strip().lower() == "auto":
        return 0
    try:
        jobs = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a number") from None
    if not 1 <= jobs <= 64:
        raise click.BadParameter(f"{jobs} is not in 1-64")
    return jobs


def jobs_option(where: str) -> Callable[[F], F]:
    """`--jobs auto|N` for commands that restore PostgreSQL dumps (`where`: how that command
    spools the dump for a parallel pg_restore)."""
    return click.option(
        "--jobs",
        metavar="auto|N",
        default="auto",
        callback=parse_jobs,
        show_default=True,
        help=f"Parallel restore jobs: 'auto' (one per CPU, at most 8) or 1-64. {where}",
    )


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
identity_option = click.option(
    "--identity",
    "identity_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="age identity file to decrypt with (default: the policy's encryption.identity).",
)
