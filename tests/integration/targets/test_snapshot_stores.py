"""The SnapshotStore contract (tests/integration/targets/contract.py) against every target kind:
local, S3 (moto), SFTP (real sshd) and restic (the real binary), plus deletion under each
kind's lock where it has one. Small data: restic costs about 0.8 s per call."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backupctl.policy.schema import LocalTarget, ResticTarget, SftpTarget
from backupctl.targets.store import SnapshotStore, open_store
from tests.fixtures.restic import RESTIC_PASSWORD_ENV
from tests.fixtures.s3 import empty_and_delete_bucket, new_bucket_name
from tests.fixtures.sshd import SshdServer
from tests.integration.targets.contract import (
    SNAPSHOT_DATA,
    SnapshotKeys,
    SnapshotStoreContract,
    store_snapshot,
)


def opened(config: Any) -> Iterator[SnapshotStore]:
    store = open_store(config)
    store.setup(dry_run=False)  # restic: init; S3: the declared protection; others: nothing
    store.preflight()
    yield store
    store.close()


class TestLocalSnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    def config(self, tmp_path: Path) -> LocalTarget:
        return LocalTarget.model_validate({"name": "nas", "type": "local", "path": str(tmp_path / "nas")})

    @pytest.fixture
    def store(self, config: LocalTarget) -> Iterator[SnapshotStore]:
        yield from opened(config)


class TestS3SnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    def config(self, s3_target_config: Callable[..., Any]) -> Any:
        return s3_target_config(prefix=f"contract-{uuid.uuid4().hex[:8]}/")

    @pytest.fixture
    def store(self, config: Any) -> Iterator[SnapshotStore]:
        yield from opened(config)


class TestSftpSnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    def config(self, sshd_server: SshdServer) -> SftpTarget:
        return SftpTarget.model_validate({
            "name": "offsite", "type": "sftp", "host": sshd_server.host, "port": sshd_server.port,
            "user": sshd_server.user, "key_file": sshd_server.key_file,
            "known_hosts": sshd_server.known_hosts,
            "path": str(sshd_server.root / uuid.uuid4().hex / "backups"),
        })  # fmt: skip

    @pytest.fixture
    def store(self, config: SftpTarget) -> Iterator[SnapshotStore]:
        yield from opened(config)


class TestResticSnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    def config(self, restic_binary: str, restic_password: str, tmp_path: Path) -> ResticTarget:
        return ResticTarget.model_validate({
            "name": "dedup", "type": "restic", "password": f"env:{RESTIC_PASSWORD_ENV}",
            "repository": str(tmp_path / "repo"),
        })  # fmt: skip

    @pytest.fixture
    def store(self, config: ResticTarget) -> Iterator[SnapshotStore]:
        yield from opened(config)

    def test_deletion_under_the_repository_lock_keeps_the_snapshot(
        self, store: SnapshotStore, keys: SnapshotKeys
    ) -> None:
        """`forget` needs restic's exclusive lock: while a backup holds the repository, the
        deletion fails as a whole and the snapshot stays listed."""
        snapshot_id, _ = store_snapshot(store, keys, SNAPSHOT_DATA)
        busy: Any = store
        with busy.stdin_writer("other.pgdump", ["backupctl", "policy=other"]) as writer:
            writer.write(b"holds the lock")
            deletion = store.delete_snapshots("shop", [snapshot_id], set())
            writer.write(b"!")
        assert deletion.removed == [] and [failed for failed, _ in deletion.errors] == [snapshot_id]
        assert "lock" in deletion.errors[0][1]
        assert store.snapshot_ids("shop") == [snapshot_id]


@pytest.fixture
def locked_bucket(s3_client: Any) -> Iterator[str]:
    """A bucket name nobody has created yet: `setup` creates it with object lock."""
    name = new_bucket_name("locked")
    yield name
    empty_and_delete_bucket(s3_client, name)


def test_s3_deletion_under_object_lock_keeps_the_snapshot(
    s3_target_config: Callable[..., Any], locked_bucket: str
) -> None:
    """A COMPLIANCE object lock refuses the manifest's deletion: the snapshot stays whole."""
    from tests.integration.targets.contract import snapshot_keys

    config = s3_target_config(bucket=locked_bucket, object_lock={"mode": "COMPLIANCE", "days": 1})
    for store in opened(config):
        keys = snapshot_keys()
        snapshot_id, _ = store_snapshot(store, keys, SNAPSHOT_DATA[:1000])
        deletion = store.delete_snapshots("shop", [snapshot_id], set())
        assert deletion.removed == [] and [locked for locked, _ in deletion.locked] == [snapshot_id]
        assert "retained by object lock" in str(deletion.locked[0][1])
        assert store.snapshot_ids("shop") == [snapshot_id]
