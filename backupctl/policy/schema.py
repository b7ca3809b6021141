"""The policy schema: the single source of truth for validation, `policy example` and docs.

Every plug-in's configuration model lives here, so one file shows everything a policy can say.
Field `description`s become the comments of `backupctl policy example` and the reference tables
in docs/policies.md; `examples` become the example values.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backupctl.notify import NotificationChannel
from backupctl.policy.types import Cron, Duration, Name, Secret

EXAMPLE_RECIPIENT = "age1n3apkaaz7y5qsrs9l4z2akmel0gpz9m2astxq4jgzl2zheeex33s8kpzju"


class Strict(BaseModel):
    """Unknown keys are errors (with a 'did you mean' hint from the loader)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- objectives etc.
class Objectives(Strict):
    rpo: Duration = Field(
        description="Recovery point objective: the newest complete snapshot may be at most this old.",
        examples=["24h"],
    )
    rto: Duration = Field(
        description="Recovery time objective: a drill must restore and pass its checks within this time.",
        examples=["1h"],
    )


class Encryption(Strict):
    recipients: list[str] = Field(
        min_length=1,
        description=(
            "age recipients (X25519 public keys, age1...) every artifact is encrypted to, or "
            "file:/path of a recipients file (one key per line). The backup host needs only these."
        ),
        examples=[[EXAMPLE_RECIPIENT]],
    )
    identity: Secret | None = Field(
        default=None,
        description=(
            "Where the private age identity is found for verify, restore and drills. Usually absent "
            "on the backup host; kept offline."
        ),
        examples=["file:/etc/backupctl/keys/age-identity.txt"],
    )
    escrow: bool = Field(
        default=False,
        description=(
            "The identities of these recipients are kept elsewhere on purpose (offline escrow): "
            "`policy validate` and `doctor` do not warn that no identity on this host matches."
        ),
    )


class Signing(Strict):
    trusted_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Extra Ed25519 public keys (base64, as printed by `backupctl keys generate`) whose "
            "manifest signatures verify accepts, e.g. the key of a backup host that no longer exists."
        ),
        examples=[[]],
    )


class Compression(Strict):
    level: int = Field(
        default=1,
        ge=1,
        le=19,
        description="zstd level. 1 (default) is fastest; on the sample shop's dump level 3 was 2% smaller, "
        "12% slower and used 50% more memory.",
        examples=[1],
    )
    threads: int = Field(
        default=0, ge=0, le=64, description="zstd worker threads; 0 means one per CPU.", examples=[0]
    )


class VerifySchedule(Strict):
    """A scheduled, sampled integrity check (`backupctl verify POLICY --sample N%`)."""

    schedule: Cron = Field(
        description="When the sampled verify runs (cron expression).", examples=["30 4 * * *"]
    )
    sample: str = Field(
        default="10%",
        pattern=r"^(100|[1-9][0-9]?)(\.[0-9]+)?%$",
        description="Share of the stored bytes read per run; every byte is read within "
        "100/N runs (docs/operations.md, sampled verify).",
        examples=["10%"],
    )


class Retention(Strict):
    keep_last: int | None = Field(default=None, ge=0, description="Keep the N newest snapshots.")
    keep_hourly: int | None = Field(default=None, ge=0, description="Keep the newest snapshot of N hours.")
    keep_daily: int | None = Field(
        default=None, ge=0, description="Keep the newest snapshot of N days.", examples=[7]
    )
    keep_weekly: int | None = Field(
        default=None, ge=0, description="Keep the newest snapshot of N weeks.", examples=[4]
    )
    keep_monthly: int | None = Field(
        default=None, ge=0, description="Keep the newest snapshot of N months.", examples=[12]
    )
    keep_yearly: int | None = Field(default=None, ge=0, description="Keep the newest snapshot of N years.")
    keep_within: Duration | None = Field(
        default=None, description="Keep every snapshot younger than this, e.g. 90d."
    )


# --------------------------------------------------------------------------- sources
HookCommand = str | list[str]


class Hooks(Strict):
    """Commands run around a backup (backupctl/hooks.py): a string runs with /bin/sh -c, a list as argv."""

    before: list[HookCommand] = Field(
        default_factory=list,
        description="Run before the backup; a failure aborts it (exit 1, nothing written).",
    )
    after: list[HookCommand] = Field(default_factory=list, description="Run after a successful backup.")
    on_failure: list[HookCommand] = Field(
        default_factory=list, description="Run after a failed or partial backup (also when `before` failed)."
    )
    timeout: Duration = Field(default=timedelta(minutes=5), description="Time limit of each command.")


class SourceBase(Strict):
    name: Name = Field(description="Unique name of the source within the policy.", examples=["shop-db"])
    targets: list[Name] | None = Field(
        default=None,
        description="Names of the targets this source goes to; all targets when absent.",
    )
    hooks: Hooks | None = Field(
        default=None,
        description="Commands for this source, run after the policy's `before`, before its `after`.",
    )


class RolesCapture(Strict):
    """What a database source captures of the roles/accounts its database needs, beyond names,
    attributes and grants (always captured, never secret): docs/drills.md, "Roles and grants"."""

    passwords: bool = Field(
        default=False,
        description="Also capture the password hashes of those roles/accounts (PostgreSQL: "
        "pg_authid.rolpassword, which needs a superuser or pg_read_all_data; MariaDB/MySQL: the "
        "authentication of SHOW CREATE USER). They go to a separate artifact of the snapshot, "
        "encrypted like the dump (never in the manifest, logs or --json), so that `restore --roles "
        "create-missing` recreates missing roles with their own passwords. Drills never use them. "
        "Not with `via` or `container`.",
        examples=[False],
    )


class RolesOption(Strict):
    """The `roles` key of the sources whose databases have roles (postgres, mysql)."""

    roles: RolesCapture = Field(
        default_factory=RolesCapture,
        description="Roles/accounts captured with the dump (names, attributes, memberships and grants "
        "always; password hashes only with `passwords: true`).",
    )

    @model_validator(mode="after")
    def _passwords_only_direct(self) -> RolesOption:
        if self.roles.passwords and (getattr(self, "via", None) or getattr(self, "container", None)):
            raise ValueError(
                "roles.passwords is not supported with `via` or `container`: roles are captured "
                "only by dumps made from this host"
            )
        return self


class ViaSsh(Strict):
    """Dumping on another host over SSH (`via`); the same strict host-key rules as SFTP."""

    via: str | None = Field(
        default=None,
        description="Run the dump tool on another host over SSH: ssh://user@host[:port]. Its stdout "
        "streams back; its stderr and exit status are reported.",
    )
    via_key_file: str | None = Field(
        default=None,
        description="Private key for `via` (BACKUPCTL_SSH_KEY_FILE overrides it); the SSH agent when absent.",
    )
    via_known_hosts: str = Field(
        default="~/.ssh/known_hosts",
        description="known_hosts file holding the `via` host's key (BACKUPCTL_SSH_KNOWN_HOSTS overrides "
        "it); unknown host keys are refused.",
    )
    container: str | None = Field(
        default=None,
        description="Dump with the tools inside this Docker container (`docker exec`); the URL/host is "
        "then the one inside the container. Not together with `via`.",
    )

    @model_validator(mode="after")
    def _container_is_a_via(self) -> ViaSsh:
        # The via machinery runs over `docker exec` (sources/container.py): one code path.
        if self.container is not None:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.container):
                raise ValueError("`container` must be a container name or id ([A-Za-z0-9][A-Za-z0-9_.-]*)")
            if self.via is not None and self.via != f"docker://{self.container}":
                raise ValueError("give either `via` (SSH) or `container`, not both")
            object.__setattr__(self, "via", f"docker://{self.container}")
        return self


class PostgresArchiver(Strict):
    """The asynchronous WAL archiver (`backupctl wal archiver`, docs/pitr.md#asynchronous-archiving)."""

    spool: str = Field(
        description="Private directory (created 0700) where the archiver writes an acknowledgement for "
        "each segment it made durable on every WAL target; archive_command must name it: "
        "`backupctl wal archive-command POLICY --source S` prints the line (a `sh` line answering "
        "acked segments without Python, else `backupctl wal push POLICY --source S --spool SPOOL %p %f`).",
        examples=["/var/lib/postgresql/backupctl-spool"],
    )
    workers: int = Field(default=2, ge=1, le=16, description="Segments the archiver pushes in parallel.")
    pgdata: str | None = Field(
        default=None,
        description="The server's data directory on this host. When set, `backupctl schedule install` "
        "(a systemd service with Restart=always, or a cron watchdog line) and `backupctl daemon` (a "
        "supervised child) run `wal archiver` for the source; without it the archiver is not "
        "scheduled here (run it on the database host: docs/pitr.md#running-the-archiver).",
        examples=["/var/lib/postgresql/15/main"],
    )
    user: str = Field(
        default="postgres",
        description="The server's system user, who runs the scheduled archiver (systemd User=, the user "
        "field of /etc/cron.d/backupctl, the daemon's child when the daemon runs as root): it must "
        "own the spool, as archive_command does.",
    )


class PostgresPitr(Strict):
    """Point-in-time recovery of a PostgreSQL server: WAL archiving + base backups (docs/pitr.md)."""

    targets: list[Name] | None = Field(
        default=None,
        description="Blob targets holding the WAL archive and base backups; the source's blob targets "
        "when absent. A segment is archived only when it is durable on every one of them.",
    )
    base_backup_schedule: Cron | None = Field(
        default=None,
        description="When base backups are due (cron), e.g. weekly '0 3 * * 0': `wal status` fails when the "
        "newest is older than the longest gap between two runs + 1h. `backupctl schedule install` and "
        "`backupctl daemon` run `backupctl wal base-backup` at these times.",
        examples=["0 3 * * 0"],
    )
    keep_base_backups: int = Field(
        default=2, ge=1, description="Base backups kept; WAL older than the oldest kept one is pruned."
    )
    archive_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="The server's archive_timeout that doctor expects (at most; well under objectives.rpo).",
        examples=["60s"],
    )
    prefetch: int = Field(
        default=4, ge=1, le=64, description="Segments `wal fetch` downloads in parallel during a restore."
    )
    bin_dir: str | None = Field(
        default=None,
        description="Directory of pg_basebackup, pg_ctl and postgres for base backups and restores; "
        "pg_config --bindir or the newest /usr/lib/postgresql/*/bin when absent.",
    )
    archiver: PostgresArchiver | None = Field(
        default=None,
        description="Push WAL ahead of archive_command with a long-running `backupctl wal archiver`: "
        "archive_command (`backupctl wal archive-command`) then exits 0 at once for a segment the "
        "archiver acknowledged (the same file, or the same content), and falls back to the full "
        "push otherwise.",
    )


class PostgresSource(SourceBase, ViaSsh, RolesOption):
    type: Literal["postgres"] = Field(description="A PostgreSQL database dumped with pg_dump.")
    url: str = Field(
        description="Connection URL without a password: postgresql://user@host:port/dbname",
        examples=["postgresql://backup@db.internal:5432/shop"],
    )
    password: Secret | None = Field(
        default=None,
        description="Password reference; passed to pg_dump as PGPASSWORD, never on its command line.",
        examples=["cmd:pass show backup/shop-db"],
    )
    pg_dump: str = Field(default="pg_dump", description="pg_dump program (name or path).")
    pg_restore: str = Field(default="pg_restore", description="pg_restore program (name or path).")
    dump_options: list[str] = Field(
        default_factory=list, description="Extra pg_dump options, e.g. ['--exclude-table=audit_log']."
    )
    pitr: PostgresPitr | None = Field(
        default=None, description="Point-in-time recovery: continuous WAL archiving and base backups."
    )

    @model_validator(mode="after")
    def _no_password_in_url(self) -> PostgresSource:
        rest = self.url.partition("://")[2]
        credentials = rest.rpartition("@")[0]
        if ":" in credentials:
            raise ValueError("the url contains a literal password; remove it and use 'password: env:NAME'")
        if not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError("url must start with postgresql://")
        return self


class MysqlPitr(Strict):
    """Point-in-time recovery of a MySQL/MariaDB source: binlog archiving (docs/pitr-mysql.md)."""

    rpo: Duration = Field(
        description="Recovery point objective of the binlog archive: the newest archived event may be "
        "at most this old (status fails beyond it).",
        examples=["15m"],
    )
    interval: Duration | None = Field(
        default=None,
        description="How often `backupctl binlog collect` closes the current binlog (FLUSH BINARY LOGS) "
        "and archives it; a third of `rpo` (at least 10s) when absent. `backupctl schedule install` and "
        "`backupctl daemon` run `binlog collect` at this interval, in whole minutes (at least every "
        "minute); `binlog collect --watch` as a service of its own keeps a shorter one.",
        examples=["1m"],
    )
    targets: list[Name] | None = Field(
        default=None,
        description="Blob targets (not restic) holding the archived binlogs; the source's blob targets "
        "when absent.",
    )

    def effective_interval(self) -> timedelta:
        """The collection interval: `interval`, else rpo / 3, never below 10 seconds."""
        return self.interval or max(self.rpo / 3, timedelta(seconds=10))


class MysqlSource(SourceBase, ViaSsh, RolesOption):
    type: Literal["mysql"] = Field(description="A MySQL or MariaDB database dumped with mariadb-dump.")
    host: str = Field(default="localhost", description="Server host name.")
    port: int = Field(default=3306, ge=1, le=65535, description="Server port.")
    socket: str | None = Field(default=None, description="Unix socket path instead of host/port.")
    user: str = Field(description="Database user.", examples=["backup"])
    password: Secret | None = Field(
        default=None, description="Password reference; passed through a defaults file on an inherited fd."
    )
    database: str = Field(description="Database name.", examples=["shop"])
    pitr: MysqlPitr | None = Field(
        default=None,
        description="Archive the server's binary logs for restores to a point in time (docs/pitr-mysql.md); "
        "dumps then record their binlog position.",
    )


class SqliteSource(SourceBase):
    type: Literal["sqlite"] = Field(description="A SQLite database copied with the online backup API.")
    path: str = Field(description="Absolute path of the database file.", examples=["/srv/app/app.db"])


class FilesSource(SourceBase):
    type: Literal["files"] = Field(description="A directory tree archived as a tar stream.")
    path: str = Field(description="Absolute path of the directory.", examples=["/srv/shop/uploads"])
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns (relative paths or base names) to leave out.",
        examples=[["*.tmp", "cache/*"]],
    )
    symlinks: Literal["keep", "skip", "refuse"] = Field(
        default="keep",
        description="Symlinks leading outside the tree (absolute, or up through `..`): keep "
        "archives them as links (restored verbatim, never followed; the backup warns), skip leaves "
        "them out (warns), refuse fails the backup. Links inside the tree are always kept.",
    )


SourceConfig = Annotated[
    PostgresSource | MysqlSource | SqliteSource | FilesSource, Field(discriminator="type")
]


# --------------------------------------------------------------------------- targets
class TargetBase(Strict):
    name: Name = Field(description="Unique name of the target within the policy.", examples=["nas"])
    medium: str = Field(
        default="disk",
        description="Storage medium, for the 3-2-1 rule: disk, nas, object-storage, tape, ...",
    )
    offsite: bool = Field(default=False, description="Whether this copy lives away from the production site.")
    retention: Retention | None = Field(
        default=None,
        description="This target's own retention (e.g. a short local window, a long Glacier one); "
        "the policy's rules when absent.",
    )


class LocalTarget(TargetBase):
    type: Literal["local"] = Field(description="A directory: local disk or a mounted NAS share.")
    path: str = Field(description="Absolute directory path.", examples=["/var/backups/backupctl"])


class S3ObjectLock(Strict):
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(default="COMPLIANCE", description="Object lock mode.")
    days: int = Field(ge=1, description="Default retention in days.", examples=[30])


class S3Lifecycle(Strict):
    transition_days: int | None = Field(default=None, ge=0, description="Move to archive after N days.")
    transition_class: Literal["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "STANDARD_IA"] = Field(
        default="GLACIER", description="Archive storage class for the transition."
    )
    noncurrent_expire_days: int | None = Field(
        default=None, ge=1, description="Expire noncurrent object versions after N days."
    )


class NetworkDeadlines(Strict):
    """Deadlines of a network target (docs/targets.md, "Bounded time"): a frozen endpoint becomes
    a failed target within minutes, the run ends with exit 3 and releases its lock."""

    connect_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Give up opening a connection after this."
    )
    read_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="Give up on a request when the endpoint sends nothing for this long.",
    )


class S3Target(TargetBase, NetworkDeadlines):
    type: Literal["s3"] = Field(description="An S3 bucket (AWS or any S3-compatible service).")
    medium: str = Field(default="object-storage", description="Storage medium, for the 3-2-1 rule.")
    offsite: bool = Field(default=True, description="Whether this copy lives away from the production site.")
    bucket: str = Field(description="Bucket name.", examples=["acme-backups"])
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    region: str | None = Field(default=None, description="AWS region.")
    endpoint_url: str | None = Field(default=None, description="Endpoint of an S3-compatible service.")
    profile: str | None = Field(default=None, description="AWS profile from the shared config files.")
    access_key_id: Secret | None = Field(default=None, description="Access key id reference.")
    secret_access_key: Secret | None = Field(default=None, description="Secret access key reference.")
    storage_class: Literal["STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"] = Field(
        default="STANDARD", description="Storage class of artifacts (manifests always read at once)."
    )
    sse: Literal["none", "AES256", "aws:kms"] = Field(default="none", description="Server-side encryption.")
    kms_key_id: str | None = Field(default=None, description="KMS key id for sse: aws:kms.")
    versioning: Literal["required", "optional"] = Field(
        default="required", description="Fail the run when bucket versioning is not enabled."
    )
    object_lock: S3ObjectLock | None = Field(default=None, description="Required object lock posture.")
    lifecycle: S3Lifecycle | None = Field(default=None, description="Lifecycle rules `target setup` applies.")
    restore_tier: Literal["Expedited", "Standard", "Bulk"] = Field(
        default="Standard", description="Glacier retrieval tier for cold reads."
    )
    restore_days: int = Field(default=1, ge=1, description="Days a restored archive copy stays readable.")
    restore_timeout: Duration = Field(
        default=timedelta(hours=12), description="Give up waiting for a cold read after this."
    )
    part_size_mb: int = Field(default=16, ge=5, le=512, description="Multipart upload part size (MiB).")
    max_concurrency: int = Field(default=4, ge=1, le=32, description="Parallel part uploads.")
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per request; only transient errors (timeouts, 5xx) are retried.",
    )


class SftpTarget(TargetBase, NetworkDeadlines):
    type: Literal["sftp"] = Field(description="A directory on an SSH host, written over SFTP.")
    offsite: bool = Field(default=True, description="Whether this copy lives away from the production site.")
    host: str = Field(description="Host name.", examples=["backup.example.net"])
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    user: str = Field(description="SSH user.", examples=["backup"])
    key_file: str | None = Field(default=None, description="Private key file; the SSH agent when absent.")
    key_passphrase: Secret | None = Field(default=None, description="Passphrase of the key file.")
    known_hosts: str = Field(
        default="~/.ssh/known_hosts", description="known_hosts file; unknown host keys are refused."
    )
    path: str = Field(description="Remote directory.", examples=["/srv/backups"])


class ResticTarget(TargetBase):
    type: Literal["restic"] = Field(description="A restic repository (restic runs as a subprocess).")
    repository: str = Field(
        description="Repository: a path, s3:..., sftp:... or rest:... URL.", examples=["/srv/restic/shop"]
    )
    password: Secret = Field(description="Repository password reference.", examples=["env:RESTIC_PASSWORD"])
    environment: dict[str, Secret] = Field(
        default_factory=dict,
        description="Extra environment for restic (e.g. AWS keys), as secret references.",
    )
    append_only: bool = Field(default=False, description="The repository is an append-only REST server.")
    stall_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="Stop a restic backup that makes no progress for this long (frozen endpoint).",
    )


TargetConfig = Annotated[LocalTarget | S3Target | SftpTarget | ResticTarget, Field(discriminator="type")]


# --------------------------------------------------------------------------- policy
class Policy(Strict):
    name: Name = Field(description="Policy name; `backupctl backup NAME` refers to it.", examples=["shop"])
    description: str | None = Field(default=None, description="What this policy protects.")
    objectives: Objectives = Field(description="Recovery objectives that status and drills measure against.")
    schedule: Cron | None = Field(
        default=None, description="When backups run (five-field cron expression).", examples=["15 2 * * *"]
    )
    drill_schedule: Cron | None = Field(
        default=None,
        description="When restore drills run (cron expression), e.g. weekly '0 4 * * 0' or quarterly "
        "'0 5 1 1,4,7,10 *'.",
        examples=["0 4 * * 0"],
    )
    verify: VerifySchedule | None = Field(
        default=None,
        description="A scheduled sampled verify: reads `sample` of the stored bytes per run, least "
        "recently read first (restic: `check --read-data-subset n/t`).",
    )
    drill_file: str | None = Field(
        default=None,
        description="Drill file the drill schedule runs (relative to this policy file, or absolute); "
        "the policy's default drill (restore every source, integrity checks) when absent, "
        "e.g. ../drills/shop.yaml.",
    )
    encryption: Encryption = Field(description="age encryption of every artifact.")
    signing: Signing = Field(default_factory=Signing, description="Manifest signature trust.")
    compression: Compression = Field(default_factory=Compression, description="zstd settings.")
    sources: list[SourceConfig] = Field(min_length=1, description="What to back up.")
    targets: list[TargetConfig] = Field(min_length=1, description="Where copies go.")
    retention: Retention = Field(default_factory=Retention, description="How long snapshots are kept (GFS).")
    prune_after_backup: bool = Field(
        default=False, description="Run `backupctl prune` after every successful backup."
    )
    notifications: list[NotificationChannel] = Field(
        default_factory=list,
        description="Where run events are sent: webhook, healthchecks, slack (docs/monitoring.md).",
    )
    metrics_file: str | None = Field(
        default=None,
        description="Prometheus textfile written after every backup; --metrics-file overrides it.",
    )
    hooks: Hooks | None = Field(
        default=None,
        description="Commands run before/after a backup and after a failure (docs/operations.md).",
    )

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(source.name for source in self.sources)
        from backupctl.errors import ConfigError

        raise ConfigError(f"policy '{self.name}' has no source '{name}' (sources: {known})")

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(target.name for target in self.targets)
        from backupctl.errors import ConfigError

        raise ConfigError(f"policy '{self.name}' has no target '{name}' (targets: {known})")

    def targets_for(self, source: SourceConfig) -> list[TargetConfig]:
        if source.targets is None:
            return list(self.targets)
        return [target for target in self.targets if target.name in source.targets]
