"""PITR benchmark (issue #12), same run, same machine: backupctl vs pgBackRest vs cp + sync.

One PostgreSQL 15 cluster archives every segment twice, through `backupctl wal push` and
`pgbackrest archive-push` (archive_command runs both), so both tools restore from their own
archive of the same WAL.

- archive: real WAL segments written by pgbench are pushed again, one process per segment as
  PostgreSQL does, into fresh archives by each tool: per-segment latency p50/p99 and the
  sustained segments/s of one serial archiver, beside the WAL rate pgbench produces here.
  backupctl: zstd + age + signed record, local target; pgBackRest: zstd + aes-256-cbc repo;
  cp + sync: the floor (no compression, no encryption).
- restore: base backup (backupctl `wal base-backup`, `pgbackrest backup --type=full`), a pgbench
  load, then a point-in-time restore to the same time by each tool into a new data directory,
  wall time until the server has promoted.

Scale: BENCH_PITR_SCALE (pgbench scale, default 10, about 150 MiB; the issue's 1 GiB run is
scale 70), BENCH_PITR_SECONDS (pgbench run, default 20), BENCH_PITR_WAL_MIB (the pgbench run
is repeated until at least this much WAL was written; the issue's run: 1024), BENCH_PITR_SEGMENTS (segments
re-pushed per tool, default 20), BENCH_PITR_ARCHIVE_ONLY=1 (skip the restore); BENCH_PITR_RPO=1
runs the RPO-under-load sampling instead (tests/benchmarks/bench_pitr_rpo.py). The asynchronous
mode is measured beside them: `wal archiver --once` pushes the segments ahead (2 workers, timed),
then `wal push --spool` answers each one from its ack, and so does archive_command's shell line
(`wal archive-command`: sh + stat, run as PostgreSQL runs it). Rows give the children's CPU time
per segment (user + system, getrusage) beside the wall-clock percentiles. Printed tables go into
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml

from backupctl.pitr.archive_command import archive_command as archive_command_line
from backupctl.pitr.archive_command import substitute
from tests.integration.pitr.conftest import POLICY, SOURCE, make_setup

SCALE = int(os.environ.get("BENCH_PITR_SCALE", "10"))
SECONDS = int(os.environ.get("BENCH_PITR_SECONDS", "20"))
SEGMENTS = int(os.environ.get("BENCH_PITR_SEGMENTS", "20"))
WAL_MIB = int(os.environ.get("BENCH_PITR_WAL_MIB", "0"))  # the load repeats until this much WAL
STANZA = "bench"
ROOT = Path(__file__).resolve().parents[2]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _installed_console_script(venv: Path, env: dict[str, str]) -> Path:
    """`backupctl` as `pip install` leaves it in a venv: a venv of Debian's python3 (the server's
    user cannot run this checkout's interpreter under /root) whose site-packages point at this
    checkout and its venv's packages through a .pth (what an install would copy there), and pip's
    entry-point script for `backupctl.cli.fastpath:main`. The environment (state dir, policies)
    is written into the script, as an operator's archive_command line would set it."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    work_site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "backupctl-checkout.pth").write_text(f"{ROOT}\n{work_site}\n")
    script = venv / "bin" / "backupctl"
    exports = "".join(f"os.environ.setdefault({k!r}, {v!r})\n" for k, v in env.items())
    script.write_text(
        f"#!{venv}/bin/python3\nimport os\nimport sys\n{exports}"
        "from backupctl.cli.fastpath import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


def _pgbackrest_async(root: Path, conf: Path, old_repo: Path, pgdata: Path, segments: list[Path]) -> Path:
    """A third pgBackRest repository with `archive-async=y`: one archive-push starts its async
    process, which pushes every `.ready` segment of `pgdata` ahead (process-max 2, as the
    archiver's two workers); returns once all are acknowledged in its spool."""
    repo, spool = root / "pgbackrest-repo3", root / "pgbackrest-spool"
    repo.mkdir()
    spool.mkdir()
    conf3 = root / "pgbackrest3.conf"
    text = conf.read_text().replace(str(old_repo), str(repo))
    options = f"[global]\narchive-async=y\nspool-path={spool}\nprocess-max=2\n"
    conf3.write_text(text.replace("[global]\n", options, 1))
    _chown(root)
    base = ["pgbackrest", f"--config={conf3}", f"--stanza={STANZA}"]
    subprocess.run(_as_postgres([*base, "stanza-create"]), check=True, capture_output=True)
    # the async process reads `.ready` files under pg1-path: point it at the staged data directory
    pg1 = next(line for line in conf3.read_text().splitlines() if line.startswith("pg1-path="))
    conf3.write_text(conf3.read_text().replace(pg1, f"pg1-path={pgdata}"))
    (pgdata / "global").mkdir(exist_ok=True)  # it reads the cluster's version and identifier there
    shutil.copyfile(Path(pg1.partition("=")[2]) / "global" / "pg_control", pgdata / "global" / "pg_control")
    _chown(pgdata)
    first = subprocess.run(
        _as_postgres([*base, "archive-push", str(pgdata / "pg_wal" / segments[0].name)]),
        capture_output=True,
        text=True,
    )
    if first.returncode != 0:
        raise SystemExit(f"pgbackrest archive-push (async) failed: {first.stdout}{first.stderr}")
    out = spool / "archive" / STANZA / "out"
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.ok"))) < len(segments) and time.monotonic() < deadline:
        time.sleep(0.2)
    return conf3


def _pgbackrest_conf(root: Path, repo: Path, data: Path, port: int) -> Path:
    conf = root / "pgbackrest.conf"
    conf.write_text(
        "[global]\n"
        f"repo1-path={repo}\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=benchmark-only-passphrase\n"
        "compress-type=zst\ncompress-level=1\nstart-fast=y\narchive-check=y\n"
        f"log-level-console=warn\nlog-path={root}/pgbackrest-log\nlock-path={root}/pgbackrest-lock\n"
        f"[{STANZA}]\npg1-path={data}\npg1-port={port}\npg1-socket-path={data}\npg1-user=postgres\n"
    )
    return conf


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    if os.environ.get("BENCH_PITR_RPO"):  # the RPO-under-load sampling instead (a 5-minute run)
        from tests.benchmarks import bench_pitr_rpo

        bench_pitr_rpo.main()
        return
    root = Path(tempfile.mkdtemp(prefix="backupctl-bench-pitr-", dir="/tmp"))
    os.chmod(root, 0o755)
    repo = root / "pgbackrest-repo"
    staged = root / "staged-wal"
    for directory in (repo, staged, root / "pgbackrest-log", root / "pgbackrest-lock"):
        directory.mkdir()
    conf = root / "pgbackrest.conf"
    archive_command = (
        f"{root}/setup/backupctl wal push {POLICY} --source {SOURCE} %p %f"
        f" && pgbackrest --config={conf} --stanza={STANZA} archive-push %p && cp %p {staged}/%f"
    )
    setup = make_setup(
        root / "setup", settings={"archive_command": archive_command, "archive_timeout": "60s"}
    )
    _pgbackrest_conf(root, repo, setup.cluster.data_dir, setup.cluster.port)
    _chown(root)
    setup.cluster.start()
    setup.env["PITR_TEST_PG_PASSWORD"] = setup.cluster.password
    bench_env = {**os.environ, "PGPASSWORD": setup.cluster.password}
    pgbench = str(setup.cluster.bindir / "pgbench")
    url = setup.cluster.url("postgres")
    pgbackrest = ["pgbackrest", f"--config={conf}", f"--stanza={STANZA}"]
    try:
        subprocess.run(_as_postgres([*pgbackrest, "stanza-create"]), check=True, capture_output=True)
        print(
            f"\nPITR benchmark: pgbench scale {SCALE}, {SECONDS}s load, {SEGMENTS} segments re-pushed",
            flush=True,
        )
        subprocess.run(
            [pgbench, "-i", "-s", str(SCALE), "-q", url], check=True, capture_output=True, env=bench_env
        )
        done = setup.run("wal", "base-backup", POLICY, "--source", SOURCE)
        assert done.returncode == 0, done.stderr
        subprocess.run(_as_postgres([*pgbackrest, "--type=full", "backup"]), check=True, capture_output=True)

        # ---------------------------------------------------------------- WAL rate of pgbench
        with psycopg.connect(url, password=setup.cluster.password, autocommit=True) as connection:
            lsn_before = connection.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            began = time.monotonic()
            while True:  # SECONDS of load, repeated until at least WAL_MIB of WAL (when set)
                subprocess.run(
                    [pgbench, "-T", str(SECONDS), "-c", "4", "-j", "2", "-n", url],
                    check=True,
                    capture_output=True,
                    env=bench_env,
                )
                wal_bytes = connection.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn_before,)
                ).fetchone()[0]  # type: ignore[index]
                if float(wal_bytes) >= WAL_MIB * 2**20:
                    break
            elapsed = time.monotonic() - began
            connection.execute("CREATE TABLE IF NOT EXISTS bench_mark (at timestamptz)")
            connection.execute("INSERT INTO bench_mark VALUES (clock_timestamp())")
            target = connection.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            time.sleep(1)
            connection.execute("INSERT INTO bench_mark VALUES (clock_timestamp())")
            connection.execute("SELECT pg_switch_wal()")
        wal_rate = float(wal_bytes) / elapsed / (16 * 2**20)
        setup.switch_and_wait(timeout=3600)  # everything up to the target is archived (1 GiB: minutes)

        # ---------------------------------------------------------------- archive latency
        segments = sorted(p for p in staged.iterdir() if len(p.name) == 24)[:SEGMENTS]
        print(
            f"  pgbench wrote {float(wal_bytes) / 2**20:.0f} MiB of WAL in {elapsed:.0f}s = "
            f"{wal_rate:.2f} segments/s; {len(segments)} segments re-pushed per tool",
            flush=True,
        )
        bench_policy = root / "setup" / "policies" / "benchpush.yaml"
        text = (root / "setup" / "policies" / f"{POLICY}.yaml").read_text()
        bench_policy.write_text(
            text.replace(f"name: {POLICY}", "name: benchpush", 1).replace(
                str(root / "setup" / "backups"), str(root / "push-backupctl")
            )
        )
        (root / "push-backupctl").mkdir()
        (root / "push-cp").mkdir()
        # the asynchronous mode: a policy with an archiver, a data directory whose .ready
        # segments the archiver pushes ahead (timed), then archive_command answers from its acks
        spool = root / "spool"
        async_policy = yaml.safe_load(text)
        async_policy["name"] = "benchasync"
        async_policy["targets"][0]["path"] = str(root / "push-async")
        async_policy["sources"][0]["pitr"]["archiver"] = {"spool": str(spool), "workers": 2}
        (root / "setup" / "policies" / "benchasync.yaml").write_text(yaml.safe_dump(async_policy))
        (root / "push-async").mkdir()
        pgdata = root / "async-pgdata"
        (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
        for segment in segments:
            shutil.copyfile(segment, pgdata / "pg_wal" / segment.name)
            (pgdata / "pg_wal" / "archive_status" / f"{segment.name}.ready").touch()
        repo2 = root / "pgbackrest-repo2"
        repo2.mkdir()
        conf2 = root / "pgbackrest2.conf"
        conf2.write_text(conf.read_text().replace(str(repo), str(repo2)))
        _chown(root)
        subprocess.run(
            _as_postgres(["pgbackrest", f"--config={conf2}", f"--stanza={STANZA}", "stanza-create"]),
            check=True,
            capture_output=True,
        )
        wrapper = (root / "setup" / "backupctl").read_text()
        interpreter = wrapper.split(" -m backupctl")[0].split()[-1]
        nosite = root / "setup" / "backupctl-nosite"
        nosite.write_text(wrapper.replace(" -m backupctl", " -S -m backupctl"))
        nosite.chmod(0o755)
        installed = _installed_console_script(root / "venv", setup.env)
        conf3 = _pgbackrest_async(root, conf, repo, pgdata, segments)
        began = time.monotonic()
        ahead = setup.run(
            "wal", "archiver", "benchasync", "--source", SOURCE, "--pgdata", str(pgdata), "--once"
        )
        archiver_seconds = time.monotonic() - began
        if ahead.returncode != 0:
            raise SystemExit(f"wal archiver failed: {ahead.stderr[-1500:]}")

        shell_line = archive_command_line(
            "benchasync", SOURCE, str(spool), program=str(installed), stat=shutil.which("stat") or "stat"
        )

        # every acked segment must be answered by sh + stat alone: with no backupctl to fall back
        # to (exec of a missing program: 127), each one still exits 0
        proof = archive_command_line("benchasync", SOURCE, str(spool), program="/nonexistent/backupctl")
        for segment in segments:
            line = substitute(proof, str(pgdata / "pg_wal" / segment.name), segment.name)
            if subprocess.run(_as_postgres(["sh", "-c", line]), capture_output=True).returncode != 0:
                raise SystemExit(f"the shell line did not answer {segment.name} from its ack")

        def spooled(command: Path) -> Callable[[Path], list[str]]:
            """`wal push --spool` of a segment the archiver acked, through `command`."""
            return lambda seg: [
                str(command), "wal", "push", "benchasync", "--source", SOURCE,
                "--spool", str(spool), str(pgdata / "pg_wal" / seg.name), seg.name,
            ]  # fmt: skip

        tools = {
            "backupctl wal push": lambda seg: [
                str(root / "setup" / "backupctl"),
                "wal",
                "push",
                "benchpush",
                "--source",
                SOURCE,
                str(seg),
                seg.name,
            ],
            "backupctl wal push --spool (acked)": spooled(root / "setup" / "backupctl"),
            # the same, interpreter started without `site`: every python3 start on these machines
            # processes a .pth of the sandbox that imports certifi (40-100 ms under load, measured
            # with -X importtime); the fast path needs no site (PYTHONPATH names everything)
            "  same, python3 -S": spooled(nosite),
            # as an operator installs it: pip's console script in a venv of the system python3
            # (no PYTHONPATH, no system site-packages, so no sandbox .pth either)
            "  same, console script in a venv": spooled(installed),
            # archive_command = the shell line of `wal archive-command`, run as PostgreSQL runs it
            # (`sh -c`, %p and %f substituted): sh + stat, no Python for an acked segment
            "archive_command sh line (acked)": lambda seg: [
                "sh",
                "-c",
                substitute(shell_line, str(pgdata / "pg_wal" / seg.name), seg.name),
            ],
            "python3 -c pass (interpreter)": lambda seg: [interpreter, "-c", "pass"],
            "python3 -S -c pass": lambda seg: [interpreter, "-S", "-c", "pass"],
            "pgbackrest archive-push": lambda seg: [
                "pgbackrest",
                f"--config={conf2}",
                f"--stanza={STANZA}",
                "archive-push",
                str(seg),
            ],
            # pgBackRest's own asynchronous mode, its spool filled ahead the same way: the
            # like-for-like anchor of `wal push --spool`
            "pgbackrest archive-push, archive-async": lambda seg: [
                "pgbackrest",
                f"--config={conf3}",
                f"--stanza={STANZA}",
                "archive-push",
                str(pgdata / "pg_wal" / seg.name),
            ],
            "cp + sync": lambda seg: [
                "sh",
                "-c",
                f"cp {seg} {root}/push-cp/{seg.name} && sync {root}/push-cp/{seg.name}",
            ],
        }
        latencies: dict[str, list[float]] = {name: [] for name in tools}
        cpu: dict[str, float] = dict.fromkeys(tools, 0.0)  # user + system of the children, s
        for segment in segments:  # alternate the tools segment by segment: the VM's speed drifts
            for name, argv in tools.items():
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                began = time.monotonic()
                done_push = subprocess.run(
                    _as_postgres(argv(segment)),
                    capture_output=True,
                    text=True,
                    env={**os.environ, **setup.env},
                )
                latencies[name].append(time.monotonic() - began)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name] += after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
                if done_push.returncode != 0:
                    raise SystemExit(f"{name} failed: {done_push.stderr[-1500:]}")
        print(
            f"\n  {'archive (one process per segment)':<34} {'p50':>8} {'p99':>8} {'seg/s':>7} "
            f"{'x WAL rate':>11} {'CPU/seg':>8}"
        )
        for name, values in latencies.items():
            rate = 1 / statistics.mean(values)
            print(
                f"  {name:<34} {_percentile(values, 0.5) * 1000:6.1f}ms "
                f"{_percentile(values, 0.99) * 1000:6.1f}ms "
                f"{rate:7.1f} {rate / wal_rate if wal_rate else float('inf'):10.1f}x "
                f"{cpu[name] / len(values) * 1000:6.1f}ms",
                flush=True,
            )

        rate = len(segments) / archiver_seconds
        print(
            f"  {'backupctl wal archiver (2 workers)':<34} {'':>8} {'':>8} {rate:7.1f} "
            f"{rate / wal_rate if wal_rate else float('inf'):10.1f}x   "
            f"(pushes ahead: {archiver_seconds:.1f}s for {len(segments)} segments, process start included)",
            flush=True,
        )
        print(f"  load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        if os.environ.get("BENCH_PITR_ARCHIVE_ONLY"):
            return

        # ---------------------------------------------------------------- point-in-time restore
        print(
            f"\n  restore to {target.astimezone(UTC).isoformat()} "
            f"(base backup + {float(wal_bytes) / 2**20:.0f} MiB WAL)"
        )
        to_backupctl = root / "restore-backupctl"
        began = time.monotonic()
        done = setup.run(
            "wal",
            "restore",
            POLICY,
            "--source",
            SOURCE,
            "--to-time",
            target.isoformat(),
            "--to-dir",
            str(to_backupctl),
            "--backupctl-command",
            str(setup.wrapper),
            timeout=3600,
        )
        backupctl_seconds = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"backupctl restore failed: {done.stderr[-2000:]}")
        print(f"  {'backupctl wal restore --to-time':<34} {backupctl_seconds:7.1f}s", flush=True)
        to_pgbackrest = root / "restore-pgbackrest"
        to_pgbackrest.mkdir(mode=0o700)
        _chown(to_pgbackrest)
        began = time.monotonic()
        subprocess.run(
            _as_postgres(
                [
                    *pgbackrest,
                    f"--pg1-path={to_pgbackrest}",
                    "--type=time",
                    f"--target={target.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}+00",
                    "--target-action=promote",
                    "restore",
                ]
            ),
            check=True,
            capture_output=True,
        )
        (to_pgbackrest / "postgresql.auto.conf").open("a").write(
            f"unix_socket_directories = '{to_pgbackrest}'\narchive_mode = 'off'\n"
        )
        port = str(_free_port())
        log = to_pgbackrest / "restore.log"
        pg_ctl = str(setup.cluster.bindir / "pg_ctl")
        started = subprocess.run(
            _as_postgres([pg_ctl, "start", "-D", str(to_pgbackrest), "-l", str(log), "-o", f"-p {port}"]),
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            raise SystemExit(f"pg_ctl start failed: {started.stderr[-800:]} {log.read_text()[-1500:]}")
        while "database system is ready to accept connections" not in log.read_text(errors="replace"):
            time.sleep(0.2)
        pgbackrest_seconds = time.monotonic() - began
        subprocess.run(
            _as_postgres([pg_ctl, "stop", "-D", str(to_pgbackrest), "-m", "fast"]), capture_output=True
        )
        print(
            f"  {'pgbackrest restore --type=time':<34} {pgbackrest_seconds:7.1f}s   "
            f"ratio {backupctl_seconds / pgbackrest_seconds:.2f}x",
            flush=True,
        )
        print(f"  (measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    finally:
        setup.cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    from backupctl.local_cluster.postgres import free_port

    return free_port()


if __name__ == "__main__":
    main()
