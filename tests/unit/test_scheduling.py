"""systemd units and crontab blocks: rendered, checked by systemd's own analyzer, installed and removed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backupctl.core.cron import validate_cron
from backupctl.core.cronexpr import CronExpr
from backupctl.errors import ConfigError
from backupctl.scheduling import (
    DRILL_LOCK_WAIT,
    JobKind,
    Scheduled,
    backupctl_argv,
    cron,
    scheduled_policies,
    systemd,
    writable_paths,
)
from backupctl.settings import Settings
from tests.fixtures.core import Workspace

EXPRESSIONS = [
    "15 2 * * *",
    "*/15 * * * *",
    "0 */6 * * *",
    "30 9-17/2 * * mon-fri",
    "0 0 1,15 * sun",  # cron's OR rule: two OnCalendar lines
    "0 3 * * sat,sun",
    "0 0 * * 5-7",
    "5/20 1,13 * jan,jul *",
    "0 0 1-10/3 */2 *",
    "0 4 */2 * mon",  # '*'-started dom: AND rule
    "@weekly",
    "@monthly",
    "59 23 31 12 *",
]


def run_cli(
    space: Workspace, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backupctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **space.env, **(env or {})},
        timeout=60,
        check=False,
    )


def scheduled(
    name: str, expression: str, kind: JobKind = "backup", drill_file: Path | None = None
) -> Scheduled:
    from backupctl.policy.schema import Policy

    data = {
        "name": name,
        "objectives": {"rpo": "24h", "rto": "1h"},
        "schedule": expression,
        "encryption": {"recipients": ["age1n3apkaaz7y5qsrs9l4z2akmel0gpz9m2astxq4jgzl2zheeex33s8kpzju"]},
        "sources": [{"name": "files", "type": "files", "path": "/srv/files"}],
        "targets": [{"name": "local", "type": "local", "path": "/srv/backups"}],
    }
    return Scheduled(Policy.model_validate(data), CronExpr.parse(expression), kind, drill_file)


def analyzer() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


# --------------------------------------------------------------------------- OnCalendar
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_on_calendar_fires_exactly_when_cron_does(expression: str) -> None:
    """systemd's own calendar engine, asked for the next runs of every OnCalendar= we produce,
    must list the same times as cron semantics (union over the lines, for the OR rule)."""
    program = analyzer()
    cron_expr = CronExpr.parse(expression)
    base = datetime(2026, 3, 14, 10, 7)
    count = 12
    times: set[datetime] = set()
    for value in systemd.on_calendar(cron_expr):
        done = subprocess.run(
            [
                program,
                "calendar",
                f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC",
                f"--iterations={count}",
                value,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=False,
        )
        assert done.returncode == 0, f"{value}: {done.stderr}"
        for line in done.stdout.splitlines():
            if "Next elapse:" in line or "Iter. #" in line:
                stamp = line.split(":", 1)[1].strip()  # e.g. "Sun 2026-11-22 00:00:00 UTC"
                times.add(datetime.strptime(stamp.split(" ", 1)[1].removesuffix(" UTC"), "%Y-%m-%d %H:%M:%S"))
    assert sorted(times)[:count] == cron_expr.next_runs(base, count)


def test_on_calendar_or_rule_and_names() -> None:
    assert systemd.on_calendar(CronExpr.parse("0 0 1,15 * sun")) == [
        "Sun *-*-* 00:00:00",
        "*-*-01,15 00:00:00",
    ]
    assert systemd.on_calendar(CronExpr.parse("30 9-17 * * mon-fri")) == ["Mon..Fri *-*-* 09..17:30:00"]
    assert systemd.on_calendar(CronExpr.parse("0 0 * * 5-7")) == ["Fri..Sun *-*-* 00:00:00"]


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize("user", [False, True])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, user: bool) -> None:
    program = analyzer()
    settings = Settings(tmp_path / "policies", tmp_path / "state", "sqlite:///x", tmp_path / "state" / "keys")
    options = systemd.UnitOptions(
        backupctl_argv(settings, executable=sys.executable),
        settings.state_dir,
        on_failure="backupctl-notify@%n.service",
        user=user,
    )
    units: dict[str, str] = {}
    for index, expression in enumerate(EXPRESSIONS):
        units.update(
            systemd.render_units(scheduled(f"p{index}", expression), options, ["/srv/a b%c", "/srv/b"])
        )
        if index % 2 == 0:  # the drill pair next to the backup pair: a drill file, or the default drill
            drill_file = Path(f"/srv/drills dir/p{index}.yaml") if index % 4 == 0 else None
            units.update(
                systemd.render_units(scheduled(f"p{index}", expression, "drill", drill_file), options, [])
            )
    directory = tmp_path / "units"
    systemd.write_units(units, directory)
    # The OnFailure= template the operator provides; verify follows the reference.
    (directory / "backupctl-notify@.service").write_text(
        "[Unit]\nDescription=notify %i\n[Service]\nType=oneshot\nExecStart=/bin/true %i\n"
    )
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    files = sorted(str(path) for path in directory.glob("backupctl-*") if "notify" not in path.name)
    assert sum("backupctl-drill-" in name for name in files) == 2 * len(range(0, len(EXPRESSIONS), 2))
    done = subprocess.run(
        [program, *(["--user"] if user else []), "verify", *files],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
    )
    # Warnings (unknown keys, unparsable values) only go to stderr: it must be empty too.
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    service = units["backupctl-backup-p0.service"]
    for line in [
        "Type=oneshot",
        "Nice=10",
        "IOSchedulingClass=idle",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        f"ReadWritePaths={settings.state_dir}",
        'ReadWritePaths=-"/srv/a b%%c"',
        "OnFailure=backupctl-notify@%n.service",
        "KillMode=mixed",
    ]:
        assert line in service.splitlines()
    env_file = "%E/backupctl/p0.env" if user else "/etc/backupctl/p0.env"
    assert f"EnvironmentFile=-{env_file}" in service
    timer = units["backupctl-backup-p0.timer"]
    for line in ["OnCalendar=*-*-* 02:15:00", "Persistent=true", "RandomizedDelaySec=300"]:
        assert line in timer.splitlines()

    # The drill pair: same timer and sandbox, drill command, no target write access, normal priority.
    drill = units["backupctl-drill-p0.service"].splitlines()
    assert drill[-2:] == ["KillMode=mixed", "TimeoutStopSec=2min"]
    (exec_start,) = [line for line in drill if line.startswith("ExecStart=")]
    assert exec_start.endswith(f' drill --wait {DRILL_LOCK_WAIT} "/srv/drills dir/p0.yaml"')
    assert units["backupctl-drill-p2.service"].count(f"drill --wait {DRILL_LOCK_WAIT} p2\n") == 1
    for line in [
        "Type=oneshot",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        f"ReadWritePaths={settings.state_dir}",
        "OnFailure=backupctl-notify@%n.service",
        f"EnvironmentFile=-{env_file}",
        "After=docker.service",
    ]:
        assert line in drill
    assert [line for line in drill if line.startswith("ReadWritePaths=")] == [
        f"ReadWritePaths={settings.state_dir}"
    ]
    assert not any(line.startswith(("Nice=", "IOSchedulingClass=")) for line in drill)
    assert any("docker.sock" in line for line in drill if line.startswith("#"))
    drill_timer = units["backupctl-drill-p0.timer"].splitlines()
    for line in [
        "OnCalendar=*-*-* 02:15:00",
        "Persistent=true",
        "RandomizedDelaySec=300",
        "Unit=backupctl-drill-p0.service",
    ]:
        assert line in drill_timer


def test_on_failure_only_when_asked() -> None:
    options = systemd.UnitOptions(["/usr/bin/backupctl"], Path("/var/lib/backupctl"))
    units = systemd.render_units(scheduled("shop", "15 2 * * *"), options, [])
    assert "OnFailure" not in units["backupctl-backup-shop.service"]
    units = systemd.render_units(scheduled("shop", "15 2 * * *", "drill"), options, [])
    assert "OnFailure" not in units["backupctl-drill-shop.service"]


def test_a_drill_writes_no_target_a_backup_does(tmp_path: Path) -> None:
    settings = Settings(
        tmp_path / "p", tmp_path / "state", f"sqlite:///{tmp_path}/db/c.sqlite", tmp_path / "k"
    )
    catalog_dir = str(tmp_path / "db")
    assert writable_paths(scheduled("shop", "@daily"), settings) == sorted(["/srv/backups", catalog_dir])
    assert writable_paths(scheduled("shop", "@daily", "drill"), settings) == [catalog_dir]
    item = scheduled("shop", "@daily")
    metered = Scheduled(
        item.policy.model_copy(update={"metrics_file": "/var/lib/textfile/b.prom"}), item.cron
    )
    assert "/var/lib/textfile" in writable_paths(metered, settings)  # the .prom is replaced there


# --------------------------------------------------------------------------- cron
def test_cron_lines_parse_and_have_lock_and_log() -> None:
    options = cron.CronOptions(
        ["/usr/bin/backupctl", "--policies", "/etc/p"], Path("/var/lib/backupctl"), "root"
    )
    items = [scheduled(f"p{index}", expression) for index, expression in enumerate(EXPRESSIONS)]
    block = cron.render_block(items, options)
    jobs = cron.extract_block(block)
    assert len(jobs) == len(items)
    for job, item in zip(jobs, items, strict=True):
        fields = job.split()
        five = " ".join(fields[:5])
        validate_cron(five)
        assert CronExpr.parse(five).next_after(datetime(2026, 1, 1)) == item.cron.next_after(
            datetime(2026, 1, 1)
        )
        assert fields[5] == "root"
        assert f"-n /var/lib/backupctl/locks/{item.name}.cron.lock" in job
        assert job.endswith(f">> /var/lib/backupctl/logs/{item.name}.log 2>&1")
        assert f"backup {item.name}'" in job


def test_cron_drill_line_parses_waits_for_the_policy_lock_and_logs_apart() -> None:
    options = cron.CronOptions(["/usr/bin/backupctl"], Path("/var/lib/backupctl"))
    items = [
        scheduled("shop", "15 2 * * *"),
        scheduled("shop", "0 5 1 1,4,7,10 *", "drill", Path("/etc/backupctl/drills/shop 100%.yaml")),
        scheduled("web", "@weekly", "drill"),
    ]
    block = cron.render_block(items, options)
    assert "# drill shop: 0 5 1 1,4,7,10 *" in block.splitlines()
    backup, shop, web = cron.extract_block(block)
    for job, item in ((shop, items[1]), (web, items[2])):
        five = " ".join(job.split()[:5])
        validate_cron(five)
        assert CronExpr.parse(five).next_runs(datetime(2026, 1, 1), 5) == item.cron.next_runs(
            datetime(2026, 1, 1), 5
        )
        assert job.split()[5] == "/usr/bin/flock"  # user crontab: no user field
        # Its own flock file (a drill slot is not dropped while the backup runs) and its own log.
        assert f"-n /var/lib/backupctl/locks/{item.name}.drill.cron.lock " in job
        assert job.endswith(f">> /var/lib/backupctl/logs/{item.name}.drill.log 2>&1")
    assert "-n /var/lib/backupctl/locks/shop.cron.lock " in backup
    assert f"drill --wait {DRILL_LOCK_WAIT} web'" in web
    # What cron hands to sh (after '\\%' -> '%') runs the drill with the file as one argument.
    command = shop.split(" ", 5)[5].replace("\\%", "%")
    inner = shlex.split(command)[5]  # flock -n LOCK sh -c INNER >> LOG 2>&1
    assert shlex.split(inner.split("exec ", 1)[1])[-4:] == [
        "drill",
        "--wait",
        DRILL_LOCK_WAIT,
        "/etc/backupctl/drills/shop 100%.yaml",
    ]


def test_merge_block_is_idempotent_and_keeps_other_lines() -> None:
    own = "MAILTO=ops\n0 1 * * * /usr/local/bin/other\n"
    block = f"{cron.BEGIN}\n0 2 * * * x\n{cron.END}\n"
    once = cron.merge_block(own, block)
    assert once.startswith(own) and once.endswith(block)
    assert cron.merge_block(once, block) == once
    assert cron.merge_block(once, f"{cron.BEGIN}\n{cron.END}\n").count("0 2 * * * x") == 0
    assert cron.merge_block(once, None) == own
    with pytest.raises(ConfigError, match="unbalanced"):
        cron.merge_block(own + cron.BEGIN + "\n", block)


# --------------------------------------------------------------------------- the CLI
def write_scheduled_policy(space: Workspace, name: str, expression: str | None) -> None:
    extra: dict[str, Any] = {"schedule": expression} if expression else {}
    space.write_policy(
        name, space.base_policy(name, [{"name": "files", "type": "files", "path": str(space.root)}], **extra)
    )


def test_cli_systemd_install_reinstall_remove(workspace: Workspace, tmp_path: Path) -> None:
    write_scheduled_policy(workspace, "shop", "15 2 * * *")
    write_scheduled_policy(workspace, "web", "@hourly")
    write_scheduled_policy(workspace, "manual", None)
    units = tmp_path / "units"
    dry = run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "[Timer]" in dry.stdout and not units.exists()

    done = run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    names = sorted(path.name for path in units.iterdir())
    assert names == [f"backupctl-backup-{p}.{s}" for p in ("shop", "web") for s in ("service", "timer")]
    assert "systemctl daemon-reload && systemctl enable --now backupctl-backup-shop.timer" in done.stdout
    before = {path.name: path.read_text() for path in units.iterdir()}
    again = run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units))
    assert again.returncode == 0 and {p.name: p.read_text() for p in units.iterdir()} == before

    # A policy that lost its schedule loses its units; units of others are never touched.
    (units / "unrelated.service").write_text("[Service]\nExecStart=/bin/true\n")
    write_scheduled_policy(workspace, "web", None)
    synced = run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units), "--json")
    plan = json.loads(synced.stdout)
    assert [Path(path).name for path in plan["delete"]] == [
        "backupctl-backup-web.service",
        "backupctl-backup-web.timer",
    ]
    assert sorted(path.name for path in units.iterdir()) == [
        "backupctl-backup-shop.service",
        "backupctl-backup-shop.timer",
        "unrelated.service",
    ]
    removed = run_cli(workspace, "schedule", "remove", "--systemd", "--unit-dir", str(units))
    assert removed.returncode == 0, removed.stderr
    assert sorted(path.name for path in units.iterdir()) == ["unrelated.service"]


FAKE_CRONTAB = """#!/bin/sh
# A stand-in for crontab(1) keeping "the" crontab in $FAKE_CRONTAB_FILE.
case "$1" in
  -l) [ -f "$FAKE_CRONTAB_FILE" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }
      cat "$FAKE_CRONTAB_FILE" ;;
  -) cat > "$FAKE_CRONTAB_FILE" ;;
  *) exit 2 ;;
esac
"""


def test_cli_cron_user_crontab_install_remove(workspace: Workspace, tmp_path: Path) -> None:
    write_scheduled_policy(workspace, "shop", "15 2 * * mon-fri")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text(FAKE_CRONTAB)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    table = tmp_path / "crontab.txt"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CRONTAB_FILE": str(table)}

    done = run_cli(workspace, "schedule", "install", "--cron", "--user", env=env)
    assert done.returncode == 0, done.stderr
    jobs = cron.extract_block(table.read_text())
    assert len(jobs) == 1 and jobs[0].split()[:6] == ["15", "2", "*", "*", "mon-fri", "/usr/bin/flock"]
    assert (workspace.state / "logs").is_dir() and (workspace.state / "locks").is_dir()

    table.write_text("MAILTO=ops\n" + table.read_text())
    assert run_cli(workspace, "schedule", "install", "--cron", "--user", env=env).returncode == 0
    assert table.read_text().count(cron.BEGIN) == 1 and table.read_text().startswith("MAILTO=ops\n")
    removed = run_cli(workspace, "schedule", "remove", "--cron", "--user", env=env)
    assert removed.returncode == 0 and "removed 1 line(s)" in removed.stdout
    assert table.read_text() == "MAILTO=ops\n"


def test_cli_cron_file(workspace: Workspace, tmp_path: Path) -> None:
    write_scheduled_policy(workspace, "shop", "@daily")
    path = tmp_path / "cron.d" / "backupctl"
    assert run_cli(workspace, "schedule", "install", "--cron", "--cron-file", str(path)).returncode == 0
    (job,) = cron.extract_block(path.read_text())
    assert job.split()[:6] == ["0", "0", "*", "*", "*", "root"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert run_cli(workspace, "schedule", "remove", "--cron", "--cron-file", str(path)).returncode == 0
    assert not path.exists()


def test_cli_list(workspace: Workspace) -> None:
    write_scheduled_policy(workspace, "shop", "15 2 * * *")
    write_scheduled_policy(workspace, "manual", None)
    done = run_cli(workspace, "schedule", "list", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["policy"] == "shop" and row["schedule"] == "15 2 * * *" and len(row["next"]) == 3
    runs = [datetime.fromisoformat(text).astimezone() for text in row["next"]]
    assert runs == sorted(runs) and all((run.hour, run.minute) == (2, 15) for run in runs)
    assert run_cli(workspace, "schedule", "install").returncode == 2  # neither --systemd nor --cron


# --------------------------------------------------------------------------- drill schedules (CLI)
def write_drill(space: Workspace, relative: str, policy: str) -> Path:
    path = space.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {policy}-quarterly\npolicy: {policy}\nruntime: local\n")
    return path


def write_drilled_policy(
    space: Workspace, name: str, schedule: str | None, drill_schedule: str | None, drill_file: str | None
) -> None:
    extra: dict[str, Any] = {"schedule": schedule} if schedule else {}
    extra |= {"drill_schedule": drill_schedule} if drill_schedule else {}
    extra |= {"drill_file": drill_file} if drill_file else {}
    space.write_policy(
        name, space.base_policy(name, [{"name": "files", "type": "files", "path": str(space.root)}], **extra)
    )


def test_cli_systemd_drill_units_install_sync_remove(workspace: Workspace, tmp_path: Path) -> None:
    drill = write_drill(workspace, "drills/shop.yaml", "shop")
    write_drilled_policy(workspace, "shop", "15 2 * * *", "0 5 1 1,4,7,10 *", "../drills/shop.yaml")
    write_drilled_policy(workspace, "web", None, "@weekly", None)  # a drill schedule alone: default drill
    units = tmp_path / "units"
    done = run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in units.iterdir()) == [
        "backupctl-backup-shop.service",
        "backupctl-backup-shop.timer",
        "backupctl-drill-shop.service",
        "backupctl-drill-shop.timer",
        "backupctl-drill-web.service",
        "backupctl-drill-web.timer",
    ]
    assert (
        "enable --now backupctl-backup-shop.timer backupctl-drill-shop.timer backupctl-drill-web.timer"
        in (done.stdout)
    )
    shop = (units / "backupctl-drill-shop.service").read_text()
    assert f"drill --wait {DRILL_LOCK_WAIT} {drill}\n" in shop  # resolved from the policy's directory
    assert "OnCalendar=*-01,04,07,10-01 05:00:00" in (units / "backupctl-drill-shop.timer").read_text()
    assert f"drill --wait {DRILL_LOCK_WAIT} web\n" in (units / "backupctl-drill-web.service").read_text()

    # Without its drill_schedule a policy loses only its drill pair; remove takes the rest.
    write_drilled_policy(workspace, "shop", "15 2 * * *", None, "../drills/shop.yaml")
    synced = json.loads(
        run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units), "--json").stdout
    )
    assert [Path(path).name for path in synced["delete"]] == [
        "backupctl-drill-shop.service",
        "backupctl-drill-shop.timer",
    ]
    removed = run_cli(workspace, "schedule", "remove", "--systemd", "--unit-dir", str(units))
    assert removed.returncode == 0, removed.stderr
    assert list(units.iterdir()) == []
    assert "systemctl disable --now backupctl-backup-shop.timer backupctl-drill-web.timer" in removed.stdout


def test_cli_cron_file_has_the_drill_line(workspace: Workspace, tmp_path: Path) -> None:
    drill = write_drill(workspace, "elsewhere/q.yaml", "shop")
    write_drilled_policy(workspace, "shop", "@daily", "0 5 1 1,4,7,10 *", str(drill))  # absolute
    path = tmp_path / "cron.d" / "backupctl"
    done = run_cli(workspace, "schedule", "install", "--cron", "--cron-file", str(path))
    assert done.returncode == 0, done.stderr
    assert "installed 2 schedule(s)" in done.stdout
    backup, drilled = cron.extract_block(path.read_text())
    assert backup.split()[:6] == ["0", "0", "*", "*", "*", "root"]
    assert drilled.split()[:6] == ["0", "5", "1", "1,4,7,10", "*", "root"]
    assert f"drill --wait {DRILL_LOCK_WAIT} {drill}'" in drilled and "shop.drill.log" in drilled
    removed = run_cli(workspace, "schedule", "remove", "--cron", "--cron-file", str(path))
    assert "removed 2 line(s)" in removed.stdout and not path.exists()


def test_cli_list_shows_drill_next_runs(workspace: Workspace) -> None:
    drill = write_drill(workspace, "drills/shop.yaml", "shop")
    write_drilled_policy(workspace, "shop", "15 2 * * *", "0 5 1 1,4,7,10 *", "../drills/shop.yaml")
    write_drilled_policy(workspace, "web", None, "30 4 * * sun", None)
    done = run_cli(workspace, "schedule", "list", "--json", "--count", "4")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(row["policy"], row["job"], row.get("drill")) for row in rows] == [
        ("shop", "backup", None),
        ("shop", "drill", str(drill)),
        ("web", "drill", "default"),
    ]
    now = datetime.now()
    for row in rows:
        expected = CronExpr.parse(row["schedule"]).next_runs(now, 4)
        got = [datetime.fromisoformat(text).astimezone().replace(tzinfo=None) for text in row["next"]]
        assert got == expected, row
    text = run_cli(workspace, "schedule", "list").stdout.splitlines()
    assert (
        f"shop drill: 0 5 1 1,4,7,10 * ({drill})" in text
        and "web drill: 30 4 * * sun (default drill)" in text
    )


def test_a_bad_drill_file_is_a_clear_error_and_install_writes_nothing(workspace: Workspace) -> None:
    write_drill(workspace, "drills/other.yaml", "other")
    (workspace.root / "drills" / "broken.yaml").write_text("policy: [unclosed\n")
    settings = Settings(workspace.policies, workspace.state, "sqlite:///x", workspace.keys)
    where = f"{workspace.policies / 'shop.yaml'}: at 'drill_file': "
    for drill_file, message in [
        ("../drills/other.yaml", "drills policy 'other', not 'shop'"),
        ("../drills/broken.yaml", "cannot read drill file"),
    ]:
        write_drilled_policy(workspace, "shop", "15 2 * * *", "@weekly", drill_file)
        with pytest.raises(ConfigError) as raised:
            scheduled_policies(settings)
        assert str(raised.value).startswith(where) and message in str(raised.value), drill_file
    # A drill file that does not exist is a policy error (the loader's, with file:line).
    write_drilled_policy(workspace, "shop", "15 2 * * *", "@weekly", "../drills/missing.yaml")
    units = workspace.root / "units"
    done = run_cli(workspace, "schedule", "install", "--systemd", "--unit-dir", str(units))
    assert done.returncode == 2, done.stderr
    assert "drill_file" in done.stderr and "missing.yaml does not exist" in done.stderr, done.stderr
    assert not units.exists()


# --------------------------------------------------------------------------- the daemon's slots
class FakeProcess:
    """Stands in for a child run: running until `finish()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def finish(self, code: int = 0) -> None:
        self.returncode = code


def test_daemon_one_job_at_a_time_per_policy(tmp_path: Path) -> None:
    """Same job still running: the slot is skipped. The other job: it waits (once) and starts when
    the running one ends. Another policy is not held up."""
    from backupctl.scheduling.daemon import Daemon, _Running

    started: list[tuple[str, str]] = []

    class Recording(Daemon):
        def _start(self, item: Scheduled) -> None:
            started.append((item.name, item.kind))
            process: Any = FakeProcess(1000 + len(started))
            self._running[item.name] = _Running(item, process, 0.0)

    backup, drill = scheduled("shop", "@daily"), scheduled("shop", "@weekly", "drill")
    other = scheduled("web", "@weekly", "drill")
    settings = Settings(tmp_path, tmp_path / "state", "sqlite:///x", tmp_path / "keys")
    daemon = Recording([backup, drill, other], settings)
    slot = datetime(2026, 3, 1, 0, 0)
    daemon._fire(backup, slot)
    daemon._fire(drill, slot)  # waits for the backup
    daemon._fire(other, slot)  # another policy: starts at once
    daemon._fire(backup, slot)  # the backup still runs: skipped
    daemon._fire(drill, slot)  # already waiting: skipped
    assert started == [("shop", "backup"), ("web", "drill")]
    assert daemon._waiting["shop"] == [drill]
    daemon._start_waiting()
    assert started == [("shop", "backup"), ("web", "drill")]  # the backup has not ended

    process: Any = daemon._running["shop"].process
    process.finish(0)
    daemon._reap()
    daemon._start_waiting()
    assert started[-1] == ("shop", "drill") and daemon._waiting["shop"] == []
    daemon._fire(backup, slot)  # now the backup waits for the drill
    assert daemon._waiting["shop"] == [backup]
    # Every fire, run or skipped, re-armed its job for the next slot (one-shot jobs).
    assert len(daemon._scheduler.jobs) == 6
