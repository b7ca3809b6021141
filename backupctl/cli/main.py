"""Entry point: global options, error → exit code mapping, signal handling."""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import signal
import sys
from types import FrameType

import click

from backupctl import __version__
from backupctl.cli.context import App
from backupctl.cli.examples import polish
from backupctl.cli.globalopts import hoist
from backupctl.cli.output import setup_logging
from backupctl.core.secrets import mask
from backupctl.errors import EXIT_CONFIG, EXIT_FAILED, BackupctlError, PolicyInvalid
from backupctl.settings import Settings

log = logging.getLogger("backupctl")

EPILOG = """\b
Exit codes:
  0  success
  1  a job failed (backup, restore, verify found a problem)
  2  bad usage or configuration (nothing was written)
  3  partial: the snapshot is complete on some targets and failed on others
\b
Environment: BACKUPCTL_POLICIES, BACKUPCTL_STATE_DIR, BACKUPCTL_CATALOG, BACKUPCTL_KEYS_DIR, NO_COLOR.
Docs: README.md and docs/ (policies, break-glass restore, formats).
"""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM so that every cleanup handler runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


# Which module defines each command. A command's module (and what it imports: cryptography
# for `keys`, the scheduler for `schedule`, ...) is imported only when that command runs, or
# for --help; tests/unit/cli/test_startup.py checks this table against the modules' COMMANDS.
COMMAND_MODULES = {
    "backup": "commands_backup",
    "snapshots": "commands_backup",
    "verify": "commands_backup",
    "restore": "commands_backup",
    "catalog": "commands_catalog",
    "doctor": "commands_doctor",
    "drill": "commands_drill",
    "drills": "commands_drill",
    "keys": "commands_keys",
    "policy": "commands_policy",
    "prune": "commands_prune",
    "schedule": "commands_schedule",
    "daemon": "commands_schedule",
    "target": "commands_targets",
    "status": "commands_targets",
    "replicate": "commands_targets",
}


class _LazyGroup(click.Group):
    """click's documented pattern for lazily loaded subcommands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        commands: list[click.Command] = importlib.import_module(f"backupctl.cli.{module_name}").COMMANDS
        return polish(next(command for command in commands if command.name == cmd_name), cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # click suggests "Did you mean ...?" from the commands it has loaded, which here is none.
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as error:
            raise click.exceptions.NoSuchCommand(
                error.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None


@click.group(
    cls=_LazyGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--policies",
    metavar="DIR",
    help="Policy directory or file [env BACKUPCTL_POLICIES; "
    "default /etc/backupctl/policies as root, ./policies otherwise].",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    help="State directory: catalog and keys [env BACKUPCTL_STATE_DIR; "
    "default /var/lib/backupctl as root, ~/.local/state/backupctl otherwise].",
)
@click.option(
    "--catalog",
    metavar="URL",
    help="Catalog database URL, e.g. postgresql://... for a shared "
    "catalog [env BACKUPCTL_CATALOG; default SQLite in the state dir].",
)
@click.option(
    "--keys-dir", metavar="DIR", help="Key directory [env BACKUPCTL_KEYS_DIR; default STATE_DIR/keys]."
)
@click.option(
    "-v", "--verbose", count=True, help="More detail (debug logs, commands run with secrets masked)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.option("--log-json", is_flag=True, help="Log events as JSON lines (for log shippers).")
@click.version_option(__version__, prog_name="backupctl")
@click.pass_context
def cli(
    ctx: click.Context,
    policies: str | None,
    state_dir: str | None,
    catalog: str | None,
    keys_dir: str | None,
    verbose: int,
    quiet: bool,
    log_json: bool,
) -> None:
    """backupctl: backups you can prove.

    Declarative policies drive encrypted, compressed, streaming dumps of databases and file
    trees to local, NAS and off-site targets; every snapshot carries a signed manifest so that
    `verify` and `restore` can prove it is intact.

    \b
    First steps:
      backupctl keys generate                 create the age key pair and the signing key
      backupctl policy example > policies/app.yaml
      backupctl policy validate               check every policy: file:line for each problem
      backupctl backup app                    back up now
      backupctl verify app latest             prove the newest snapshot decrypts and matches
    """
    verbosity = -1 if quiet else verbose
    setup_logging(verbosity, log_json)
    ctx.obj = App(Settings.resolve(policies, state_dir, catalog, keys_dir), verbosity)


def main() -> None:
    # A run imports SQLAlchemy, pydantic and psycopg: hundreds of thousands of objects that live
    # until the end. Walking them in the collections at exit took ~90 ms of every command
    # (measured on the backup of a restic-only policy); frozen, the last collections skip them.
    # Connections and files are closed by their owners before (the catalog disposes its engine).
    atexit.register(gc.freeze)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        returned = cli.main(args=hoist(cli, sys.argv[1:]), standalone_mode=False)  # options anywhere
        if isinstance(returned, int) and not isinstance(returned, bool):
            sys.exit(returned)  # click returns Exit codes instead of raising in this mode
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_CONFIG if error.exit_code == 2 else error.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except PolicyInvalid as error:
        click.echo(f"error: {len(error.issues)} problem(s) in the configuration:", err=True)
        for issue in error.issues:
            click.echo("  " + mask(issue.render()), err=True)
        sys.exit(error.exit_code)
    except BackupctlError as error:
        click.echo(f"error: {mask(str(error))}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing incomplete was recorded as a snapshot", err=True)
        sys.exit(130 if not isinstance(sys.exc_info()[1], Terminated) else 143)
    except Exception as error:  # a bug: say so plainly, with the traceback at -v
        log.debug("internal error", exc_info=True)
        click.echo(
            f"internal error: {type(error).__name__}: {mask(str(error))} (run with -v for details)", err=True
        )
        sys.exit(EXIT_FAILED)
