"""`wal base-backup`: a physical base backup of a PITR source into its WAL targets."""

from __future__ import annotations

from pathlib import Path

from backupctl.actions.wal import close_all, open_archives, pitr_source
from backupctl.core.crypto import load_signing_key, parse_recipients
from backupctl.local_cluster.postgres import find_postgres_bindir
from backupctl.pitr.postgres_base import BaseBackup, take_base_backup
from backupctl.policy.schema import Policy
from backupctl.settings import Settings


def postgres_program(bin_dir: str | None, program: str) -> str:
    """`program` in the pitr block's bin_dir, else in the server binaries' directory."""
    directory = Path(bin_dir) if bin_dir else find_postgres_bindir()
    return str(directory / program)


def run_base_backup(
    settings: Settings, policy: Policy, source_name: str, *, host: str, wal_wait_seconds: float = 300.0
) -> BaseBackup:
    """Take a base backup of `source_name`; complete only when its WAL is archived. Raises
    SourceError, JobFailed, TargetError, ConfigError."""
    source, pitr = pitr_source(policy, source_name)
    password = source.password.resolve() if source.password else None
    archives = open_archives(settings, policy, source_name)
    try:
        return take_base_backup(
            archives,
            load_signing_key(settings.keys_dir),
            parse_recipients(policy.encryption.recipients),
            url=source.url,
            password=password,
            pg_basebackup=postgres_program(pitr.bin_dir, "pg_basebackup"),
            host=host,
            wal_wait_seconds=wal_wait_seconds,
        )
    finally:
        close_all(archives)
