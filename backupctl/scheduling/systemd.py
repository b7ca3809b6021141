"""systemd timers: one `backupctl-backup-<policy>.service` + `.timer` pair per scheduled policy.

Why a pair per policy rather than a template (`backupctl-backup@.service`): each policy needs its
own `ReadWritePaths=` (its local targets) and its own `OnCalendar=`, and `systemctl list-timers`
then shows every policy by name.

The service is a sandboxed oneshot: the file system is read-only (`ProtectSystem=strict`,
`ProtectHome=read-only`) except the state directory and the policy's local target paths; `/tmp`
is private; no privilege gain. `KillMode=mixed` sends SIGTERM (on `systemctl stop`, shutdown) only
to backupctl itself, whose handler aborts the run, stops its dump tools and records the attempt
as failed: never a half snapshot. The timer is `Persistent=true` (a run missed while the machine
was off happens at boot) with a `RandomizedDelaySec=` so a fleet does not start at one instant.

Cron semantics are kept exactly: `OnCalendar=` is generated from the parsed value sets, and when
both day-of-month and day-of-week are restricted (cron's OR rule; systemd ANDs them) the timer gets
two `OnCalendar=` lines, one per day rule.

A policy with a `drill_schedule:` also gets a `backupctl-drill-<policy>.service` + `.timer` pair:
the same timer properties, sandbox and `OnFailure=`, with what a drill needs instead of what a
backup needs (see `_drill_comment`): it writes only the state directory (catalog, reports, lock)
and the private /tmp, reads the targets, reaches the Docker engine through its socket, and runs
at normal priority because its measured RTO must be the one a real recovery would see.

A postgres source with `pitr.archiver.pgdata` gets `backupctl-wal-archiver-<policy>-<source>.service`:
no timer, a long-running service (`Restart=always`) enabled and started with the timers
(`render_service`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from backupctl.core import runner
from backupctl.core.cronexpr import CronExpr
from backupctl.scheduling import JobKind, Scheduled, write_atomically
from backupctl.scheduling.pitr_jobs import SERVICE_KINDS

MARKER = "# Written by `backupctl schedule install --systemd`; `backupctl schedule remove` deletes it."
PREFIX = "backupctl-backup-"
DRILL_PREFIX = "backupctl-drill-"
PREFIXES: dict[JobKind, str] = {
    "backup": PREFIX,
    "drill": DRILL_PREFIX,
    "verify": "backupctl-verify-",
    "base-backup": "backupctl-base-backup-",
    "binlog": "backupctl-binlog-",
    "archiver": "backupctl-wal-archiver-",
}
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
_WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


@dataclass(frozen=True)
class UnitOptions:
    """What every unit pair shares."""

    argv: list[str]  # backupctl with its global options (see scheduling.backupctl_argv)
    state_dir: Path
    randomized_delay: timedelta = timedelta(minutes=5)
    on_failure: str | None = None  # e.g. "backupctl-notify@%n.service"
    user: bool = False  # a user unit (~/.config/systemd/user)

    def env_file(self, policy: str) -> str:
        # %E is /etc for system units and $XDG_CONFIG_HOME for user units.
        return f"/etc/backupctl/{policy}.env" if not self.user else f"%E/backupctl/{policy}.env"


# The sandbox every unit starts from (the timed jobs' and the archiver's); `_hardening` adds more.
SANDBOX = ("ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes", "NoNewPrivileges=yes")


def default_unit_dir(user: bool) -> Path:
    """/etc/systemd/system, or ~/.config/systemd/user with --user."""
    if not user:
        return SYSTEM_UNIT_DIR
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_names(policy: str, kind: JobKind = "backup") -> tuple[str, str]:
    """(service, timer) unit names of a policy's backup or drill job."""
    prefix = PREFIXES[kind]
    return f"{prefix}{policy}.service", f"{prefix}{policy}.timer"


def on_calendar(cron: CronExpr) -> list[str]:
    """`OnCalendar=` values equivalent to a cron expression (one, or two for cron's OR day rule).

    Raises ValueError for an expression that never fires.
    """
    time_part = f"{_values(cron.hours, 0, 23)}:{_values(cron.minutes, 0, 59)}:00"
    months = _values(cron.months, 1, 12)
    days = _values(cron.days, 1, 31)
    weekdays = _weekdays(cron.weekdays)
    if cron.day_restricted and cron.weekday_restricted:  # cron: dom OR dow; systemd would AND
        return [f"{weekdays} *-{months}-* {time_part}", f"*-{months}-{days} {time_part}"]
    prefix = "" if weekdays == "*" else weekdays + " "
    return [f"{prefix}*-{months}-{days} {time_part}"]


def render_units(item: Scheduled, options: UnitOptions, writable: list[str]) -> dict[str, str]:
    """The service and timer text of one job (a policy's backup or drill): {file name: content};
    a long-running job (the WAL archiver) is one service without a timer (`render_service`).

    `writable` are the directories the run must write besides the state directory (see
    scheduling.writable_paths: a backup's local targets and restic repositories).
    """
    if item.service:
        return render_service(item, options, writable)
    service_name, timer_name = unit_names(item.slot, item.kind)
    what = f"{item.kind} of policy {_escape(item.name)}"
    if item.source is not None:
        what = f"{item.kind} of source {_escape(item.source)} of policy {_escape(item.name)}"
    if item.kind == "drill":
        what = f"restore drill of policy {_escape(item.name)}"
        if item.drill_file is not None:
            what += f" ({_escape(str(item.drill_file))})"
    unit = [MARKER, "[Unit]", f"Description=backupctl {what}"]
    unit += ["Wants=network-online.target", "After=network-online.target"]
    if item.kind == "drill":
        # Ordering only (no Requires=): without an engine the drill's runtime 'auto' uses the local one.
        unit.append("After=docker.service")
    if options.on_failure:
        unit.append(f"OnFailure={options.on_failure}")  # specifiers such as %n are the operator's
    service = [
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=" + " ".join(_quote(arg) for arg in [*options.argv, *item.command()]),
        # Secrets referenced as env:NAME live here (mode 0600); '-' = optional.
        f"EnvironmentFile=-{options.env_file(item.name)}",
        *(["Nice=10", "IOSchedulingClass=idle"] if item.kind != "drill" else _drill_comment()),
        *SANDBOX,
        f"ReadWritePaths={_quote(str(options.state_dir.absolute()), command=False)}",
        # '-': a missing target directory must not stop the unit from starting; the run says why.
        *(f"ReadWritePaths=-{_quote(path, command=False)}" for path in writable),
        *(_hardening(item.kind) if not options.user else []),
        "KillMode=mixed",
        "TimeoutStopSec=2min",
    ]
    calendars = on_calendar(item.cron)
    timer = [
        MARKER,
        "[Unit]",
        f"Description=Schedule of backupctl {_escape(item.label)} (cron: {_escape(item.cron.text)})",
        "",
        "[Timer]",
        *(f"OnCalendar={value}" for value in calendars),
        "Persistent=true",
        f"RandomizedDelaySec={_random_delay(item.cron, options.randomized_delay)}",
        f"Unit={service_name}",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return {service_name: "\n".join(unit + service) + "\n", timer_name: "\n".join(timer) + "\n"}


def render_service(item: Scheduled, options: UnitOptions, writable: list[str]) -> dict[str, str]:
    """The unit of a long-running job, the WAL archiver of a source: {file name: content}.

    `Type=simple`, `Restart=always` (RestartSec=5s): systemd restarts it whenever it exits, and
    `enable --now` starts it at boot (WantedBy=multi-user.target), after the network. It runs as
    `pitr.archiver.user` (system units; a --user unit runs as its owner), the server's system
    user who owns the spool and runs archive_command. Same sandbox as a backup, with the spool
    writable; no Nice=/idle I/O: a slow archiver is a larger RPO. SIGTERM (`KillMode=mixed`): the
    archiver finishes the pushes under way and exits 0.
    """
    service_name = unit_names(item.slot, item.kind)[0]
    archiver = item.archiver
    what = f"WAL archiver of source {_escape(item.source or '')} of policy {_escape(item.name)}"
    unit = [MARKER, "[Unit]", f"Description=backupctl {what}"]
    unit += ["Wants=network-online.target", "After=network-online.target postgresql.service"]
    if options.on_failure:
        unit.append(f"OnFailure={options.on_failure}")
    service = [
        "",
        "[Service]",
        "Type=simple",
        *([f"User={_quote(archiver.user, command=False)}"] if not options.user else []),
        "ExecStart=" + " ".join(_quote(arg) for arg in [*options.argv, *item.command()]),
        f"EnvironmentFile=-{options.env_file(item.name)}",
        "Restart=always",
        "RestartSec=5s",
        *SANDBOX,
        # '-': the state directory may be closed to the server's user; `wal push` needs none of it.
        f"ReadWritePaths=-{_quote(str(options.state_dir.absolute()), command=False)}",
        *(f"ReadWritePaths=-{_quote(path, command=False)}" for path in writable),
        *(_hardening(item.kind) if not options.user else []),
        "KillMode=mixed",
        "TimeoutStopSec=2min",
        "",
        "[Install]",
        "WantedBy=multi-user.target" if not options.user else "WantedBy=default.target",
    ]
    return {service_name: "\n".join(unit + service) + "\n"}


def _random_delay(cron: CronExpr, longest: timedelta) -> int:
    """Seconds of `RandomizedDelaySec=`: `longest`, but at most a tenth of the time between two
    runs, so that a job every few minutes (binlog collection) keeps its pace."""
    first, second = cron.next_runs(datetime(2026, 1, 1), 2)
    return int(min(longest, (second - first) / 10).total_seconds())


def _hardening(kind: JobKind) -> list[str]:
    """Kernel, device, capability, address-family and system-call confinement of a system unit.

    A backup runs as root only to read every file a `files` source names: its capabilities are
    bounded to CAP_DAC_READ_SEARCH (read any file; no write, chown, kill or admin power beyond
    the writable paths above). A drill also needs nothing more: Docker is reached through its
    socket, the local runtime's clusters run as a child with the same bounds. User units run
    unprivileged already, and several of these need a system manager: they are left out there.
    """
    capabilities = "CAP_DAC_READ_SEARCH"
    denied = "@mount @swap @reboot @raw-io @module @obsolete @cpu-emulation @debug"
    if kind == "drill":
        # The local runtime starts its throwaway clusters as their service users (setuid/chown).
        capabilities += " CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_KILL"
    else:
        denied = "@privileged @resources " + denied
    return [
        "# Confinement (`systemd-analyze security` score in docs/operations.md).",
        f"CapabilityBoundingSet={capabilities}",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        f"SystemCallFilter=~{denied}",
        "SystemCallErrorNumber=EPERM",
        "KeyringMode=private",
        "UMask=0077",
        "RemoveIPC=yes",
        "PrivateIPC=yes",
    ]


def _drill_comment() -> list[str]:
    """Why the drill service's sandbox is what it is (a comment in the unit, for the operator)."""
    return [
        "# A restore drill writes only the state directory (catalog row, JSON/HTML reports, policy",
        "# lock) and its private /tmp (files restored for checking; the local runtime's throwaway",
        "# clusters, removed with the unit). It reads the targets (local paths stay read-only; S3/SFTP",
        "# over the network), the drill file and the age identity, which must then be on this host.",
        "# The Docker runtime works through the engine's socket, /run/docker.sock: connecting to a",
        "# socket is allowed on the read-only file system, and containers, volumes and the internal",
        "# network are created by dockerd outside this sandbox; a --user unit needs the docker group.",
        "# No Nice=/IOSchedulingClass=idle: the measured RTO must be that of a real recovery.",
        "# A drill meeting a running backup of the policy waits for its lock (drill --wait).",
    ]


def write_units(units: dict[str, str], directory: Path) -> list[Path]:
    """Write unit files atomically (temp name, then rename), mode 0644. Returns the paths."""
    written: list[Path] = []
    for name, text in sorted(units.items()):
        write_atomically(directory / name, text)
        written.append(directory / name)
    return written


def installed_units(directory: Path) -> list[Path]:
    """Unit files in `directory` that backupctl wrote (recognised by the marker line)."""
    if not directory.is_dir():
        return []
    found: list[Path] = []
    candidates = {path for prefix in PREFIXES.values() for path in directory.glob(f"{prefix}*")}
    for path in sorted(candidates):
        if path.suffix not in (".service", ".timer") or not path.is_file():
            continue
        try:
            if path.read_text(encoding="utf-8").startswith(MARKER):
                found.append(path)
        except (OSError, UnicodeDecodeError):
            continue
    return found


@dataclass
class SystemdPlan:
    """What install or remove will do: files to write, backupctl units to delete, commands."""

    directory: Path
    user: bool
    units: dict[str, str] = field(default_factory=dict)  # file name -> content
    delete: list[Path] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "user": self.user,
            "units": self.units,
            "delete": [str(path) for path in self.delete],
            "commands": [" ".join(command) for command in self.commands],
            "notes": self.notes,
        }


def plan_install(units: dict[str, str], directory: Path, user: bool) -> SystemdPlan:
    """Install = make `directory` hold exactly these backupctl units: stale pairs (policies
    removed or unscheduled since the last install) are disabled and deleted."""
    stale = [path for path in installed_units(directory) if path.name not in units]
    timers = _startable(list(units))
    commands = []
    stale_timers = _startable([path.name for path in stale])
    if stale_timers:
        commands += systemctl_commands(stale_timers, user, enable=False)[:1]
    commands += systemctl_commands(timers, user, enable=True)
    return SystemdPlan(directory, user, units, stale, commands)


def plan_remove(directory: Path, user: bool) -> SystemdPlan:
    """Remove = disable and delete every backupctl unit in `directory`."""
    installed = installed_units(directory)
    timers = _startable([path.name for path in installed])
    return SystemdPlan(directory, user, {}, installed, systemctl_commands(timers, user, enable=False))


def _startable(names: list[str]) -> list[str]:
    """The units `enable --now` / `disable --now` act on: the timers, and the services that run
    continuously (the WAL archiver), which have no timer."""
    services = tuple(prefix for kind, prefix in PREFIXES.items() if kind in SERVICE_KINDS)
    return sorted(name for name in names if name.endswith(".timer") or name.startswith(services))


def apply(plan: SystemdPlan, *, run_systemctl: bool) -> list[Path]:
    """Write and delete the plan's files; run its systemctl commands only when asked (tests and
    package builds must never touch the host's systemd). Returns the files written."""
    disable = [command for command in plan.commands if "disable" in command]
    if run_systemctl:
        for command in disable:  # stop timers before their files go away
            runner.run(command)
    written = write_units(plan.units, plan.directory) if plan.units else []
    for path in plan.delete:
        path.unlink(missing_ok=True)
    if run_systemctl:
        for command in plan.commands:
            if command not in disable:
                runner.run(command)
    return written


def systemctl_commands(timers: list[str], user: bool, *, enable: bool) -> list[list[str]]:
    """`daemon-reload` plus `enable --now` (or `disable --now`) of the given timers (and
    long-running services)."""
    base = ["systemctl", "--user"] if user else ["systemctl"]
    commands = [[*base, "daemon-reload"]]
    if timers:
        commands.insert(0 if not enable else 1, [*base, "enable" if enable else "disable", "--now", *timers])
    return commands


def _values(values: frozenset[int], low: int, high: int) -> str:
    """A systemd calendar component: '*', or a comma list with runs as 'a..b', two digits."""
    if values == frozenset(range(low, high + 1)):
        return "*"
    return ",".join(
        f"{first:02d}" if first == last else f"{first:02d}..{last:02d}" for first, last in _runs(values)
    )


def _weekdays(values: frozenset[int]) -> str:
    if values == frozenset(range(7)):
        return "*"
    ordered = frozenset(7 if day == 0 else day for day in values)  # systemd weeks run Mon..Sun
    return ",".join(
        _WEEKDAYS[first % 7] if first == last else f"{_WEEKDAYS[first % 7]}..{_WEEKDAYS[last % 7]}"
        for first, last in _runs(ordered)
    )


def _runs(values: frozenset[int]) -> list[tuple[int, int]]:
    """Consecutive runs of three or more become one range; shorter runs stay single values."""
    runs: list[tuple[int, int]] = []
    for value in sorted(values):
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    split: list[tuple[int, int]] = []
    for first, last in runs:
        if last - first >= 2:
            split.append((first, last))
        else:
            split.extend((value, value) for value in range(first, last + 1))
    return split


def _escape(text: str) -> str:
    """Escape systemd specifiers in free text."""
    return text.replace("%", "%%")


def _quote(arg: str, *, command: bool = True) -> str:
    """One ExecStart= argument or path: specifiers (and, in commands, $VARIABLES) escaped, quoted
    when it holds blanks or quotes."""
    escaped = arg.replace("\\", "\\\\").replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    if not escaped or any(char in escaped for char in " \t\"'"):
        return '"' + escaped.replace('"', '\\"') + '"'
    return escaped
