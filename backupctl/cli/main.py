"""Entry point: global options, error → exit code mapping, signal handling."""

from __future__ import annotations

import atexit
import errno
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from itertools import pairwise
from types import FrameType
from typing import NoReturn

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
    "binlog": "commands_binlog",
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
    "report": "commands_report",
    "evidence": "commands_evidence",
    "status": "commands_targets",
    "replicate": "commands_targets",
    "wal": "commands_wal",
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
    global _state_dir
    _state_dir = str(ctx.obj.settings.state_dir)


# The state directory of the running command, named when the system refuses a write there.
_state_dir: str | None = None


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
        code = EXIT_CONFIG if error.exit_code == 2 else error.exit_code
        _fail(code, error.format_message(), "usage", shown=error.show)
    except click.exceptions.Abort as aborted:
        # click turns Ctrl-C and SIGTERM (Terminated) inside a command into Abort: keep their
        # documented exit codes (130 / 143, docs/json.md).
        # Not for PostgreSQL's archive/restore commands: an exit status above 125 stops its
        # archiver or recovery (they say exit 1 on an interruption themselves; this covers the
        # moment before their body runs).
        cause = aborted.__cause__ or aborted.__context__
        if isinstance(cause, KeyboardInterrupt) and not _postgres_hook(sys.argv[1:]):
            message = "interrupted: nothing incomplete was recorded as a snapshot"
            _fail(143 if isinstance(cause, Terminated) else 130, message, "interrupted", text=message)
        _fail(EXIT_FAILED, "aborted", "aborted", text="aborted")
    except PolicyInvalid as error:
        lines = [f"error: {len(error.issues)} problem(s) in the configuration:"]
        lines += ["  " + mask(issue.render()) for issue in error.issues]
        issues = [{key: mask(str(v)) if isinstance(v, str) else v for key, v in i.as_dict().items()}
                  for i in error.issues]  # fmt: skip
        _fail(error.exit_code, mask(str(error)), "config", text="\n".join(lines), issues=issues)
    except BackupctlError as error:
        as_dict = getattr(getattr(error, "result", None), "as_dict", None)  # a partial backup's result
        result = as_dict() if callable(as_dict) else None
        _fail(error.exit_code, mask(str(error)), _kind(error), result=result)
    except KeyboardInterrupt:
        terminated = isinstance(sys.exc_info()[1], Terminated)
        message = "interrupted: nothing incomplete was recorded as a snapshot"
        _fail(143 if terminated else 130, message, "interrupted", text=message)
    except Exception as error:  # a bug, or the system refused (disk full): say so plainly
        log.debug("internal error", exc_info=True)
        problem = describe_os_error(error)
        if problem is not None:
            _fail(EXIT_FAILED, mask(problem), "system")
        message = f"{type(error).__name__}: {mask(str(error))}"
        _fail(EXIT_FAILED, message, "internal",
              text=f"internal error: {message} (run with -v for details)")  # fmt: skip


def _postgres_hook(argv: list[str]) -> bool:
    """Whether the command line is `wal push` or `wal fetch` (archive_command, restore_command)."""
    return any(first == "wal" and second in ("push", "fetch") for first, second in pairwise(argv))


def _kind(error: BackupctlError) -> str:
    """The `kind` of a failure in the --json error object: the exception class, snake_cased."""
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _fail(
    code: int,
    message: str,
    kind: str,
    *,
    text: str | None = None,
    issues: list[dict[str, object]] | None = None,
    shown: Callable[[], None] | None = None,
    result: object | None = None,
) -> NoReturn:
    """Report the final error and exit with `code`.

    Text on stderr (`text`, default `error: MESSAGE`; or `shown()` for click's own usage
    errors); as a JSON line on stderr under --log-json; and, under --json, one
    `backupctl.error/1` object on stdout unless the command already printed its result."""
    from backupctl.cli import output
    from backupctl.cli.contract import command_word, error_document, normalise, wants_json

    argv = sys.argv[1:]
    as_json, log_json = wants_json(argv)
    if log_json:
        fields = {"exit_code": code, "kind": kind, "final": True}
        if issues is not None:
            fields["issues"] = issues
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None,
                                extra={"json_fields": fields})  # fmt: skip
        if not log.handlers:  # failed before the group callback set logging up
            output.setup_logging(0, log_json=True)
        log.handle(record)
    elif shown is not None:
        shown()
    else:
        click.echo(text if text is not None else f"error: {message}", err=True)
    if as_json and not output.json_printed:
        document = error_document(message, code, kind, command_word(argv), issues)
        if result is not None:
            document["result"] = normalise(result)
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        sys.stdout.flush()
    sys.exit(code)


def describe_os_error(error: BaseException) -> str | None:
    """An operator's sentence for a refused write (disk full, read-only, no permission), naming
    the path; None for other errors. Looks through SQLAlchemy's wrapper and exception chains."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _REFUSED:
            where = current.filename or f"in the state directory {_state_dir or '?'}"
            return f"cannot write {where}: {os.strerror(current.errno or 0)}"
        text = str(current).lower()
        if "database or disk is full" in text or "attempt to write a readonly database" in text:
            reason = "disk full" if "full" in text else "read-only"
            return f"cannot write the catalog in {_state_dir or 'the state directory'}: {reason}"
        current = current.__cause__ or current.__context__
    return None


_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
