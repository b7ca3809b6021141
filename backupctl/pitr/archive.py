"""A log-segment archive on one blob target: push, fetch and list signed, encrypted segments.

This is the generic floor shared by every PITR source (PostgreSQL WAL, MySQL binlogs). It knows
nothing about a segment's content: a source gives each segment a `name` (unique in the archive,
e.g. `000000010000000000000003` or `mysql-bin.000042`), a `kind` (e.g. "wal", "history",
"backup", "binlog") and a JSON-able `meta` dict (timeline, LSN range, GTID set, event times...).

Contract (stable; add, don't break):

- `push(path, name, kind, meta)` compresses (zstd) and encrypts (age, to the policy's recipients)
  the file, stores it as `segments/<name>.zst.age`, then stores its signed record
  `records/<name>.rec`. The record is written last: a segment counts as archived only when its
  record exists, so an interrupted push leaves nothing visible (the target's writes are atomic and
  durable when the writer exits: fsync of file and directory on local/NAS, a completed PUT on S3).
  It returns only when both objects are durable.
- Re-pushing a name already archived with the same plain digest (BLAKE3) returns `PushResult(
  already=True)` without writing; with a different digest it raises `SegmentConflict` and writes
  nothing (split brain, a restored server archiving into the old archive...).
- `claim_identity(value)` binds the archive to one server (PostgreSQL's system identifier, MySQL's
  server uuid): the first call writes `identity.json`, a different value raises
  `ArchiveIdentityMismatch`.
- A record holds the name, kind, plain digest and size, stored size and sha256, push time, host,
  and `meta`; it is signed with the host's Ed25519 key, so `list_records(trusted)` and the chain
  check need no private key.
- `fetch_to(name, destination, identities, trusted)` decrypts to a temp file next to
  `destination`, checks the plain digest against the signed record, and renames it into place
  only when it matches: a flipped byte never reaches the database (`IntegrityError`).
- A missing segment raises `SegmentMissing` (a permanent error naming the segment).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from backupctl import __version__
from backupctl.core.crypto import SigningKey, verify_signature
from backupctl.core.digests import PLAIN_ALGORITHM, algorithm_of, new_hasher
from backupctl.core.pipeline import CHUNK, decrypt_stream, encrypt_stream
from backupctl.errors import IntegrityError, JobFailed, TargetError
from backupctl.targets.base import BlobTarget

RECORD_FORMAT = "backupctl-pitr-segment"
RECORD_VERSION = 1
SEGMENTS = "segments/"
RECORDS = "records/"
IDENTITY = "identity.json"
SEGMENT_SUFFIX = ".zst.age"
RECORD_SUFFIX = ".rec"


class SegmentConflict(JobFailed):
    """A segment of that name is archived with different content (nothing was written)."""


class ArchiveIdentityMismatch(JobFailed):
    """The archive belongs to another server (system identifier / server uuid differ)."""


class SegmentMissing(IntegrityError):
    """A segment the caller needs is not in the archive (`name` says which)."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"segment {name} is not in the archive")
        self.name = name


def archive_prefix(policy: str, source: str) -> str:
    """`<policy>/pitr/<source>/`: where a source's archive lives on a target."""
    return f"{policy}/pitr/{source}/"


@dataclass(frozen=True)
class SegmentRecord:
    """What is known about one archived segment (signed; readable without the private key)."""

    name: str
    kind: str
    plain_digest: str  # algorithm:hex (core.digests), BLAKE3
    plain_bytes: int
    stored_bytes: int
    stored_sha256: str
    pushed_at: str  # UTC ISO-8601, when the segment became durable
    host: str
    meta: dict[str, Any] = field(default_factory=dict)
    backupctl_version: str = __version__
    format: str = RECORD_FORMAT
    version: int = RECORD_VERSION

    @property
    def pushed_time(self) -> datetime:
        return datetime.fromisoformat(self.pushed_at)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): what the signature covers."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentRecord:
        try:
            raw = json.loads(data)
            if raw.get("format") != RECORD_FORMAT or raw.get("version") != RECORD_VERSION:
                raise ValueError(f"unknown record format {raw.get('format')!r} v{raw.get('version')!r}")
            return cls(**raw)
        except (ValueError, TypeError) as error:
            raise IntegrityError(f"segment record is malformed: {error}") from None


@dataclass(frozen=True)
class PushResult:
    record: SegmentRecord
    already: bool  # True: the same content was archived before; nothing was written


class SegmentArchive:
    """The archive of one source on one blob target.

    `recipients`: age recipients (pyrage) to encrypt to; `signing_key`: the host's key for records.
    Both are only needed to push; listing, checking and fetching need `trusted` public keys, and
    fetching the age identities.
    """

    def __init__(
        self,
        target: BlobTarget,
        policy: str,
        source: str,
        *,
        recipients: Sequence[Any] = (),
        signing_key: SigningKey | None = None,
        location: str = "",
    ) -> None:
        self.target = target
        self.policy = policy
        self.source = source
        self.prefix = archive_prefix(policy, source)
        # Where the target's configuration points (actions.wal.target_location), "" when not known:
        # what caches about the archive are keyed on, never the target's name (it can be repointed).
        self.location = location
        self._recipients = list(recipients)
        self._signing_key = signing_key

    # ----------------------------------------------------------------- keys
    def segment_key(self, name: str) -> str:
        return f"{self.prefix}{SEGMENTS}{_checked_name(name)}{SEGMENT_SUFFIX}"

    def record_key(self, name: str) -> str:
        return f"{self.prefix}{RECORDS}{_checked_name(name)}{RECORD_SUFFIX}"

    # ----------------------------------------------------------------- identity
    def claim_identity(self, value: str, *, description: str = "server") -> None:
        """Bind the archive to `value` (first call writes it); raise ArchiveIdentityMismatch when
        the archive already belongs to another value."""
        key = self.prefix + IDENTITY
        existing = self._read_optional(key)
        if existing is None:
            with self.target.writer(key) as out:
                out.write(json.dumps({"identity": value, "description": description}).encode() + b"\n")
            return
        try:
            stored = str(json.loads(existing)["identity"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{key} on {self.target.name} is malformed") from None
        if stored != value:
            raise ArchiveIdentityMismatch(
                f"the archive {self.prefix} on {self.target.name} belongs to {description} {stored}, "
                f"not to this {description} {value}: a different (or re-initialised) server is "
                "archiving into it. Give this server its own source name, or move the old archive away"
            )

    # ----------------------------------------------------------------- push
    def push(self, path: Path, name: str, kind: str, meta: dict[str, Any] | None = None) -> PushResult:
        """Archive the file at `path` as segment `name`. Durable when it returns.

        Raises SegmentConflict (same name, different content), TargetError (storage failed:
        nothing became visible), ConfigError (no recipients/signing key).
        """
        if not self._recipients or self._signing_key is None:
            raise JobFailed("pushing a segment needs the policy's recipients and this host's signing key")
        plain_digest, plain_bytes = file_digest(path)
        existing = self.read_record(name, trusted=None, missing_ok=True)
        if existing is not None:
            return PushResult(self._same_or_conflict(existing, plain_digest, name), already=True)
        with path.open("rb") as plain, self.target.writer(self.segment_key(name)) as sink:
            # one zstd thread: segments are small and the archiver runs beside the database
            stats = encrypt_stream(plain, sink, self._recipients, level=1, threads=1)
        if stats.plain_digest != plain_digest:
            raise IntegrityError(f"{path} changed while it was being archived")
        record = SegmentRecord(
            name=name,
            kind=kind,
            plain_digest=plain_digest,
            plain_bytes=plain_bytes,
            stored_bytes=stats.stored_bytes,
            stored_sha256=stats.stored_sha256,
            pushed_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            host=socket.gethostname(),
            meta=dict(meta or {}),
        )
        body = record.to_bytes()
        with self.target.writer(self.record_key(name)) as out:
            out.write(body + b"\n" + self._signing_key.sign(body))
        return PushResult(record, already=False)

    def _same_or_conflict(self, existing: SegmentRecord, plain_digest: str, name: str) -> SegmentRecord:
        if existing.plain_digest == plain_digest:
            return existing
        raise SegmentConflict(
            f"segment {name} is already archived on {self.target.name} with DIFFERENT content "
            f"(archived {existing.plain_digest[:23]}... by {existing.host} at {existing.pushed_at}, "
            f"now {plain_digest[:23]}...): two servers archive into one archive (split brain) or a "
            "restored server reuses its old archive. Nothing was overwritten"
        )

    # ----------------------------------------------------------------- records
    def read_record(
        self, name: str, *, trusted: list[str] | None, missing_ok: bool = False
    ) -> SegmentRecord | None:
        """The record of segment `name`, its signature checked against `trusted` (None: unchecked,
        only for the push's own idempotency test). None when missing and `missing_ok`."""
        data = self._read_optional(self.record_key(name))
        if data is None:
            if missing_ok:
                return None
            raise SegmentMissing(name)
        return parse_record(data, trusted, where=f"{self.record_key(name)} on {self.target.name}")

    def list_names(self) -> list[str]:
        """Names of the archived segments (those with a record), in key order."""
        base = self.prefix + RECORDS
        return [
            info.key[len(base) : -len(RECORD_SUFFIX)]
            for info in self.target.list_keys(base)
            if info.key.endswith(RECORD_SUFFIX)
        ]

    def list_records(self, trusted: list[str] | None) -> list[SegmentRecord]:
        """Every archived segment's record, signatures checked (IntegrityError on a bad one)."""
        return [
            record
            for name in self.list_names()
            if (record := self.read_record(name, trusted=trusted, missing_ok=True)) is not None
        ]

    def stored_segment_names(self) -> set[str]:
        """Names of the segment objects present (with or without a record)."""
        base = self.prefix + SEGMENTS
        return {
            info.key[len(base) : -len(SEGMENT_SUFFIX)]
            for info in self.target.list_keys(base)
            if info.key.endswith(SEGMENT_SUFFIX)
        }

    # ----------------------------------------------------------------- fetch
    def fetch_to(
        self, name: str, destination: Path, identities: Sequence[Any], trusted: list[str]
    ) -> SegmentRecord:
        """Decrypt segment `name` into `destination` (atomically), checking its signed digest first.

        Raises SegmentMissing, IntegrityError (signature, decryption or digest mismatch: the
        destination is not created), TargetError.
        """
        record = self.read_record(name, trusted=trusted)
        assert record is not None
        temp = destination.with_name(f".{destination.name}.part-{os.getpid()}")
        try:
            with temp.open("wb") as sink:
                try:
                    with self.target.reader(self.segment_key(name)) as stored:
                        stats = decrypt_stream(
                            stored, sink, list(identities), plain_algorithm=algorithm_of(record.plain_digest)
                        )
                except IntegrityError as error:
                    raise IntegrityError(
                        f"segment {name} on {self.target.name} does not match its signed record ({error}): "
                        "refusing to hand it to the database"
                    ) from None
                except TargetError as error:
                    if not self._exists(self.segment_key(name)):
                        raise SegmentMissing(
                            name, f"segment {name} has a record but no data on {self.target.name}"
                        ) from error
                    raise
                if stats.plain_digest != record.plain_digest or stats.stored_sha256 != record.stored_sha256:
                    raise IntegrityError(
                        f"segment {name} on {self.target.name} does not match its signed record "
                        "(damaged or replaced): refusing to hand it to the database"
                    )
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(temp, destination)
        finally:
            temp.unlink(missing_ok=True)
        return record

    def fetch_bytes(self, name: str, identities: Sequence[Any], trusted: list[str]) -> bytes:
        """The plain bytes of a (small) segment, checked like `fetch_to`."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="backupctl-fetch-") as directory:
            path = Path(directory) / "segment"
            self.fetch_to(name, path, identities, trusted)
            return path.read_bytes()

    # ----------------------------------------------------------------- delete
    def delete_segment(self, name: str) -> None:
        """Delete a segment's record first (it stops counting as archived), then its data.
        Raises RetainedByLock (from the target) when object lock keeps either."""
        self.target.delete(self.record_key(name))
        self.target.delete(self.segment_key(name))

    # ----------------------------------------------------------------- helpers
    def _read_optional(self, key: str) -> bytes | None:
        try:
            with self.target.reader(key) as handle:
                return _read_all(handle)
        except TargetError as error:
            if error.transient or self._exists(key):
                raise
            return None

    def _exists(self, key: str) -> bool:
        return any(info.key == key for info in self.target.list_keys(key))


def parse_record(data: bytes, trusted: list[str] | None, *, where: str) -> SegmentRecord:
    """A record from its stored form (JSON line, then the base64 signature line)."""
    body, _, signature = data.rstrip(b"\n").partition(b"\n")
    if trusted is not None:
        try:
            verify_signature(body, signature, trusted)
        except IntegrityError as error:
            raise IntegrityError(f"{where}: {error}") from None
    return SegmentRecord.from_bytes(body)


def file_digest(path: Path) -> tuple[str, int]:
    """(`blake3:hex`, size) of a file."""
    hasher = new_hasher(PLAIN_ALGORITHM)
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return f"{PLAIN_ALGORITHM}:{hasher.hexdigest()}", size


def _read_all(handle: BinaryIO) -> bytes:
    parts = []
    while chunk := handle.read(CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _checked_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or name in ("..",):
        raise JobFailed(f"invalid segment name {name!r}")
    return name


def push_to_all(
    archives: Sequence[SegmentArchive], path: Path, name: str, kind: str, meta: dict[str, Any] | None = None
) -> list[PushResult]:
    """Push one segment to every archive (one per target); durable everywhere when it returns.

    Every archive is tried even when one fails; then the first failure is raised (a conflict
    before a storage error: it is the one an operator must see). The caller retries the whole
    push: archives that already hold the segment answer `already=True` at the cost of one read.
    """
    results: list[PushResult] = []
    failures: list[BaseException] = []
    for archive in archives:
        try:
            results.append(archive.push(path, name, kind, meta))
        except (JobFailed, OSError) as error:
            failures.append(error)
    if failures:
        conflicts = [f for f in failures if isinstance(f, SegmentConflict | ArchiveIdentityMismatch)]
        raise (conflicts or failures)[0]
    return results
