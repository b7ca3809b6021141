"""Where a source's binlogs are kept: encrypted objects with signed facts, on its blob targets.

Layout on every binlog target (self-describing: nothing needs the catalog):
    <policy>/binlog/<source>/<name>.zst.age        zstd + age, to the policy's recipients
    <name>.json                                   facts (BinlogInfo) + plain digest + stored sha256/size
    <name>.json.sig                               Ed25519 signature of the .json (host signing key)
An object counts as archived only when its .json exists: the data and the signature are written
first, the .json last (as snapshots' manifests), so a killed push leaves nothing that looks whole.
Pushing a name that is already archived with the same plain digest does nothing; with another
digest it fails (the server was reset or another server writes under the same name).

NOTE for the merge with the shared `backupctl/pitr/` machinery (pitr-pg): this module is the
MySQL binding; its storage internals are to be served by the shared archive (push/fetch/list of
signed, encrypted segments) once that lands, keeping this interface for the MySQL actions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from backupctl.actions.stored import confirm_stored, read_bytes, rehash
from backupctl.core.crypto import load_signing_key, parse_recipients, trusted_public_keys, verify_signature
from backupctl.core.digests import PLAIN_ALGORITHM, labelled, new_hasher
from backupctl.core.pipeline import decrypt_stream, encrypt_stream
from backupctl.errors import ConfigError, IntegrityError, TargetError
from backupctl.pitr.mysql_binlog import parse_binlog_file
from backupctl.pitr.mysql_chain import ArchivedBinlog
from backupctl.policy.schema import MysqlSource, Policy
from backupctl.settings import Settings
from backupctl.targets.base import BlobTarget, build_target

DATA, FACTS, SIGNATURE = ".zst.age", ".json", ".json.sig"


def binlog_prefix(policy: str, source: str) -> str:
    return f"{policy}/binlog/{source}/"


class BinlogArchiveStore:
    """The binlogs of one source on its binlog targets; reads go to the first target."""

    def __init__(
        self, settings: Settings, policy: Policy, source: MysqlSource, targets: list[BlobTarget]
    ) -> None:
        if not targets:
            raise ConfigError(f"source '{source.name}' has no blob target for its binlogs (binlog.targets)")
        self.settings, self.policy, self.source, self.targets = settings, policy, source, targets
        self.prefix = binlog_prefix(policy.name, source.name)
        self.trusted = trusted_public_keys(settings.keys_dir, list(policy.signing.trusted_keys))
        # Verified facts by (target, name): they never change once written, so a long-running
        # `collect --watch` reads each file's facts once, not once per pass (S3: one GET each).
        self._verified: dict[tuple[str, str], dict[str, Any]] = {}

    # ------------------------------------------------------------------ reading
    def binlogs(self, target: BlobTarget | None = None) -> list[ArchivedBinlog]:
        """Every archived binlog (its .json present and signed), oldest first.

        Raises IntegrityError for a .json whose signature does not verify.
        """
        where = target or self.targets[0]
        keys = {info.key for info in where.list_keys(self.prefix)}
        found = []
        for key in sorted(keys):
            if not key.endswith(FACTS):
                continue
            name = key[len(self.prefix) : -len(FACTS)]
            facts = self._verified.get((where.name, name)) or self._facts(where, name)
            self._verified[(where.name, name)] = facts
            if self.prefix + name + DATA not in keys:
                facts = {**facts, "missing": True}
            found.append(ArchivedBinlog(name, facts))
        return sorted(found, key=lambda item: item.index)

    def _facts(self, target: BlobTarget, name: str) -> dict[str, Any]:
        raw = read_bytes(target, self.prefix + name + FACTS)
        try:
            signature = read_bytes(target, self.prefix + name + SIGNATURE, limit=4096)
        except TargetError:
            raise IntegrityError(f"binlog {name} on target {target.name}: its signature is missing") from None
        try:
            verify_signature(raw, signature, self.trusted)
        except IntegrityError as error:
            raise IntegrityError(f"binlog {name} on target {target.name}: {error}") from None
        facts: dict[str, Any] = json.loads(raw)
        if facts.get("name") != name:
            raise IntegrityError(
                f"binlog facts at {name} on target {target.name} describe {facts.get('name')}"
            )
        return facts

    def fetch(self, name: str, destination: Path, identities: list[Any]) -> dict[str, Any]:
        """Decrypt binlog `name` into `destination`, authenticated; return its facts.

        Checks the signed facts, the stored sha256, age + zstd authentication, the plain digest
        and a header pass of the result. Raises IntegrityError naming the file.
        """
        target = self.targets[0]
        facts = self._facts(target, name)
        key = self.prefix + name + DATA
        # One read pass: the stored bytes are hashed while they are decrypted into a private
        # temporary file, which nothing uses before every check below has passed.
        try:
            with target.reader(key) as stored, destination.open("wb") as sink:
                stats = decrypt_stream(stored, sink, identities)
        except TargetError:
            raise IntegrityError(f"binlog {name} is missing from target {target.name} ({key})") from None
        except IntegrityError as error:
            raise IntegrityError(f"binlog {name} on target {target.name}: {error}") from None
        if (stats.stored_sha256, stats.stored_bytes) != (facts["stored_sha256"], facts["stored_bytes"]):
            raise IntegrityError(f"binlog {name} on target {target.name} differs from its signed digest")
        if stats.plain_digest != facts["plain_digest"]:
            raise IntegrityError(f"binlog {name}: decrypted bytes differ from the signed plain digest")
        parse_binlog_file(destination, allow_truncated_tail=not facts.get("complete"))
        return facts

    def verify(self) -> list[str]:
        """Problems of every archived object on every target (signature, presence, stored sha256)."""
        problems = []
        for target in self.targets:
            try:
                listed = self.binlogs(target)
            except IntegrityError as error:
                problems.append(str(error))
                continue
            for item in listed:
                key = self.prefix + item.name + DATA
                if item.facts.get("missing"):
                    problems.append(f"binlog {item.name} is missing from target {target.name} ({key})")
                    continue
                digest, size = rehash(target, key)
                if (digest, size) != (item.facts["stored_sha256"], item.facts["stored_bytes"]):
                    problems.append(
                        f"binlog {item.name} on target {target.name} differs from its signed digest"
                    )
        return problems

    # ------------------------------------------------------------------ writing
    def push(self, name: str, path: Path, facts: dict[str, Any]) -> None:
        """Store binlog file `path` as `name` on every target (data, signature, facts last).

        Raises JobFailed when a different file is already archived under the name.
        """
        recipients = parse_recipients(self.policy.encryption.recipients)
        signing = load_signing_key(self.settings.keys_dir)
        plain_digest = _plain_digest(path)
        for target in self.targets:
            existing = {info.key for info in target.list_keys(self.prefix + name)}
            if self.prefix + name + FACTS in existing:
                stored = self._facts(target, name)
                if stored.get("plain_digest") != plain_digest:
                    raise IntegrityError(
                        f"binlog {name} on target {target.name} is archived with other content: the server's "
                        "binlog numbering restarted (RESET MASTER, a new server); take a new dump"
                    )
                continue
            key = self.prefix + name + DATA
            with path.open("rb") as plain, target.writer(key) as sink:
                stats = encrypt_stream(plain, sink, recipients, level=self.policy.compression.level)
            confirm_stored(target, key, stats.stored_sha256, stats.stored_bytes)
            record = {**facts, "name": name, "plain_digest": stats.plain_digest,
                      "stored_sha256": stats.stored_sha256, "stored_bytes": stats.stored_bytes}  # fmt: skip
            data = json.dumps(record, sort_keys=True, indent=1).encode()
            with target.writer(self.prefix + name + SIGNATURE) as handle:
                handle.write(signing.sign(data))
            with target.writer(self.prefix + name + FACTS) as handle:
                handle.write(data)

    def delete(self, name: str, target: BlobTarget) -> None:
        """Remove binlog `name` from `target`: facts first (it stops counting), then the rest."""
        self._verified.pop((target.name, name), None)
        for suffix in (FACTS, SIGNATURE, DATA):
            target.delete(self.prefix + name + suffix)


def _plain_digest(path: Path) -> str:
    """The plain digest (the manifests' algorithm) of a file, read in 1 MiB chunks."""
    hasher = new_hasher(PLAIN_ALGORITHM)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return labelled(PLAIN_ALGORITHM, hasher)


def binlog_targets(policy: Policy, source: MysqlSource) -> list[str]:
    """Names of the blob targets holding the source's binlogs."""
    assert source.binlog is not None
    if source.binlog.targets is not None:
        names = list(source.binlog.targets)
        for name in names:
            if policy.target(name).type == "restic":
                raise ConfigError(
                    f"binlog target '{name}' is a restic repository: binlogs need a blob target"
                )
        return names
    return [target.name for target in policy.targets_for(source) if target.type != "restic"]


@contextmanager
def open_binlog_archive(settings: Settings, policy: Policy, source_name: str) -> Iterator[BinlogArchiveStore]:
    """The binlog archive of `source_name`; its targets are closed on leaving."""
    source = policy.source(source_name)
    if not isinstance(source, MysqlSource) or source.binlog is None:
        raise ConfigError(f"source '{source_name}' of policy '{policy.name}' has no binlog: block")
    with ExitStack() as stack:
        targets = []
        for name in binlog_targets(policy, source):
            target = build_target(policy.target(name))
            stack.callback(target.close)
            targets.append(target)
        yield BinlogArchiveStore(settings, policy, source, targets)
