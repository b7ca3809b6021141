"""`make demo` end to end: scripts/demo.py as a subprocess in a private directory (local drill
runtime, the Docker drill is covered by tests/e2e/test_drill.py), then the commands it prints
to try next, run exactly as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_three_two_one_and_drills_from_offsite(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    env = {**os.environ, "BACKUPCTL_DEMO_DIR": str(demo_dir), "BACKUPCTL_DEMO_RUNTIME": "local"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env=env, text=True, capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    # The status table: every rule of 3-2-1-1-0 holds, read from the real targets.
    assert re.search(r"^shop: compliant", output, re.M), output
    for rule, detail in [
        ("copies", r"4 copies \(production \+ local, offsite, dedup\)"),
        ("media", r"2 media \(disk, object-storage\)"),
        ("offsite", r"off-site: offsite"),
        ("immutable", r"immutable: offsite"),
        ("errors", r"last verification ok"),
    ]:
        assert re.search(rf"^\s*{rule}\s+ok\s+{detail}", output, re.M), (rule, output)
    # The drill restored the off-site (S3) copy and passed.
    assert re.search(r"^drill shop PASSED: snapshot \S+ from offsite", output, re.M), output
    assert "tables restored with identical rows and content: 7/7" in output

    # The commands printed to try next work as printed (PostgreSQL and S3 are stopped by now).
    tail = output.split("Try next", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in tail if line.startswith("  ")]
    assert commands[0].startswith(". ") and any(c.startswith("backupctl ") for c in commands), commands
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPCTL_", "AWS_"))}
    # No venv on PATH: the printed `. env.sh` line must be enough to find `backupctl`.
    clean_env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for index, command in enumerate(commands[1:], start=1):
        script = "set -e\n" + commands[0] + "\n" + command + "\n"
        ran = subprocess.run(["bash", "-c", script], env=clean_env, cwd=tmp_path, text=True,
                             capture_output=True, timeout=300, check=False)  # fmt: skip
        assert ran.returncode == 0, (index, command, ran.stdout, ran.stderr)
    assert (demo_dir / "from-restic" / "products").is_dir()
