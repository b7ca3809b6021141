"""The SnapshotStore of every blob target (local, S3, SFTP), written once over `BlobTarget`.

Layout: `<policy>/<snapshot-id>/{<source>.<fmt>.zst.age, manifest.json.sig, manifest.json}`;
the manifest is written last, so its presence marks the snapshot complete on the target
(backupctl.targets.snapshot_files). Each artifact is zstd-compressed and age-encrypted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from backupctl.core.crypto import SigningKey
from backupctl.core.digests import algorithm_of
from backupctl.core.manifest import ArtifactRecord, Manifest, artifact_file_name
from backupctl.core.pipeline import (
    Progress,
    StreamStats,
    decrypt_stream,
    decrypted_reader,
    encrypt_stream,
    sha256_of,
)
from backupctl.errors import BackupctlError, IntegrityError, RetainedByLock, TargetError
from backupctl.sources.base import RestoreOutcome, RestoreRequest
from backupctl.targets.base import (
    MANIFEST,
    SIGNATURE,
    BlobTarget,
    Posture,
    ReadTiming,
    build_target,
    snapshot_prefix,
)
from backupctl.targets.registry import traits_of
from backupctl.targets.snapshot_files import (
    SignedManifest,
    confirm_stored,
    key_of,
    list_snapshot_ids,
    read_manifest,
    rehash,
    write_manifest,
)
from backupctl.targets.store import (
    ArtifactCheck,
    Deletion,
    Discarded,
    Fetched,
    PlainCheck,
    StoredStream,
    TreeSource,
)


class BlobSnapshotStore:
    """Snapshots as age-encrypted objects on one blob target (`self.target`)."""

    manifest_origin: str | None = None

    def __init__(self, config: Any, target: BlobTarget | None = None) -> None:
        self.config = config
        self.traits = traits_of(config)
        self.target = target if target is not None else build_target(config)
        self.name = self.target.name
        self.offsite = self.target.offsite

    def preflight(self) -> None:
        """The target's own pre-write checks where it has them (S3: posture; local and SFTP:
        sweep temp files of killed runs)."""
        check = getattr(self.target, "check_posture", None)
        if callable(check):
            check()
        sweep = getattr(self.target, "sweep_temp_files", None)
        if callable(sweep):
            sweep("")

    def begin_snapshot(self, policy: str, snapshot_id: str) -> None:
        return None  # nothing to start: a blob target's manifest is two small writes

    def snapshot_ids(self, policy: str) -> list[str]:
        return list_snapshot_ids(self.target, policy)

    def read_manifest(self, policy: str, snapshot_id: str, trusted: list[str]) -> SignedManifest | None:
        return read_manifest(self.target, policy, snapshot_id, trusted)

    def write_manifest(self, manifest: Manifest, signing: SigningKey) -> str:
        return write_manifest(self.target, manifest, signing)

    def store_stream(
        self, policy: str, snapshot_id: str, source: str, extension: str, stream: BinaryIO,
        recipients: list[Any],
    ) -> StoredStream:  # fmt: skip
        file = artifact_file_name(source, extension)
        key = key_of(policy, snapshot_id, file)
        with self.target.writer(key) as sink:
            stats = encrypt_stream(stream, sink, recipients)
        confirm_stored(self.target, key, stats.stored_sha256, stats.stored_bytes)
        return StoredStream(
            file, stats.plain_bytes, stats.plain_digest, stats.stored_bytes, stats.stored_sha256
        )

    def fetch(self, policy: str, snapshot_id: str, artifact: ArtifactRecord) -> Fetched:
        """Re-read the stored bytes: size and sha256 as the manifest says (a Glacier warm-up,
        when the object is archived, is measured)."""
        timing = ReadTiming()
        digest, size = rehash(self.target, key_of(policy, snapshot_id, artifact.file), timing)
        ok = digest == artifact.stored_sha256 and size == artifact.stored_bytes
        detail = (
            "stored bytes match the manifest"
            if ok
            else f"sha256/size differ from the manifest ({size} bytes, expected {artifact.stored_bytes})"
        )
        stage = f"{size} bytes" + (
            f", archive warm-up {timing.warmup_seconds:.1f}s" if timing.warmup_seconds else ""
        )
        problem = (
            ""
            if ok
            else f"{artifact.file} on target {self.name} does not match its manifest "
            f"({size} bytes, manifest says {artifact.stored_bytes}; sha256 "
            f"{'matches' if digest == artifact.stored_sha256 else 'differs'})"
        )
        return Fetched(f"sha256 {artifact.file}", ok, detail, stage, timing.warmup_seconds, problem)

    @contextmanager
    def open_plain(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any],
        progress: Progress | None = None,
    ) -> Iterator[tuple[BinaryIO, Callable[[], StreamStats]]]:  # fmt: skip
        """Read, age-decrypted and zstd-decompressed in a background thread; `finished()` raises
        the decryption error, if any."""
        algorithm = algorithm_of(artifact.plain_digest)
        with (
            self.target.reader(key_of(policy, snapshot_id, artifact.file)) as stored,
            decrypted_reader(stored, identities, plain_algorithm=algorithm, progress=progress) as pipe,
        ):
            yield pipe

    def read_size(self, artifact: ArtifactRecord) -> int:
        return artifact.stored_bytes

    def plain_check(self, artifact: ArtifactRecord) -> PlainCheck:
        return PlainCheck(
            f"decrypt {artifact.file}", "authenticated and equal", f"{artifact.file}: the decrypted stream"
        )

    def restore_tree(
        self, policy: str, snapshot_id: str, artifact: ArtifactRecord, identities: list[Any],
        source: TreeSource, request: RestoreRequest, progress: Progress | None = None,
    ) -> tuple[RestoreOutcome, int]:  # fmt: skip
        """The tar stream, extracted by the source (its member checks and destination rules)."""
        with self.open_plain(policy, snapshot_id, artifact, identities, progress) as (plain, finished):
            outcome = source.restore(plain, request)
            stats = finished()
        if stats.plain_digest != artifact.plain_digest:
            raise IntegrityError(
                f"{self.plain_check(artifact).subject} differs from the manifest's plain digest"
            )
        return outcome, stats.plain_bytes

    def delete_snapshots(self, policy: str, snapshot_ids: list[str], failed_runs: set[str]) -> Deletion:
        """Manifest first (the snapshot stops counting as complete here), then the rest. A lock
        on the manifest keeps the snapshot whole; a lock on the other objects leaves them (the
        copy is gone without its manifest). Failed runs left nothing listed: `failed_runs` is
        not used."""
        deletion = Deletion()
        for snapshot_id in snapshot_ids:
            self._delete(policy, snapshot_id, deletion)
        return deletion

    def _delete(self, policy: str, snapshot_id: str, deletion: Deletion) -> None:
        prefix = snapshot_prefix(policy, snapshot_id)
        try:
            keys = [info.key for info in self.target.list_keys(prefix)]
            try:
                self.target.delete(prefix + MANIFEST)
            except RetainedByLock as error:
                deletion.locked.append((snapshot_id, error))
                return  # the snapshot stays whole: nothing else is touched
            locked: RetainedByLock | None = None
            others = sorted(key for key in keys if key not in (prefix + MANIFEST, prefix + SIGNATURE))
            for key in [prefix + SIGNATURE, *others]:
                try:
                    self.target.delete(key)
                except RetainedByLock as error:
                    locked = error
        except (BackupctlError, OSError) as error:
            deletion.errors.append((snapshot_id, str(error)))
            return
        deletion.removed.append(snapshot_id)
        if locked is not None:
            deletion.locked.append((snapshot_id, locked))

    def discard_snapshots(
        self, policy: str, snapshot_ids: list[str], *, before: float, dry_run: bool = False
    ) -> list[Discarded]:
        """Per snapshot: one listing of its prefix, the manifest deleted first (so nothing
        half-deleted ever looks complete), then the rest; then its partial writes."""
        return [self._discard(policy, snapshot_id, before, dry_run) for snapshot_id in snapshot_ids]

    def _discard(self, policy: str, snapshot_id: str, before: float, dry_run: bool) -> Discarded:
        prefix = snapshot_prefix(policy, snapshot_id)
        result = Discarded(snapshot_id)
        try:
            found = {info.key: info.size for info in self.target.list_keys(prefix)}
            first = [key for key in (prefix + MANIFEST, prefix + SIGNATURE) if key in found]
            for key in [*first, *sorted(key for key in found if key not in first)]:
                if not dry_run:
                    try:
                        self.target.delete(key)
                    except RetainedByLock:
                        result.retained_by_lock.append(key)
                        continue
                result.objects += 1
                result.bytes_reclaimed += found[key]
            for partial in self.target.sweep_partial(prefix, before=before, dry_run=dry_run):
                result.objects += 1
                result.bytes_reclaimed += partial.size
        except (BackupctlError, OSError) as error:
            result.error = str(error)
        return result

    def check_artifacts(
        self, policy: str, snapshot_id: str, manifest: Manifest, sources: set[str], identities: list[Any]
    ) -> tuple[list[ArtifactCheck], list[str]]:
        """Per artifact of the manifest (which lists what this target holds): present, size,
        sha256 of the stored bytes, and a full decrypt + decompress pass."""
        present = {info.key: info.size for info in self.target.list_keys(f"{policy}/{snapshot_id}/")}
        checks, problems = [], []
        for artifact in manifest.artifacts:
            check = self._check(key_of(policy, snapshot_id, artifact.file), artifact, present, identities)
            checks.append(check)
            problems += [
                f"{artifact.file} on {self.name}: {name}: {outcome}"
                for name, outcome in check.checks.items()
                if outcome != "ok"
            ]
        return checks, problems

    def _check(
        self, key: str, artifact: ArtifactRecord, present: dict[str, int], identities: list[Any]
    ) -> ArtifactCheck:
        check = ArtifactCheck(artifact.file)
        if key not in present:
            check.checks["present"] = "missing from the target"
            return check
        check.checks["present"] = "ok"
        size = present[key]
        check.checks["size"] = (
            "ok"
            if size == artifact.stored_bytes
            else f"{size} bytes stored, manifest says {artifact.stored_bytes} (truncated or replaced)"
        )
        modified = "stored bytes do not match the manifest's sha256 (modified)"
        try:
            algorithm = algorithm_of(artifact.plain_digest)
            with self.target.reader(key) as handle, _restorability(artifact, check) as sink:
                stats = decrypt_stream(handle, sink, identities, plain_algorithm=algorithm)
        except IntegrityError as error:
            # Decryption stopped early; hash the stored bytes separately so both facts are reported.
            with self.target.reader(key) as handle:
                digest, _ = sha256_of(handle)
            check.checks["sha256"] = "ok" if digest == artifact.stored_sha256 else modified
            check.checks["decrypt"] = str(error) or "failed"
            return check
        except TargetError as error:
            check.checks["read"] = str(error)
            return check
        check.checks["sha256"] = "ok" if stats.stored_sha256 == artifact.stored_sha256 else modified
        check.checks["decrypt"] = "ok"
        plain_ok = stats.plain_digest == artifact.plain_digest and stats.plain_bytes == artifact.plain_bytes
        check.checks["plain"] = "ok" if plain_ok else "decrypted content differs from the manifest"
        return check

    def check_data(self, subset: str) -> list[str]:
        """Nothing beyond the copies: a sampled verify reads blob copies one by one."""
        return []

    def survey(self, policy: str, snapshot_id: str, trusted: list[str]) -> list[str]:
        """One listing of the snapshot's prefix and the manifest (two small reads)."""
        prefix = snapshot_prefix(policy, snapshot_id)
        present = {info.key: info.size for info in self.target.list_keys(prefix)}
        if prefix + MANIFEST not in present:
            return [f"snapshot {snapshot_id} has no manifest on {self.name} (deleted, or another bucket)"]
        try:
            signed = read_manifest(self.target, policy, snapshot_id, trusted)
        except IntegrityError as error:
            return [str(error)]
        problems = []
        for artifact in signed.manifest.artifacts:
            key = key_of(policy, snapshot_id, artifact.file)
            if key not in present:
                problems.append(f"{key} is missing from {self.name}")
            elif present[key] != artifact.stored_bytes:
                problems.append(
                    f"{key} on {self.name} is {present[key]} bytes, the manifest says {artifact.stored_bytes}"
                )
        return problems

    def posture(self) -> Posture:
        return self.target.posture()

    def setup(self, dry_run: bool) -> list[dict[str, str]]:
        """Targets with something to set up (S3: versioning, object lock, lifecycle) have an
        `apply_setup(dry_run)`; the others have nothing to change."""
        apply = getattr(self.target, "apply_setup", None)
        return list(apply(dry_run)) if callable(apply) else []

    def tool_version(self) -> str | None:
        return None

    def close(self) -> None:
        self.target.close()


@contextmanager
def _restorability(artifact: ArtifactRecord, check: ArtifactCheck) -> Iterator[BinaryIO | None]:
    """For a files artifact, a sink that checks every tar member with restore's own rule
    (sources/targuard.py) and records the outcome as the "restorable" check; else None."""
    if artifact.format != "tar":
        yield None
        return
    from backupctl.sources.targuard import tar_checking_sink

    with tar_checking_sink() as (sink, finish):
        try:
            yield sink
        finally:
            problems = finish()
            check.checks["restorable"] = "; ".join(problems) if problems else "ok"
