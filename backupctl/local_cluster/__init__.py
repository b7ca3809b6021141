"""Throwaway local database clusters for tests, `make demo` and the drills' local runtime."""

from backupctl.local_cluster.postgres import LocalPostgres, find_postgres_bindir

__all__ = ["LocalPostgres", "find_postgres_bindir"]
