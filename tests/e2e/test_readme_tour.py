"""README.md's "A five-minute tour", run line by line exactly as written, in a fresh environment.

Fresh: a private HOME, state dir and working directory (with `.venv` linked to this checkout's),
no BACKUPCTL_* variable but the state dir, a real PostgreSQL database (the fixture) and a real S3
endpoint (moto) that the example policy reaches through the variables the README names. Every
line must exit 0; the run stops at the first that does not and names it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_backup_restore import make_tree
from tests.fixtures.postgres import PgDatabase
from tests.fixtures.s3 import TEST_ENV, new_bucket_name

ROOT = Path(__file__).resolve().parents[2]


def tour_lines() -> list[str]:
    """The commands of the tour's shell block, comments stripped."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A five-minute tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md: no ```sh block in the tour"
    lines = []
    for raw in block.group(1).splitlines():
        line = raw.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_readme_tour_runs_as_written(
    pg_database: PgDatabase, pg_empty_database: PgDatabase, s3_server: str, tmp_path: Path
) -> None:
    lines = tour_lines()
    assert any(line.startswith("backupctl backup app") for line in lines), lines
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    uploads = tmp_path / "uploads"
    make_tree(uploads)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPCTL_", "AWS_", "PG"))}
    env |= {
        **TEST_ENV,
        "HOME": str(tmp_path / "home"),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "NO_COLOR": "1",
        "BACKUPCTL_STATE_DIR": str(tmp_path / "state"),
        "AWS_ENDPOINT_URL_S3": s3_server,
        "APP_DB_URL": pg_database.url,
        "APP_DB_PASSWORD": pg_database.password,
        "APP_UPLOADS_DIR": str(uploads),
        "APP_BACKUP_DIR": str(tmp_path / "backups"),
        "APP_S3_BUCKET": new_bucket_name(),
        "APP_SCRATCH_URL": pg_empty_database.url,
        "PGPASSWORD": pg_empty_database.password,  # the scratch database's owner (libpq reads it)
    }
    (tmp_path / "home").mkdir()
    script = ["set -u"]
    for number, line in enumerate(lines, start=1):
        marker = shlex.quote(f"TOUR LINE {number} FAILED: {line}")
        script.append(f"{line} || {{ rc=$?; echo {marker} exit $rc >&2; exit 1; }}")
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env, text=True,
                          capture_output=True, timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-6000:] + done.stdout[-3000:]
    assert "app: compliant" in done.stdout and "drill app-default PASSED" in done.stdout, done.stdout[-3000:]
    assert (work / "restored-uploads" / "products" / "p007.jpg").read_bytes() == (
        uploads / "products" / "p007.jpg"
    ).read_bytes()
