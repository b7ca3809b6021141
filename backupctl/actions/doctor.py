"""`backupctl doctor`: is this host fit to back up and restore its policies? Each problem with its fix.

Checks (per policy, plus global ones):
  tools    pg_dump/pg_restore present and pg_dump's major >= the server's; mariadb-dump/mysqldump
           and the mariadb/mysql client; restic >= 0.14; zstd and age (optional break-glass tools)
  keys     the signing key exists and is 0600; the age identity configured, readable and 0600;
           every secret reference of a policy resolvable without running commands
  targets  reachability and posture read from the real target; local free space
  docker   an engine answers (drills); otherwise drills use the local runtime
  clock    no snapshot in the catalog starts in the future; PostgreSQL's now() agrees with ours

The `*_finding` functions are pure (tests feed them facts); `run_checks` does the I/O.
"""

from __future__ import annotations

import re
import shutil
import socket
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from backupctl.core.crypto import SIGNING_KEY_FILE
from backupctl.core.secrets import SecretRef
from backupctl.errors import BackupctlError, ConfigIssue, SecretError
from backupctl.policy.schema import MysqlSource, Policy, PostgresSource
from backupctl.settings import Settings
from backupctl.targets.registry import StoreTraits, traits_of

GIB = 1 << 30
MIB = 1 << 20
WARN_FREE_BYTES = GIB
FAIL_FREE_BYTES = 100 * MIB
MAX_SKEW = timedelta(minutes=5)
FUTURE_TOLERANCE = timedelta(minutes=1)
from backupctl.actions.doctor_findings import CONNECT_TIMEOUT, Finding  # noqa: E402  # re-exported


def _ok(check: str, detail: str) -> Finding:
    return Finding(check, True, detail)


# --------------------------------------------------------------------------- pure checks
def parse_major(version_output: str) -> int | None:
    """The major version in `pg_dump --version` output ("pg_dump (PostgreSQL) 16.2 (Debian ...)")."""
    found = re.search(r"\)\s*(\d+)(?:\.\d+)?", version_output) or re.search(r"\b(\d+)\.\d+", version_output)
    return int(found.group(1)) if found else None


def pg_version_finding(check: str, tool: str, tool_major: int | None, server_major: int | None) -> Finding:
    """pg_dump must be at least as new as the server it dumps."""
    if tool_major is None:
        return Finding(
            check, False, f"cannot tell the version of {tool}", f"run `{tool} --version`", warn=True
        )
    if server_major is None:
        return _ok(check, f"{tool} {tool_major} (server version not read)")
    if tool_major < server_major:
        return Finding(
            check, False, f"{tool} {tool_major} is older than the server ({server_major}): it cannot dump",
            f"install postgresql-client-{server_major} and point `pg_dump:` at its pg_dump",
        )  # fmt: skip
    return _ok(check, f"{tool} {tool_major} >= server {server_major}")


def mode_finding(check: str, path: Path, mode: int | None, missing_fix: str) -> Finding:
    """A private key file must exist and be accessible by its owner only."""
    if mode is None:
        return Finding(check, False, f"{path} does not exist", missing_fix)
    if mode & 0o077:
        return Finding(check, False, f"{path} has mode {mode:04o}: readable by others", f"chmod 600 {path}")
    return _ok(check, f"{path} is {mode:04o}")


def free_space_finding(check: str, path: str, free: int | None) -> Finding:
    """Below 100 MiB a backup cannot finish (FAIL); below 1 GiB it soon will not (WARN)."""
    if free is None:
        return _ok(check, f"free space at {path} unknown")
    shown = f"{free / GIB:.1f} GiB" if free >= GIB else f"{free / MIB:.0f} MiB"
    fix = f"free space at {path} or move the target to a larger disk"
    if free < FAIL_FREE_BYTES:
        return Finding(check, False, f"only {shown} free at {path}", fix)
    if free < WARN_FREE_BYTES:
        return Finding(check, False, f"only {shown} free at {path}", fix, warn=True)
    return _ok(check, f"{shown} free at {path}")


def clock_finding(newest: datetime | None, now: datetime, where: str) -> Finding:
    """A snapshot that starts in the future means the clock went backwards."""
    if newest is None:
        return _ok("clock", f"no snapshot in {where} to compare with")
    if newest - now > FUTURE_TOLERANCE:
        return Finding(
            "clock", False,
            f"clock went backwards: snapshot of {newest:%Y-%m-%d %H:%M:%S} UTC in {where} is in the future",
            "fix the system time (timedatectl status; enable NTP with chrony or systemd-timesyncd); "
            "retention and RPO depend on it",
        )  # fmt: skip
    return _ok("clock", f"newest snapshot in {where} is in the past")


def skew_finding(server_now: datetime, now: datetime, where: str) -> Finding:
    """More than 5 minutes between our clock and a database server's is suspicious."""
    skew = abs((server_now - now).total_seconds())
    if skew > MAX_SKEW.total_seconds():
        return Finding(
            "clock", False, f"clock differs from {where} by {skew:.0f}s",
            "enable NTP on both hosts (timedatectl set-ntp true)", warn=True,
        )  # fmt: skip
    return _ok("clock", f"clock agrees with {where} ({skew:.1f}s)")


def posture_findings(check: str, traits: StoreTraits, reachable: bool, problems: list[str]) -> list[Finding]:
    """Unreachable is a FAIL; posture problems that refuse backups (S3's) FAIL, others are warnings."""
    if not reachable:
        why = "; ".join(problems) or "no answer"
        return [Finding(check, False, f"unreachable: {why}", traits.unreachable_hint)]
    found = [
        Finding(check, False, problem, _fix_in(problem), warn=not traits.posture_refuses_backups)
        for problem in problems
        if not problem.startswith("free space below")  # reported by free_space_finding
    ]
    return found or [_ok(check, "reachable, posture fine")]


def _fix_in(text: str) -> str:
    found = re.search(r"\(fix: ([^)]*)\)|run `([^`]*)`", text)
    if found:
        return found.group(1) or found.group(2)
    return "see the detail; `backupctl target setup POLICY TARGET` applies the declared posture"


# --------------------------------------------------------------------------- I/O helpers
def _endpoint_problem(url: str | None) -> str | None:
    """Why nothing answers at an S3 endpoint URL's host:port, or None when a TCP connection opens."""
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return f"endpoint_url {url} has no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        return f"cannot connect to {parts.hostname}:{port} ({error.strerror or error})"
    return None


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _version_output(program: str) -> str:
    try:
        done = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def _tool(check: str, program: str, fix: str, *, warn: bool = False) -> tuple[Finding, str | None]:
    path = shutil.which(program)
    if path is None:
        return Finding(check, False, f"{program} not found", fix, warn=warn), None
    return _ok(check, f"{program} at {path}"), path


def secret_refs(policy: Policy) -> list[tuple[str, SecretRef]]:
    """Every secret reference of a policy, with where it is used (the identity included)."""
    found: list[tuple[str, SecretRef]] = []
    for kind, items in (("source", policy.sources), ("target", policy.targets)):
        for item in items:
            for field_name in type(item).model_fields:
                value = getattr(item, field_name)
                values = value.items() if isinstance(value, dict) else [(None, value)]
                for key, inner in values:
                    if isinstance(inner, SecretRef):
                        where = f"{kind} {item.name} {field_name}" + (f".{key}" if key else "")
                        found.append((where, inner))
    if policy.encryption.identity is not None:
        found.append(("encryption.identity", policy.encryption.identity))
    return found


# --------------------------------------------------------------------------- checks with I/O
def check_postgres(policy: Policy, source: PostgresSource, now: datetime | None = None) -> list[Finding]:
    """pg_dump/pg_restore present, pg_dump new enough for the server, the server's clock."""
    check = f"{policy.name}/{source.name}: postgres tools"
    if source.via:
        return [_ok(check, f"tools run on {source.via}: not checked here")]
    fix = "install the PostgreSQL client (apt install postgresql-client) or fix the path in the policy"
    dump, dump_path = _tool(check, source.pg_dump, fix)
    restore, _ = _tool(check, source.pg_restore, fix)
    findings = [dump, restore]
    server_major: int | None = None
    try:
        import psycopg

        password = source.password.resolve() if source.password is not None else None
        with psycopg.connect(
            source.url,
            connect_timeout=CONNECT_TIMEOUT,
            password=password,
            application_name="backupctl-doctor",
        ) as connection:
            row = connection.execute("SELECT current_setting('server_version_num')::int, now()").fetchone()
        if row is not None:
            server_major = int(row[0]) // 10000
            findings.append(skew_finding(row[1], now or datetime.now(UTC), f"the server of {source.name}"))
    except SecretError as error:
        findings.append(Finding(check, False, str(error), "fix the `password:` secret reference"))
    except Exception as error:  # psycopg.Error and friends: report, never crash the doctor
        from backupctl.core.secrets import mask

        findings.append(
            Finding(
                check,
                False,
                f"cannot connect: {mask(str(error).strip())}",
                "check the url, the password and that the server accepts this host",
            )
        )
    if dump_path is not None:
        findings.append(
            pg_version_finding(check, source.pg_dump, parse_major(_version_output(dump_path)), server_major)
        )
    if source.pitr is not None:  # WAL archiving settings and privileges (docs/pitr.md)
        from backupctl.actions.doctor_pitr import check_pitr

        findings.extend(check_pitr(policy, source))
    return findings


def check_mysql(policy: Policy, source: MysqlSource) -> list[Finding]:
    """mariadb-dump (or mysqldump) and the mariadb (or mysql) client."""
    check = f"{policy.name}/{source.name}: mysql tools"
    if source.via:
        return [_ok(check, f"tools run on {source.via}: not checked here")]
    fix = "install the client tools (apt install mariadb-client)"
    findings = []
    for names in (("mariadb-dump", "mysqldump"), ("mariadb", "mysql")):
        path = next((found for name in names if (found := shutil.which(name))), None)
        findings.append(
            _ok(check, f"{path}")
            if path
            else Finding(check, False, f"neither {' nor '.join(names)} found", fix)
        )
    return findings


def check_secrets(policy: Policy) -> list[Finding]:
    """The age identity configured and private; every secret reference resolvable (cmd: not run)."""
    findings: list[Finding] = []
    if policy.encryption.identity is None:
        findings.append(Finding(
            f"{policy.name}: age identity", False, "encryption.identity is not configured",
            "restores, verify and drills need --identity FILE; or set encryption.identity: file:/path",
            warn=True,
        ))  # fmt: skip
    for where, ref in secret_refs(policy):
        check = f"{policy.name}: secret {where}"
        if ref.scheme == "cmd":
            findings.append(_ok(check, f"{ref} (command not run)"))
            continue
        try:
            ref.check()
            if ref.scheme == "file":
                with open(ref.target, "rb"):
                    pass
        except (SecretError, OSError) as error:
            detail = re.sub(r"\s*\(fix: [^)]*\)", "", str(error))
            if ref.scheme == "env":
                fix = f"export {ref.target} in the environment backupctl runs with"
            elif "must not be accessible" in str(error):
                fix = f"chmod 600 {ref.target}"
            else:
                fix = f"create {ref.target} (mode 0600) readable by this user, or fix the reference"
            findings.append(Finding(check, False, detail, fix))
            continue
        findings.append(_ok(check, str(ref)))
    return findings


def check_targets(policy: Policy) -> list[Finding]:
    """Each target's real posture, and free space on local ones."""
    from backupctl.actions.status import target_posture
    from backupctl.targets.store import tool_version

    findings: list[Finding] = []
    for config in policy.targets:
        check = f"{policy.name}/{config.name}: target"
        traits = traits_of(config)
        if traits.tool is not None:  # the program the target runs (restic): installed, new enough?
            tool_check = f"{policy.name}/{config.name}: {traits.tool}"
            try:
                findings.append(_ok(tool_check, tool_version(config)))
            except BackupctlError as error:
                findings.append(Finding(tool_check, False, str(error), traits.tool_hint))
                continue
        refused = _endpoint_problem(getattr(config, "endpoint_url", None))
        if refused:  # fail fast: the S3 client would retry a dead endpoint for many seconds
            findings.extend(posture_findings(check, traits, False, [refused]))
            continue
        try:
            posture = target_posture(config)
        except Exception as error:  # a target's own errors or a client library's: report them
            findings.extend(posture_findings(check, traits, False, [str(error)]))
            continue
        findings.extend(posture_findings(check, traits, posture.reachable, posture.problems))
        path = getattr(config, "path", None)  # a local directory's (traits.local_directory)
        if traits.local_directory and posture.reachable and path is not None:
            space = f"{policy.name}/{config.name}: space"
            findings.append(free_space_finding(space, path, posture.free_bytes))
    return findings


def check_policy(policy: Policy) -> list[Finding]:
    """Every per-policy check."""
    findings: list[Finding] = []
    for source in policy.sources:
        if isinstance(source, PostgresSource):
            findings.extend(check_postgres(policy, source))
        elif isinstance(source, MysqlSource):
            findings.extend(check_mysql(policy, source))
            if source.pitr is not None:
                from backupctl.actions.binlog_doctor import check_binlog  # imports doctor: not at the top

                findings.extend(check_binlog(policy, source))
    findings.extend(check_secrets(policy))
    findings.extend(check_targets(policy))
    return findings


def check_global(settings: Settings, policies: list[Policy], docker: bool = True) -> list[Finding]:
    """Host-wide checks: the signing key, optional tools, the Docker engine, the catalog's clock."""
    key = settings.keys_dir / SIGNING_KEY_FILE
    findings = [mode_finding("signing key", key, _mode(key), "run `backupctl keys generate`")]
    for program, use in (("zstd", "break-glass decompression"), ("age", "break-glass decryption")):
        findings.append(
            _tool(
                "optional tools", program, f"apt install {program} (for {use} without backupctl)", warn=True
            )[0]
        )
    if docker:
        from backupctl.staging.docker import engine_available

        findings.append(
            _ok("docker", "engine answers")
            if engine_available()
            else Finding(
                "docker",
                False,
                "no Docker engine answers: drills use the local runtime",
                "start Docker (systemctl start docker) or give this user access",
                warn=True,
            )
        )
    findings.append(check_catalog_clock(settings, policies))
    return findings


def check_catalog_clock(settings: Settings, policies: list[Policy], now: datetime | None = None) -> Finding:
    """Compare the clock with the newest snapshot the catalog knows (without creating a catalog)."""
    url = settings.catalog_url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return _ok("clock", "no catalog yet")
    try:
        from backupctl.actions.access import open_catalog

        catalog = open_catalog(settings)
        starts = [
            views[0].started_at
            for policy in policies
            if (views := catalog.snapshots(policy.name, include_incomplete=True))
        ]
    except BackupctlError as error:
        return Finding("clock", False, f"cannot read the catalog: {error}", "check --catalog", warn=True)
    newest = max((s if s.tzinfo else s.replace(tzinfo=UTC) for s in starts), default=None)
    return clock_finding(newest, now or datetime.now(UTC), "the catalog")


def policy_issue_finding(issue: ConfigIssue) -> Finding:
    """A policy that does not load is a failure of its own."""
    return Finding("policy", False, issue.render(), "run `backupctl policy validate` and fix the file")


def run_checks(
    settings: Settings, policies: list[Policy], issues: list[ConfigIssue] | None = None, docker: bool = True
) -> list[Finding]:
    """Every check for `policies` plus the global ones; duplicates (shared tools) reported once."""
    findings = [policy_issue_finding(issue) for issue in issues or []]
    findings.extend(check_global(settings, policies, docker=docker))
    from backupctl.actions.doctor_extra import extra_policy_findings  # imports doctor: not at the top

    for policy in policies:
        findings.extend(check_policy(policy))
        findings.extend(extra_policy_findings(settings, policy))
    unique: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        unique.setdefault((finding.check, finding.detail), finding)
    return list(unique.values())
