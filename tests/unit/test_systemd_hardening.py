"""Generated systemd units are confined: `systemd-analyze security --offline=true` scores each
service (systemd 252: 0 = fully confined, 10 = UNSAFE; the stock unit rated 9.0), and each unit
passes `systemd-analyze verify` with the hardening in it (tests/unit/test_scheduling.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from backupctl.scheduling import backupctl_argv, systemd
from backupctl.settings import Settings
from tests.unit.test_scheduling import analyzer, scheduled

LIMITS = {"backup": 4.0, "drill": 4.0}  # measured: backup 2.1, drill 2.8 (docs/operations.md)


@pytest.mark.parametrize("kind", ["backup", "drill"])
def test_security_score_of_each_generated_unit(tmp_path: Path, kind: str) -> None:
    program = analyzer()
    settings = Settings(tmp_path / "policies", tmp_path / "state", "sqlite:///x", tmp_path / "state" / "keys")
    options = systemd.UnitOptions(backupctl_argv(settings, executable=sys.executable), settings.state_dir)
    drill_file = tmp_path / "shop.yaml" if kind == "drill" else None
    units = systemd.render_units(scheduled("shop", "15 2 * * *", kind, drill_file), options, ["/srv/backups"])  # type: ignore[arg-type]
    systemd.write_units(units, tmp_path)
    [service] = [name for name in units if name.endswith(".service")]
    done = subprocess.run([program, "security", "--offline=true", str(tmp_path / service)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= LIMITS[kind], done.stdout
    verified = subprocess.run([program, "verify", str(tmp_path / service)], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
