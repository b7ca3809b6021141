"""The binlog archive of one MySQL/MariaDB source, on the shared segment archive (pitr.archive).

Each binlog file is one segment of kind `binlog`, named as the server names it
(`mariadb-bin.000042`), on every binlog target:
    <policy>/pitr/<source>/segments/<name>.zst.age     zstd + age, to the policy's recipients
    <policy>/pitr/<source>/records/<name>.rec           signed record; `meta` = the header facts
The record's `meta` is `BinlogInfo.as_dict()` (first/last event time, GTID state at start and
end, closed by ROTATE/STOP, size...): status, verify and restore plans read only records. Pushes
are idempotent (same content: nothing written), a different file under an archived name is
refused (`SegmentConflict`: RESET MASTER, or another server archiving into the same place).

This module adds the MySQL view on top: `ArchivedBinlog` objects for the chain rules of
`mysql_chain`, a fetch that also checks the binlog's own structure, a verify that re-hashes every
stored object, and `BinlogChainRules` for the shared retention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from backupctl.actions.stored import rehash
from backupctl.core.crypto import load_signing_key, parse_recipients, trusted_public_keys
from backupctl.errors import ConfigError, IntegrityError, TargetError
from backupctl.pitr.archive import SegmentArchive, SegmentRecord, push_to_all
from backupctl.pitr.mysql_binlog import binlog_index, binlog_name, parse_binlog_file
from backupctl.pitr.mysql_chain import ArchivedBinlog
from backupctl.policy.schema import MysqlSource, Policy
from backupctl.settings import Settings
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.registry import holds_blobs

KIND = "binlog"


class BinlogChainRules:
    """`pitr.chain.ChainRules` for binlog names: `BASENAME.NNNNNN`, numbered one by one."""

    def in_chain(self, record: SegmentRecord) -> bool:
        return record.kind == KIND

    def sort_key(self, name: str) -> tuple[str, int]:
        return name.rpartition(".")[0], binlog_index(name)

    def successor(self, name: str) -> str:
        return binlog_name(name.rpartition(".")[0], binlog_index(name) + 1)

    def missing_between(self, previous: str, following: str, limit: int) -> list[str]:
        basename = previous.rpartition(".")[0]
        stop = min(binlog_index(following), binlog_index(previous) + 1 + limit)
        return [binlog_name(basename, index) for index in range(binlog_index(previous) + 1, stop)]


def archived(record: SegmentRecord) -> ArchivedBinlog:
    """The MySQL view of a record: the header facts plus the stored object's digest and size."""
    facts = {**record.meta, "plain_digest": record.plain_digest, "stored_sha256": record.stored_sha256,
             "stored_bytes": record.stored_bytes, "pushed_at": record.pushed_at}  # fmt: skip
    return ArchivedBinlog(record.name, facts)


class BinlogArchiveStore:
    """The binlogs of one source on its binlog targets; reads go to the first target."""

    def __init__(
        self, settings: Settings, policy: Policy, source: MysqlSource, targets: list[BlobTarget]
    ) -> None:
        if not targets:
            raise ConfigError(f"source '{source.name}' has no blob target for its binlogs (binlog.targets)")
        self.settings, self.policy, self.source, self.targets = settings, policy, source, targets
        self.trusted = trusted_public_keys(settings.keys_dir, list(policy.signing.trusted_keys))
        self._writable: list[SegmentArchive] | None = None
        self.archives = [SegmentArchive(target, policy.name, source.name) for target in targets]
        # Verified records by (target, name): a record never changes once written, so a
        # long-running `collect --watch` reads each one once, not once per pass (S3: one GET each).
        self._verified: dict[tuple[str, str], SegmentRecord] = {}

    # ------------------------------------------------------------------ reading
    def binlogs(self, target: BlobTarget | None = None) -> list[ArchivedBinlog]:
        """Every archived binlog (its signed record present), oldest first. IntegrityError for a
        record whose signature does not verify."""
        archive = self._archive(target)
        found = []
        for name in archive.list_names():
            key = (archive.target.name, name)
            record = self._verified.get(key) or archive.read_record(
                name, trusted=self.trusted, missing_ok=True
            )
            if record is None or record.kind != KIND:
                continue
            self._verified[key] = record
            found.append(archived(record))
        return sorted(found, key=lambda item: (item.basename, item.index))

    def fetch(self, name: str, destination: Path, identities: list[Any]) -> dict[str, Any]:
        """Decrypt binlog `name` into `destination`, authenticated (signed record, stored sha256,
        age + zstd, plain digest), then check its structure; return its facts. Raises
        IntegrityError naming the file (SegmentMissing when its data is gone)."""
        archive = self.archives[0]
        try:
            record = archive.fetch_to(name, destination, identities, self.trusted)
        except IntegrityError as error:
            raise IntegrityError(error if name in str(error) else f"binlog {name}: {error}") from None
        parse_binlog_file(destination, allow_truncated_tail=not record.meta.get("complete"))
        return archived(record).facts

    def verify(self) -> list[str]:
        """Problems of every archived binlog on every target: signature, data present, stored sha256."""
        problems = []
        for archive in self.archives:
            target = archive.target
            try:
                listed = self.binlogs(target)
            except IntegrityError as error:
                problems.append(str(error))
                continue
            stored = archive.stored_segment_names()
            for item in listed:
                if item.name not in stored:
                    problems.append(f"binlog {item.name} is missing from target {target.name}")
                    continue
                try:
                    digest, size = rehash(target, archive.segment_key(item.name))
                except TargetError as error:
                    problems.append(f"binlog {item.name} cannot be read on target {target.name}: {error}")
                    continue
                if (digest, size) != (item.facts["stored_sha256"], item.facts["stored_bytes"]):
                    problems.append(
                        f"binlog {item.name} on target {target.name} differs from its signed digest"
                    )
        return problems

    # ------------------------------------------------------------------ writing
    def push(self, name: str, path: Path, facts: dict[str, Any]) -> None:
        """Store binlog file `path` as `name` on every target; durable everywhere when it returns.

        Raises SegmentConflict when another file is archived under the name, TargetError.
        """
        push_to_all(self._writers(), path, name, KIND, facts)

    def delete(self, name: str, target: BlobTarget) -> None:
        """Remove binlog `name` from `target` (record first). Raises RetainedByLock."""
        self._verified.pop((target.name, name), None)
        self._archive(target).delete_segment(name)

    def archive_on(self, target: BlobTarget) -> SegmentArchive:
        return self._archive(target)

    def _archive(self, target: BlobTarget | None) -> SegmentArchive:
        if target is None:
            return self.archives[0]
        return next(archive for archive in self.archives if archive.target is target)

    def _writers(self) -> list[SegmentArchive]:
        if self._writable is None:
            recipients = parse_recipients(self.policy.encryption.recipients)
            signing = load_signing_key(self.settings.keys_dir)
            self._writable = [
                SegmentArchive(
                    target, self.policy.name, self.source.name, recipients=recipients, signing_key=signing
                )
                for target in self.targets
            ]
        return self._writable


def binlog_targets(policy: Policy, source: MysqlSource) -> list[str]:
    """Names of the blob targets holding the source's binlogs."""
    assert source.pitr is not None
    if source.pitr.targets is not None:
        names = list(source.pitr.targets)
        for name in names:
            if not holds_blobs(policy.target(name).type):
                raise ConfigError(
                    f"binlog target '{name}' is not a blob target (e.g. a restic repository): "
                    "binlogs need a blob target"
                )
        return names
    return [target.name for target in policy.targets_for(source) if holds_blobs(target.type)]


@contextmanager
def open_binlog_archive(settings: Settings, policy: Policy, source_name: str) -> Iterator[BinlogArchiveStore]:
    """The binlog archive of `source_name`; its targets are closed on leaving."""
    source = policy.source(source_name)
    if not isinstance(source, MysqlSource) or source.pitr is None:
        raise ConfigError(f"source '{source_name}' of policy '{policy.name}' has no pitr: block")
    with ExitStack() as stack:
        targets = []
        for name in binlog_targets(policy, source):
            target = build_target(policy.target(name))
            stack.callback(target.close)
            targets.append(target)
        yield BinlogArchiveStore(settings, policy, source, targets)
