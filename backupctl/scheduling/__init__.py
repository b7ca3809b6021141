"""Running policies on their `schedule:`: systemd timers, a crontab block, or the in-process daemon.

All three read the same five-field cron expression (`Policy.schedule`) and start the same
command, `backupctl --policies DIR --state-dir DIR backup POLICY`, so a policy behaves the same
whichever scheduler runs it. Next run times come from `backupctl.core.cronexpr`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backupctl.core.cronexpr import CronExpr
from backupctl.errors import ConfigError
from backupctl.policy.loader import validate_paths
from backupctl.policy.schema import Policy
from backupctl.settings import Settings


@dataclass(frozen=True)
class Scheduled:
    """One policy with a schedule."""

    policy: Policy
    cron: CronExpr

    @property
    def name(self) -> str:
        return self.policy.name

    def next_runs(self, count: int, after: datetime | None = None) -> list[datetime]:
        """The next `count` run times after `after` (default now), local time, timezone-aware.

        Cron, systemd timers and the daemon all read schedules as local wall-clock time.
        """
        start = (after or datetime.now().astimezone()).astimezone().replace(tzinfo=None)
        return [run.astimezone() for run in self.cron.next_runs(start, count)]


def scheduled_policies(settings: Settings) -> list[Scheduled]:
    """Every valid policy that has a `schedule:`, sorted by name.

    Secrets are not resolved (the scheduler does not need them; the run will). Raises ConfigError
    when no policy file is valid at all; invalid files next to valid ones are skipped here, and
    `backupctl policy validate` names their problems.
    """
    loaded, issues = validate_paths([settings.policies], check_secrets=False)
    if issues and not loaded:
        raise ConfigError(f"no valid policy in {settings.policies}: run `backupctl policy validate`")
    found: list[Scheduled] = []
    for item in sorted(loaded, key=lambda item: item.policy.name):
        if item.policy.schedule is None:
            continue
        try:
            cron = CronExpr.parse(item.policy.schedule)
            cron.next_after(datetime.now())  # fails for expressions that never fire (Feb 30th)
        except ValueError as error:
            raise ConfigError(f"{item.file}: at 'schedule': {error}") from None
        found.append(Scheduled(item.policy, cron))
    return found


def backupctl_argv(settings: Settings, executable: str | None = None) -> list[str]:
    """The absolute command that starts backupctl with this installation's policies and state.

    `executable` overrides the program (e.g. a wrapper). Otherwise: the running `backupctl`
    script when that is how we were started, else the one on PATH, else `python -m backupctl`
    with this interpreter. Paths are made absolute: schedulers start in another directory.
    """
    if executable:
        program = [str(Path(executable).absolute())]
    else:
        running = Path(sys.argv[0])
        if running.name == "backupctl" and running.exists():
            program = [str(running.absolute())]
        elif found := shutil.which("backupctl"):
            program = [str(Path(found).absolute())]
        else:
            program = [sys.executable, "-m", "backupctl"]
    argv = [
        *program,
        "--policies",
        str(settings.policies.absolute()),
        "--state-dir",
        str(settings.state_dir.absolute()),
    ]
    if settings.keys_dir.absolute() != (settings.state_dir / "keys").absolute():
        argv += ["--keys-dir", str(settings.keys_dir.absolute())]
    return argv


def catalog_note(settings: Settings) -> tuple[list[str], str | None]:
    """Extra argv for a non-default catalog, or a note when its URL holds a password.

    A password must not land on a command line (visible in `ps`, unit files, crontabs): then the
    operator puts `BACKUPCTL_CATALOG=...` in the policy's environment file instead.
    """
    default = f"sqlite:///{settings.state_dir.absolute()}/catalog.sqlite"
    if settings.catalog_url == default:
        return [], None
    from sqlalchemy.engine import make_url

    if make_url(settings.catalog_url).password:
        return [], "the catalog URL contains a password: set BACKUPCTL_CATALOG in the environment file"
    return ["--catalog", settings.catalog_url], None


def writable_paths(policy: Policy, settings: Settings) -> list[str]:
    """Directories a run of `policy` writes besides the state directory: local targets, local
    restic repositories, and a SQLite catalog kept outside the state directory."""
    paths: list[str] = []
    for target in policy.targets:
        if target.type == "local":
            paths.append(target.path)
        elif target.type == "restic" and target.repository.startswith("/"):
            paths.append(target.repository)
    if settings.catalog_url.startswith("sqlite:///"):
        catalog_dir = Path(settings.catalog_url[len("sqlite:///") :]).parent.absolute()
        if not catalog_dir.is_relative_to(settings.state_dir.absolute()):
            paths.append(str(catalog_dir))
    return sorted(set(paths))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `path` through a dot-prefixed temp name and a rename: readers (systemd, cron, which
    both ignore dot files) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    os.chmod(handle.name, mode)
    os.replace(handle.name, path)
