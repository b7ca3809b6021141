"""`backupctl drill`: restore a snapshot into disposable staging, check it, measure, tear down.

Stages (their sum from the first fetch to the last check is the *measured RTO*):
  fetch <source>            read + sha256 of the stored artifact (includes a Glacier warm-up);
                            from a deduplicating store: find the source's snapshot there
  databases ready           staging database services up
  restore <source>          decrypt + decompress + restore tool inside the service
  apps ready                app services up after the restores
  checks                    application checks (login, cart, payments, SQL, commands)
Teardown always runs (success, failure, Ctrl-C, SIGTERM, timeout) and is not part of the RTO.
RPO at drill time is the age of the restored snapshot. A drill passes when every check passes
and (unless --no-objectives) measured RTO ≤ RTO and RPO ≤ RPO.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.access import load_identities, open_catalog, trusted_keys
from backupctl.actions.drill_feeds import ArtifactFeed, open_feed
from backupctl.actions.events import Events, LogEvents
from backupctl.checks.base import CheckResult
from backupctl.core.manifest import ArtifactRecord
from backupctl.core.secrets import mask, register_secret
from backupctl.core.spool import default_jobs
from backupctl.drills.schema import DatabaseRestore, Drill, Service
from backupctl.errors import BackupctlError, ConfigError, IntegrityError, JobFailed
from backupctl.policy.schema import Policy
from backupctl.settings import Settings
from backupctl.sources.base import build_source, count_rows_equal
from backupctl.staging.base import DatabaseRestored, StagingRuntime, fill_placeholders
from backupctl.targets.registry import traits_of

DRILL_SECRET_ENV = "BACKUPCTL_DRILL_SECRET"
# Called after a database restore: (runtime, service, database, source, outcome) -> stage detail
# or None; a point-in-time drill replays binlogs/WAL here (backupctl/actions/binlog_drill.py).
AfterRestore = Callable[[StagingRuntime, Service, str, str, "DrillOutcome"], str | None]


class DrillTimeout(JobFailed):
    pass


@dataclass
class StageTiming:
    name: str
    seconds: float
    detail: str = ""
    failed: bool = False  # the drill stopped during this stage


@dataclass
class DrillOutcome:
    run_id: str
    drill: str
    policy: str
    snapshot_id: str | None
    target: str | None
    runtime: str
    started_at: datetime
    finished_at: datetime | None = None
    stages: list[StageTiming] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    warmup_seconds: float = 0.0
    measured_rto: float | None = None
    rto_objective: float | None = None
    rpo_at_drill: float | None = None
    rpo_objective: float | None = None
    objectives_checked: bool = True
    ok: bool = False
    reason: str | None = None
    kept: Any = None  # StagingInfo when --keep
    reports: dict[str, str] = field(default_factory=dict)
    open_stage: tuple[str, float] | None = None  # begun and not finished: the failed one if any
    warnings: list[str] = field(default_factory=list)  # isolation the runtime could not establish

    def begin(self, name: str) -> float:
        """Mark stage `name` as begun; its start time (monotonic)."""
        started = time.monotonic()
        self.open_stage = (name, started)
        return started

    def close_failed_stage(self, reason: str) -> None:
        """The drill stopped: the stage it was in appears in the table, as the failure."""
        if self.open_stage is not None:
            name, started = self.open_stage
            self.stages.append(StageTiming(name, time.monotonic() - started, reason, failed=True))
            self.open_stage = None

    def mark_not_run(self, drill: Drill) -> None:
        """Checks of the drill that never ran are reported "not run", never "passed"."""
        ran = {check.name for check in self.checks}
        for check in drill.checks:
            if check.name not in ran:
                self.checks.append(
                    CheckResult(check.name, check.type, False, "not run: the drill stopped before it", 0.0,
                                not_run=True)
                )  # fmt: skip


def default_drill(policy: Policy) -> Drill:
    """`backupctl drill POLICY` without a file: restore every source, integrity checks only."""
    secret = "${" + DRILL_SECRET_ENV + "}"
    kinds = {  # source type -> (service kind, image, password variable of the image)
        "postgres": ("postgres", "backupctl/postgres:15", "POSTGRES_PASSWORD"),
        "mysql": ("mariadb", "backupctl/mariadb:10.11", "MARIADB_ROOT_PASSWORD"),
    }
    services: list[dict[str, Any]] = []
    for source in policy.sources:
        if source.type in kinds:
            kind, image, password = kinds[source.type]
            services.append(
                {
                    "name": f"{source.name}-{kind}",
                    "kind": kind,
                    "image": image,
                    "env": {password: secret},
                    "databases": [{"source": source.name, "database": "restored"}],
                }
            )
    return Drill.model_validate(
        {"name": f"{policy.name}-default", "policy": policy.name, "services": services}
    )


def drill_sources(drill: Drill) -> list[str]:
    """The sources a drill restores (its services' databases and file trees)."""
    names = [restore.source for service in drill.services for restore in service.databases]
    return names + [files.source for service in drill.services for files in service.files]


def choose_target(
    policy: Policy, available: dict[str, str], requested: str | None, sources: list[str] | None = None
) -> str:
    """The requested target, else the most remote one holding a complete copy of every source
    the drill restores (`sources`; all when None): prove the off-site copy (off-site before
    on-site, S3/SFTP before local, later in the list first); a restic repository only when no
    local, S3 or SFTP target holds them all (e.g. sources kept in restic only)."""
    needed = [policy.source(name) for name in sources] if sources is not None else list(policy.sources)
    if requested:
        config = policy.target(requested)
        if available.get(requested) != "complete":
            raise ConfigError(f"target {requested} holds no complete copy of this snapshot")
        missing = [source.name for source in needed if config not in policy.targets_for(source)]
        if missing:
            raise ConfigError(
                f"target {requested} holds no copy of {', '.join(missing)} (the policy sends "
                f"{'it' if len(missing) == 1 else 'them'} elsewhere): drill from a target that holds them"
            )
        return requested
    candidates = [
        target
        for target in policy.targets
        if available.get(target.name) == "complete"
        and all(target in policy.targets_for(source) for source in needed)
    ]
    if not candidates:
        raise ConfigError("no target holds a complete copy of every source this drill restores")
    ranked = sorted(
        enumerate(candidates),
        key=lambda item: (
            not traits_of(item[1]).deduplicating, item[1].offsite, traits_of(item[1]).networked, item[0]
        ),
    )
    return ranked[-1][1].name


def select_runtime(choice: str, run_id: str, base_dir: Path, events: Events) -> StagingRuntime:
    if choice in ("auto", "docker"):
        from backupctl.staging.docker import DockerRuntime, engine_available

        if engine_available():
            return DockerRuntime(run_id, base_dir=base_dir)
        if choice == "docker":
            raise ConfigError("the drill asks for runtime: docker, but no Docker engine answers")
        events.warning("NO DOCKER ENGINE ANSWERS: using the LOCAL runtime (throwaway clusters on this host)")
    from backupctl.staging.local import LocalRuntime

    return LocalRuntime(run_id, base_dir=base_dir)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Abort the drill (with teardown) when it runs longer than its timeout."""

    def expire(signum: int, frame: Any) -> None:
        raise DrillTimeout(f"the drill did not finish within its timeout ({seconds:.0f}s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_drill(
    settings: Settings,
    policy: Policy,
    drill: Drill,
    *,
    base_dir: Path,
    from_target: str | None = None,
    snapshot_ref: str | None = None,
    runtime_choice: str | None = None,
    keep: bool = False,
    check_objectives: bool = True,
    identity_file: Path | None = None,
    restore_all: bool = False,
    events: Events | None = None,
    after_restore: AfterRestore | None = None,
    jobs: int = 0,
) -> DrillOutcome:
    """Run one drill and return its outcome (also when it failed: `outcome.ok`, `reason`).
    `jobs`: parallel restore jobs per PostgreSQL database (0: one per CPU, as `restore` does).
    Raises ConfigError before touching anything when the drill cannot start."""
    events = events or LogEvents()
    catalog = open_catalog(settings)
    snapshot = catalog.resolve(policy.name, snapshot_ref or drill.snapshot)
    target_name = choose_target(
        policy, snapshot.targets, from_target or drill.target, None if restore_all else drill_sources(drill)
    )
    identities: list[Any] = []
    if traits_of(policy.target(target_name)).needs_identity:  # restic decrypts with its own password
        identities = load_identities(policy, identity_file)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    runtime = select_runtime(runtime_choice or drill.runtime, run_id, base_dir, events)
    if runtime.name == "local":  # the local runtime starts apps from `local_command` where given
        services = [
            s.model_copy(update={"command": s.local_command}) if s.local_command else s
            for s in drill.services
        ]
        drill = drill.model_copy(update={"services": services})
    outcome = DrillOutcome(
        run_id,
        drill.name,
        policy.name,
        snapshot.id,
        target_name,
        runtime.name,
        datetime.now(UTC),
        objectives_checked=check_objectives,
    )
    rto = drill.objectives.rto or policy.objectives.rto
    rpo = drill.objectives.rpo or policy.objectives.rpo
    outcome.rto_objective, outcome.rpo_objective = rto.total_seconds(), rpo.total_seconds()
    events.info(
        f"drill {drill.name} ({run_id}): snapshot {snapshot.id} of {policy.name} from {target_name}, "
        f"{runtime.name} runtime"
    )
    feed = open_feed(policy, target_name, snapshot.id, lambda: identities)
    began = time.monotonic()
    try:
        with _deadline(drill.timeout.total_seconds()):
            _drill_steps(
                settings,
                policy,
                drill,
                runtime,
                feed,
                snapshot.id,
                outcome,
                events,
                restore_all,
                after_restore,
                jobs or default_jobs(),
            )
        outcome.measured_rto = time.monotonic() - began
        outcome.rpo_at_drill = (datetime.now(UTC) - snapshot.started_at).total_seconds()
        failed = [check.name for check in outcome.checks if not check.ok]
        reasons = []
        if failed:
            reasons.append(f"checks failed: {', '.join(failed)}")
        if check_objectives and outcome.measured_rto > outcome.rto_objective:
            reasons.append(
                f"measured RTO {outcome.measured_rto:.0f}s exceeds the objective {outcome.rto_objective:.0f}s"
            )
        if check_objectives and outcome.rpo_at_drill > outcome.rpo_objective:
            reasons.append(
                f"the snapshot is {outcome.rpo_at_drill:.0f}s old, RPO is {outcome.rpo_objective:.0f}s"
            )
        outcome.ok = not reasons
        outcome.reason = "; ".join(reasons) or None
    except KeyboardInterrupt:
        outcome.reason = "interrupted (Ctrl-C or SIGTERM)"
        raise
    except BackupctlError as error:
        outcome.reason = mask(str(error))
    finally:
        outcome.close_failed_stage(outcome.reason or "stopped")
        outcome.mark_not_run(drill)
        feed.close()
        if keep:
            outcome.kept = runtime.info()
        else:
            down_started = time.monotonic()
            try:
                runtime.down()
            finally:
                outcome.stages.append(
                    StageTiming("teardown", time.monotonic() - down_started, "not part of the RTO")
                )
        outcome.finished_at = datetime.now(UTC)
        _record(catalog, outcome)
    return outcome


def _drill_steps(
    settings: Settings,
    policy: Policy,
    drill: Drill,
    runtime: StagingRuntime,
    feed: ArtifactFeed,
    snapshot_id: str,
    outcome: DrillOutcome,
    events: Events,
    restore_all: bool,
    after_restore: AfterRestore | None = None,
    jobs: int = 1,
) -> None:
    def stage(name: str, started: float, detail: str = "") -> None:
        outcome.stages.append(StageTiming(name, time.monotonic() - started, detail))
        outcome.open_stage = None

    def integrity(name: str, ok: bool, detail: str, started: float) -> None:
        outcome.checks.append(
            CheckResult(
                name=name, kind="integrity", ok=ok, detail=detail, duration=time.monotonic() - started
            )
        )
        if not ok:
            raise IntegrityError(f"{name}: {detail}")

    started = time.monotonic()
    try:
        signed = feed.manifest(trusted_keys(settings, policy))
    except (IntegrityError, BackupctlError) as error:
        # A target that cannot be read (restic lock, network) is not a bad signature: say which.
        integrity("manifest signature" if isinstance(error, IntegrityError) else "manifest read", False,
                  str(error), started)  # fmt: skip
        raise
    integrity("manifest signature", True, f"signed by {signed.signer}", started)
    manifest = signed.manifest
    register_secret(_drill_secret())

    # Which artifacts: every source a service restores; a default drill restores all.
    restores: dict[str, tuple[Service | None, DatabaseRestore | None, str | None]] = {}
    for service in drill.services:
        for restore in service.databases:
            restores[restore.source] = (service, restore, None)
        for files in service.files:
            restores[files.source] = (service, None, files.path)
    if restore_all:  # the default drill: staging servers of the version each dump came from
        drill = _match_server_versions(drill, manifest.artifacts, events)
        restores = {k: (next(s for s in drill.services if s.name == v[0].name) if v[0] else None, *v[1:])
                    for k, v in restores.items()}  # fmt: skip
    # Never the secrets artifact (role passwords): staging must not reuse production passwords.
    wanted = [a for a in manifest.artifacts if not a.is_secrets and (a.source in restores or restore_all)]
    absent = sorted(set(restores) - {a.source for a in manifest.artifacts})
    if absent:
        raise ConfigError(
            f"target {feed.name} holds no copy of {', '.join(absent)} in snapshot {snapshot_id}: "
            "drill from a target these sources go to (--from)"
        )
    if not wanted:
        raise ConfigError(f"drill {drill.name} restores no source of snapshot {snapshot_id}")

    # Fetch: read and hash every artifact first (a Glacier warm-up happens here).
    for artifact in wanted:
        started = outcome.begin(f"fetch {artifact.source}")
        fetched = feed.fetch(artifact)
        outcome.warmup_seconds += fetched.warmup_seconds
        integrity(fetched.check, fetched.ok, fetched.detail, started)  # a failure fails this stage
        stage(f"fetch {artifact.source}", started, fetched.stage)

    started = outcome.begin("databases ready")
    database_services = [s for s in drill.services if s.kind != "app"]
    runtime.start_databases(database_services)
    _isolation_warnings(runtime, outcome, events)
    stage("databases ready", started, ", ".join(s.name for s in database_services))

    for artifact in wanted:
        into, database, path = restores.get(artifact.source, (None, None, None))
        started = outcome.begin(f"restore {artifact.source}")
        detail = f"{artifact.plain_bytes} bytes"
        if database is not None and into is not None:
            restored = _restore_database(runtime, into, database.database, feed, artifact, outcome, jobs)
            detail += f", {restored.jobs} parallel jobs" if restored.jobs > 1 else ", one job"
            if restored.note:
                outcome.warnings.append(f"restore {artifact.source}: {restored.note}")
                events.warning(f"restore {artifact.source}: {restored.note}")
        else:
            _restore_files(runtime, into, path, feed, artifact, outcome)
        stage(f"restore {artifact.source}", started, detail)
        if after_restore is not None and database is not None and into is not None:
            started = outcome.begin(f"replay {artifact.source}")  # e.g. a binlog replay: part of the RTO
            if replayed := after_restore(runtime, into, database.database, artifact.source, outcome):
                stage(f"replay {artifact.source}", started, replayed)
        events.info(f"drill {outcome.run_id}: restored {artifact.source}")

    started = outcome.begin("apps ready")
    apps = [s for s in drill.services if s.kind == "app"]
    spent = 0.0  # in post-restore steps, which run while apps start: their own stages

    def before_ready() -> None:
        nonlocal spent
        began = time.monotonic()
        _post_restore(runtime, drill, outcome)
        spent = time.monotonic() - began
        outcome.open_stage = ("apps ready", started + spent)

    if apps:
        runtime.start_apps(apps, before_ready if drill.post_restore else None)
        _isolation_warnings(runtime, outcome, events)
        stage("apps ready", started + spent, ", ".join(s.name for s in apps))
    elif drill.post_restore:
        _post_restore(runtime, drill, outcome)
    outcome.open_stage = None

    started = outcome.begin("checks")
    if drill.checks:
        from backupctl.checks.base import CheckContext, run_check

        context = CheckContext(
            runtime=runtime, services={s.name: s for s in drill.services}, values=url_values(runtime, drill)
        )
        for check in drill.checks:
            result = run_check(check, context)
            outcome.checks.append(result)
            events.info(
                f"check {result.name}: {'ok' if result.ok else 'FAILED'} ({result.duration:.1f}s)"
                + ("" if result.ok else f": {result.detail}")
            )
        stage(
            "checks",
            started,
            f"{sum(c.ok for c in outcome.checks if c.kind != 'integrity')}/{len(drill.checks)} passed",
        )
    outcome.open_stage = None


DEFAULT_IMAGE_REPOSITORIES = {"postgres": "backupctl/postgres", "mariadb": "backupctl/mariadb"}


def image_for_version(kind: str, server_version: str | None, current: str) -> str:
    """The staging image matching a dump's server: PostgreSQL by major (15.4 → :15), MariaDB by
    major.minor (10.11.6-MariaDB → :10.11), MySQL on the official `mysql` image (8.0.35 → mysql:8.0).
    `current` when the version is unknown."""
    if not server_version:
        return current
    numbers = server_version.split("-")[0].split(".")
    if kind == "postgres" and numbers[0].isdigit():
        return f"{DEFAULT_IMAGE_REPOSITORIES['postgres']}:{numbers[0]}"
    if kind == "mariadb" and len(numbers) >= 2:
        if "mariadb" not in server_version.lower() and int(numbers[0]) >= 5 and numbers[0] != "10":
            return f"mysql:{numbers[0]}.{numbers[1]}"  # MySQL 5.7 / 8.x: the official image's tag
        return f"{DEFAULT_IMAGE_REPOSITORIES['mariadb']}:{numbers[0]}.{numbers[1]}"
    return current


def _match_server_versions(drill: Drill, artifacts: list[ArtifactRecord], events: Events) -> Drill:
    """The default drill's services, each on the image of its dump's server version (the
    manifest records it): a PostgreSQL 16 dump is not restored into a 15 server."""
    versions = {a.source: a.facts.get("server_version") for a in artifacts}
    services = []
    for service in drill.services:
        image = service.image or ""
        for restore in service.databases:
            image = image_for_version(service.kind, versions.get(restore.source), image)
        if image != service.image:
            events.info(f"staging service {service.name}: {image} (the dump's server version)")
        services.append(service.model_copy(update={"image": image}))
    return drill.model_copy(update={"services": services})


def url_values(runtime: StagingRuntime, drill: Drill) -> dict[str, str]:
    """`${svc.url}` of every running service with a port: the base URL http checks use."""
    values: dict[str, str] = {}
    for service in drill.services:
        try:
            host, port = runtime.endpoint(service)
        except BackupctlError:  # not started (or no address): no placeholder for it
            continue
        if port:
            # Port 80 is left out, as browsers write it: apps compare their URL with the Host header.
            address = f"[{host}]" if ":" in host else host
            values[f"{service.name}.url"] = f"http://{address}" + ("" if port == 80 else f":{port}")
    return values


def _post_restore(runtime: StagingRuntime, drill: Drill, outcome: DrillOutcome) -> None:
    """Run the drill's post-restore steps in order, each a timed stage; JobFailed on the first
    that fails (SQL error, unexpected exit code), naming it."""
    values = {**url_values(runtime, drill), DRILL_SECRET_ENV: _drill_secret()}
    services = {service.name: service for service in drill.services}
    for step in drill.post_restore:
        name = f"post-restore {step.name}"
        started = outcome.begin(name)
        service = services[step.service]
        if step.sql is not None:
            try:
                result = runtime.sql(service, step.database or "", fill_placeholders(step.sql, values))
            except BackupctlError as error:
                raise JobFailed(f"{name}: {error}") from None
            detail = f"sql in {service.name}/{step.database}: {len(result.rows)} rows returned"
        else:
            argv = [fill_placeholders(arg, values) for arg in step.command or []]
            done = runtime.exec(service, argv)
            if done.exit_code != step.exit_code:
                raise JobFailed(
                    f"{name}: {argv[0]} in {service.name} exited {done.exit_code}, expected "
                    f"{step.exit_code}: {mask(done.output.strip()[-300:])}"
                )
            detail = f"{argv[0]} in {service.name}: exit {done.exit_code}"
        outcome.stages.append(StageTiming(name, time.monotonic() - started, detail))
        outcome.open_stage = None


def _isolation_warnings(runtime: StagingRuntime, outcome: DrillOutcome, events: Events) -> None:
    """Say loudly, once, what isolation the runtime could not put in place."""
    for warning in getattr(runtime, "warnings", []):
        if warning not in outcome.warnings:
            outcome.warnings.append(warning)
            events.warning(warning)


def _restore_database(
    runtime: StagingRuntime,
    service: Service,
    database: str,
    feed: ArtifactFeed,
    artifact: ArtifactRecord,
    outcome: DrillOutcome,
    jobs: int = 1,
) -> DatabaseRestored:
    started = time.monotonic()
    plain_check = feed.plain_check(artifact)
    check = plain_check.name
    keep_privileges = _recreate_roles(runtime, service, artifact, outcome)
    with feed.plain(artifact) as (plain, finished):
        try:
            restored = runtime.restore_database(
                service, database, plain, keep_privileges, jobs=jobs, size_hint=artifact.plain_bytes
            )
        finally:
            plain.read()  # drain so the producing thread can finish and report
        try:
            plain_digest = finished().plain_digest
        except IntegrityError as error:
            _integrity(outcome, check, False, str(error), started)
            raise
    _integrity(
        outcome,
        check,
        plain_digest == artifact.plain_digest,
        f"{plain_check.proof} to the manifest's plain digest",
        started,
    )
    _integrity(
        outcome, f"restore {artifact.source}", True, f"restored into {service.name}/{database}", started
    )
    _recreate_accounts(runtime, service, database, artifact, outcome)
    counts = staging_row_counts(runtime, service, database)
    problems = count_rows_equal(artifact.source_type, artifact.facts, {"row_counts": counts})
    expected = artifact.facts.get("row_counts", {})
    _integrity(
        outcome,
        f"row counts {artifact.source}",
        not problems,
        "; ".join(problems) if problems else f"{len(expected)} tables, every count equals the manifest",
        started,
    )
    return restored


def _recreate_roles(
    runtime: StagingRuntime, service: Service, artifact: ArtifactRecord, outcome: DrillOutcome
) -> bool:
    """Recreate the roles a PostgreSQL dump needs (recorded in its facts: sources/pg_roles.py),
    login roles with the drill secret as password; True when the restore may keep owners and
    privileges (False for a snapshot made before roles were recorded)."""
    roles = artifact.facts.get("roles")
    if service.kind != "postgres" or not isinstance(roles, list):
        return False
    from backupctl.sources.pg_roles import create_roles_sql

    started = time.monotonic()
    if roles:
        runtime.sql(service, "postgres", create_roles_sql(roles, _drill_secret()))
    names = ", ".join(role["name"] for role in roles) or "none needed"
    _integrity(outcome, f"roles {artifact.source}", True, f"recreated: {names}", started)
    return True


def _recreate_accounts(
    runtime: StagingRuntime, service: Service, database: str, artifact: ArtifactRecord, outcome: DrillOutcome
) -> None:
    """Recreate the MariaDB/MySQL accounts a dump's database needs (its facts, see
    sources/mariadb_grants.py) with their grants on the staging database."""
    accounts = artifact.facts.get("accounts")
    if service.kind != "mariadb" or not isinstance(accounts, list):
        return
    from backupctl.sources.mariadb_grants import recreate_sql

    started = time.monotonic()
    if accounts:
        source_db = str(artifact.facts.get("database") or database)
        runtime.sql(service, database, recreate_sql(accounts, source_db, database, _drill_secret()))
    names = ", ".join(f"{a['user']}@{a['host']}" for a in accounts) or "none recorded"
    _integrity(outcome, f"accounts {artifact.source}", True, f"recreated: {names}", started)


def _restore_files(
    runtime: StagingRuntime,
    service: Service | None,
    path: str | None,
    feed: ArtifactFeed,
    artifact: ArtifactRecord,
    outcome: DrillOutcome,
) -> None:
    """Restore on this host (tree hash checked), then hand the tree to the service."""
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f"backupctl-extract-{outcome.run_id}-"))
    try:
        tree = scratch / "tree"
        facts = feed.restore_tree(artifact, tree)
        problems = build_source(feed.policy.source(artifact.source)).compare(artifact.facts, facts)
        _integrity(
            outcome,
            f"tree hash {artifact.source}",
            not problems,
            "; ".join(problems)
            if problems
            else f"{facts.get('file_count')} files, tree hash equals the manifest",
            started,
        )
        if service is not None and path is not None:
            runtime.install_files(service, path, tree)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _integrity(outcome: DrillOutcome, name: str, ok: bool, detail: str, started: float) -> None:
    outcome.checks.append(
        CheckResult(name=name, kind="integrity", ok=ok, detail=detail, duration=time.monotonic() - started)
    )
    if not ok:
        raise IntegrityError(f"{name}: {detail}")


PG_TABLES = (
    "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1"
)
MARIADB_TABLES = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
    "AND table_type = 'BASE TABLE' ORDER BY 1"
)


def staging_row_counts(runtime: StagingRuntime, service: Service, database: str) -> dict[str, int]:
    """Exact per-table row counts inside a staging database (keys as in the manifest)."""
    if service.kind == "postgres":
        tables = [row[0] for row in runtime.sql(service, database, PG_TABLES).rows if row]

        def quote(name: str) -> str:
            schema, _, table = name.partition(".")
            return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'
    else:
        tables = [row[0] for row in runtime.sql(service, database, MARIADB_TABLES).rows if row]

        def quote(name: str) -> str:
            return "`" + name.replace("`", "``") + "`"

    counts: dict[str, int] = {}
    for index in range(0, len(tables), 50):  # a few statements, not one per table
        chunk = tables[index : index + 50]
        query = " UNION ALL ".join(
            f"SELECT {index + position}, count(*) FROM {quote(name)}" for position, name in enumerate(chunk)
        )
        for row in runtime.sql(service, database, query).rows:
            counts[tables[int(row[0])]] = int(row[1])
    return counts


def _drill_secret() -> str:
    import os

    value = os.environ.get(DRILL_SECRET_ENV)
    if not value:
        value = secrets.token_urlsafe(18)
        os.environ[DRILL_SECRET_ENV] = value
    return value


def prepare_drill_secret() -> None:
    """Set the per-run staging secret *before* the drill file is loaded (it interpolates ${...})."""
    register_secret(_drill_secret())


def _record(catalog: Any, outcome: DrillOutcome) -> None:
    from backupctl.catalog.models import DrillRow
    from backupctl.catalog.store import record_drill

    record_drill(
        catalog,
        DrillRow(
            id=outcome.run_id,
            policy=outcome.policy,
            drill=outcome.drill,
            snapshot_id=outcome.snapshot_id,
            target=outcome.target,
            runtime=outcome.runtime,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at or datetime.now(UTC),
            ok=outcome.ok,
            reason=outcome.reason,
            rto_seconds=outcome.measured_rto,
            rto_objective_seconds=outcome.rto_objective,
            rpo_seconds=outcome.rpo_at_drill,
            rpo_objective_seconds=outcome.rpo_objective,
            stages=[
                {"name": s.name, "seconds": round(s.seconds, 3), "detail": s.detail} for s in outcome.stages
            ],
            checks=[
                {
                    "name": c.name,
                    "kind": c.kind,
                    "ok": c.ok,
                    "detail": c.detail,
                    "duration": round(c.duration, 3),
                }
                for c in outcome.checks
            ],
            report_paths=outcome.reports,
        ),
    )
