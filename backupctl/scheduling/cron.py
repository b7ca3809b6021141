"""cron: one line per scheduled job (a policy's backup, its drill), between `# BEGIN backupctl` /
`# END backupctl` markers.

Where the lines go (chosen so nothing else an operator wrote is ever touched):
- as root: the file `/etc/cron.d/backupctl` (cron.d format: a user field, here `root`). A file of
  our own is what packages do; it leaves root's personal crontab alone and is removed whole.
- otherwise (or with `--user`): the user's crontab, read with `crontab -l` and written back with
  `crontab -`; only the marked block is replaced, so install and remove are idempotent and the
  operator's own lines survive.

Each line runs (one line in the crontab, wrapped here)
    flock -n STATE/locks/POLICY.cron.lock
      sh -c 'set -a; [ ! -r ENV ] || . ENV; set +a; exec backupctl ... backup POLICY'
      >> STATE/logs/POLICY.log 2>&1
- `flock -n` skips a start while the previous cron-started run still goes (no pile-up even before
  backupctl's own policy lock, which uses a different file; see backupctl.locking);
- the environment file (same path as the systemd units' `EnvironmentFile=`) supplies secrets
  referenced as `env:NAME`, which cron itself cannot load;
- output is appended to a per-policy log (timestamped lines: backupctl logs plainly off a TTY).

A drill line (`drill_schedule:`) is the same with `drill --wait 4h DRILL_FILE|POLICY`, its own
`POLICY.drill.cron.lock` and `POLICY.drill.log`. Its own flock file: a drill slot that meets the
running backup must not be dropped silently by `flock -n`; it waits for the policy lock instead
(backupctl.locking keeps backup and drill of one policy apart).

The WAL archiver of a source with `pitr.archiver.pgdata` is a long-running process, which cron
cannot supervise: its line is a *watchdog* firing every minute, `flock -n` on a lock in the
spool starting the archiver only when none runs (`_watchdog`): restarted within a minute of an
exit or a reboot, never two at once (the archiver's own spool lock would refuse a second anyway).
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from backupctl.core import runner
from backupctl.errors import ConfigError
from backupctl.scheduling import JobKind, Scheduled, write_atomically

BEGIN = "# BEGIN backupctl"
END = "# END backupctl"
CRON_D_FILE = Path("/etc/cron.d/backupctl")


@dataclass(frozen=True)
class CronOptions:
    """What every line shares."""

    argv: list[str]  # backupctl with its global options (see scheduling.backupctl_argv)
    state_dir: Path
    user_field: str | None = None  # "root" for /etc/cron.d files; None for a user crontab
    env_dir: Path = Path("/etc/backupctl")

    def lock_file(self, policy: str, kind: JobKind = "backup") -> Path:
        infix = "" if kind == "backup" else f".{kind}"
        return self.state_dir.absolute() / "locks" / f"{policy}{infix}.cron.lock"

    def log_file(self, policy: str, kind: JobKind = "backup") -> Path:
        infix = "" if kind == "backup" else f".{kind}"
        return self.state_dir.absolute() / "logs" / f"{policy}{infix}.log"


def default_env_dir() -> Path:
    """Where per-policy environment files live: /etc/backupctl as root, else ~/.config/backupctl."""
    if os.geteuid() == 0:
        return Path("/etc/backupctl")
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "backupctl"


def render_line(item: Scheduled, options: CronOptions) -> str:
    """The crontab line of one job (macros expanded to five fields)."""
    env_file = shlex.quote(str(options.env_dir / f"{item.name}.env"))
    command = " ".join(shlex.quote(arg) for arg in [*options.argv, *item.command()])
    inner = f"set -a; [ ! -r {env_file} ] || . {env_file}; set +a; exec {command}"
    flock = shutil.which("flock") or "flock"
    user_field = options.user_field
    if item.service:
        job, user_field = _watchdog(item, flock, inner, user_field)
    else:
        lock = shlex.quote(str(options.lock_file(item.slot, item.kind)))
        job = (
            f"{shlex.quote(flock)} -n {lock} sh -c {shlex.quote(inner)}"
            f" >> {shlex.quote(str(options.log_file(item.slot, item.kind)))} 2>&1"
        )
    job = job.replace("%", "\\%")  # an unescaped % ends the command in a crontab line
    user = f" {user_field}" if user_field else ""
    return f"{' '.join(item.cron.fields)}{user} {job}"


def _watchdog(item: Scheduled, flock: str, inner: str, user_field: str | None) -> tuple[str, str | None]:
    """The line of a long-running job (the WAL archiver): cron cannot keep a daemon running, so
    the line fires every minute and `flock -n` starts the archiver only when none holds the lock
    (a check costs one `flock` exec, no Python): it runs again within a minute of any exit, and
    after a reboot. It runs as `pitr.archiver.user` in a cron.d file (the server's user: the
    spool must be its own), so its lock and log live in the source's spool directory, which that
    user owns (umask 077: created private, as the archiver wants it), not in the state directory.
    """
    archiver = item.archiver
    directory = str(Path(archiver.spool).expanduser().absolute() / item.name / (item.source or ""))
    lock = shlex.quote(f"{directory}/archiver.cron.lock")
    log = shlex.quote(f"{directory}/archiver.log")
    job = (
        f"umask 077; mkdir -p {shlex.quote(directory)} && {shlex.quote(flock)} -n {lock}"
        f" sh -c {shlex.quote(inner)} >> {log} 2>&1"
    )
    return job, (archiver.user if user_field is not None else None)


def render_block(items: list[Scheduled], options: CronOptions) -> str:
    """The whole marked block, one commented schedule + one line per job."""
    lines = [BEGIN, "# Written by `backupctl schedule install --cron`; edit the policies, then reinstall."]
    for item in items:
        lines.append(f"# {item.label}: {item.cron.text}")
        lines.append(render_line(item, options))
    lines.append(END)
    return "\n".join(lines) + "\n"


def merge_block(existing: str, block: str | None) -> str:
    """`existing` crontab text with our block replaced by `block` (appended when absent; removed
    when `block` is None). Raises ConfigError when the markers are unbalanced: we would rather
    stop than guess which of the operator's lines belong to us."""
    lines = existing.splitlines()
    begins = [index for index, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [index for index, line in enumerate(lines) if line.strip() == END]
    if len(begins) != len(ends) or len(begins) > 1 or (begins and ends[0] < begins[0]):
        raise ConfigError(
            f"the crontab has unbalanced '{BEGIN}' / '{END}' markers: fix them by hand (crontab -e)"
        )
    if begins:
        before, after = lines[: begins[0]], lines[ends[0] + 1 :]
    else:
        before, after = lines, []
    kept = before + after
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join(kept) + ("\n" if kept else "")
    if block is not None:
        text += ("\n" if kept else "") + block
    return text


def extract_block(text: str) -> list[str]:
    """The job lines (no comments) inside our block."""
    inside = False
    jobs: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
        elif stripped == END:
            inside = False
        elif inside and stripped and not stripped.startswith("#"):
            jobs.append(stripped)
    return jobs


class CrontabStore:
    """The invoking user's crontab through the `crontab` program."""

    description = "your crontab"

    def __init__(self, program: str = "crontab") -> None:
        self.program = program

    def read(self) -> str:
        done = runner.run([self.program, "-l"], check=False)
        if done.returncode != 0:
            # "no crontab for USER" is the normal state of a fresh account.
            if "no crontab" in done.stderr.lower():
                return ""
            raise ConfigError(f"crontab -l failed: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def write(self, text: str) -> None:
        runner.run([self.program, "-"], input_text=text)


class CronFileStore:
    """A file of our own, e.g. /etc/cron.d/backupctl (cron.d format)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def write(self, text: str) -> None:
        if not text.strip():
            self.path.unlink(missing_ok=True)  # nothing left: a file of our own goes away
            return
        # 0644: cron skips cron.d files that are group or world writable.
        write_atomically(self.path, text, 0o644)


def install(store: CrontabStore | CronFileStore, block: str, *, dry_run: bool) -> str:
    """Replace our block in `store`. Returns the new full text (what would be written on dry run)."""
    text = merge_block(store.read(), block)
    if not dry_run:
        store.write(text)
    return text


def remove(store: CrontabStore | CronFileStore, *, dry_run: bool) -> list[str]:
    """Delete our block from `store`. Returns the job lines that were (or would be) removed."""
    existing = store.read()
    removed = extract_block(existing)
    if BEGIN in existing and not dry_run:
        store.write(merge_block(existing, None))
    return removed
