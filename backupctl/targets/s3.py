"""The `s3` blob target: an S3 bucket on AWS or any S3-compatible service, through boto3.

Behaviour beyond the BlobTarget contract (docs/targets.md):
- Keys are `<prefix>/<key>` inside the bucket (just `<key>` without a prefix).
- Writes stream: parts of `part_size_mb` are uploaded by at most `max_concurrency` threads. The
  parts in flight wait in a private unlinked spool file of (max_concurrency + 1) x part size
  (backupctl.targets.s3_parts; in memory when the spool directory has no room), so memory
  stays flat whatever the object size. An object smaller than one part is a single PutObject.
  A multipart object becomes visible only when CompleteMultipartUpload succeeds; on any error
  the upload is aborted. (A process killed outright leaves an invisible incomplete upload: the
  next backup or prune of the policy aborts it (`sweep_partial`, backupctl.actions.sweep), and
  `target setup` adds a lifecycle rule that aborts those after 7 days.)
- Artifacts get `storage_class`; `manifest.json` and `manifest.json.sig` are always STANDARD
  so that listing and verifying never wait for an archive restore. With a lifecycle transition
  configured, objects are tagged `backupctl-role=artifact|manifest` and the transition rule
  matches artifacts only. Object lock relies on the bucket's default retention.
- Cold reads (GLACIER, DEEP_ARCHIVE): RestoreObject, poll HeadObject every
  `$BACKUPCTL_S3_RESTORE_POLL` seconds (default 30) for at most `restore_timeout`, then stream;
  the wait is recorded in `ReadTiming.warmup_seconds`.
- `delete` removes every version of the key (a plain DELETE on a versioned bucket only adds a
  delete marker and keeps the data). Versions under object lock or legal hold are left in place
  and RetainedByLock names the key and the retain-until date; governance retention is never
  bypassed.
- Errors become TargetError: timeouts, 5xx and throttling are transient (botocore has already
  retried them with backoff); access denied, bad credentials, missing bucket or key are
  permanent and say what to check.

IAM permissions used: s3:PutObject, s3:GetObject, s3:RestoreObject, s3:ListBucket,
s3:ListBucketVersions, s3:DeleteObjectVersion, s3:GetObjectRetention, s3:GetBucketVersioning,
s3:GetBucketObjectLockConfiguration, s3:GetLifecycleConfiguration, s3:AbortMultipartUpload,
s3:ListBucketMultipartUploads;
s3:PutObjectTagging with a lifecycle transition; the Put* bucket permissions for `target setup`.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import ClientError

from backupctl.core.durations import format_duration, humanize_seconds, parse_duration
from backupctl.errors import ConfigError, RetainedByLock, TargetError
from backupctl.policy.schema import S3Target
from backupctl.targets.base import MANIFEST, SIGNATURE, ObjectInfo, Posture, ReadTiming, register_target
from backupctl.targets.s3_parts import PartBody, PartSlots, open_part_slots
from backupctl.targets.s3_posture import (
    ROLE_TAG,
    SetupChange,
    apply_setup,
    check_posture,
    error_code,
    make_client,
    read_posture,
    translate_error,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, RestoreRequestTypeDef

log = logging.getLogger("backupctl.targets.s3")

MiB = 1024 * 1024
SMALL_OBJECT = MiB  # objects up to this size (manifests, signatures) never open a spool file
RESTORE_POLL_ENV = "BACKUPCTL_S3_RESTORE_POLL"


def is_manifest_key(key: str) -> bool:
    """Manifests and their signatures must stay instantly readable (always STANDARD)."""
    return key.rpartition("/")[2] in (MANIFEST, SIGNATURE)


def restore_poll_seconds() -> float:
    """Seconds between HeadObject polls while an archive restore runs (env override for tests)."""
    raw = os.environ.get(RESTORE_POLL_ENV, "30")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"{RESTORE_POLL_ENV}={raw!r} is not a positive number of seconds")
    return seconds


def restore_timeout(config: S3Target) -> timedelta:
    """`restore_timeout` as a timedelta."""
    value: timedelta | str = config.restore_timeout
    # The schema's default ("12h") is not validated by pydantic and arrives as a string.
    return parse_duration(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- the target
@register_target("s3")
class S3BlobTarget:
    # S3 checks every part's CRC32 on arrival (and the whole object's on completion), so the
    # backup confirms a write by size instead of downloading it again: reading back would cost
    # egress and, for GLACIER/DEEP_ARCHIVE classes, an archive retrieval.
    verifies_writes = True

    """Objects in `config.bucket` under `config.prefix`. One client, shared by threads."""

    def __init__(self, config: S3Target) -> None:
        self.config = config
        self.name = config.name
        self.medium = config.medium
        self.offsite = config.offsite
        self.bucket = config.bucket
        self.root = config.prefix.strip("/") + "/" if config.prefix.strip("/") else ""
        self.client: S3Client = make_client(config)

    def apply_setup(self, dry_run: bool) -> list[dict[str, str]]:
        """`backupctl target setup`: make the bucket match the declaration (s3_posture)."""
        from backupctl.targets.s3_posture import apply_setup

        return [change.as_dict() for change in apply_setup(self.config, dry_run=dry_run, client=self.client)]

    # ----------------------------------------------------------------- BlobTarget API
    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """Yield a binary writer; the object appears atomically when the block exits cleanly.

        Raises TargetError; on any error (also the caller's) the multipart upload is aborted.
        """
        upload = _StreamingUpload(self, self.object_key(key), self._put_arguments(key))
        try:
            yield cast(BinaryIO, upload)
            upload.commit()
        except BaseException:
            upload.abort()
            raise
        finally:
            upload.shutdown()

    @contextmanager
    def reader(self, key: str, timing: ReadTiming | None = None) -> Iterator[BinaryIO]:
        """Yield the object as a streaming binary reader, restoring an archived object first.

        Raises TargetError: missing object, access denied, archive restore timed out.
        """
        full = self.object_key(key)
        warmup = 0.0
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
        except ClientError as error:
            if error_code(error) != "InvalidObjectState":  # archived: GLACIER or DEEP_ARCHIVE
                raise self.error(error, "read", full, "s3:GetObject") from error
            started = time.monotonic()
            self._warm_up(full)
            warmup = time.monotonic() - started
            response = self.call("get_object", "read", full, "s3:GetObject", Key=full)
        except Exception as error:
            raise self.error(error, "read", full, "s3:GetObject") from error
        if timing is not None:
            timing.warmup_seconds = warmup
        body = response["Body"]
        try:
            yield io.BufferedReader(_BodyStream(self, body, full), buffer_size=MiB)
        finally:
            body.close()

    def list_keys(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with `prefix`, sorted; keys relative to the target
        prefix. (S3 never lists an incomplete multipart upload.)"""
        found: list[ObjectInfo] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.root + prefix):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(self.root) :]
                    found.append(ObjectInfo(relative, item["Size"], item.get("StorageClass")))
        except Exception as error:
            raise self.error(error, "list", self.root + prefix, "s3:ListBucket") from error
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        """Delete every version of the object; a missing object is not an error.

        Raises RetainedByLock when object lock (or a legal hold) protects a version: the other
        versions are deleted, the protected ones stay in place and readable.
        """
        full = self.object_key(key)
        protected: list[tuple[datetime | None, str]] = []
        for version in self._versions(full):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=version)
            except Exception as error:
                # AWS refuses a locked version with AccessDenied (or InvalidRequest); only the
                # version's retention tells a lock from a missing IAM permission.
                lock = self._lock_of(full, version) if isinstance(error, ClientError) else None
                if lock is None:
                    raise self.error(error, "delete", full, "s3:DeleteObjectVersion") from error
                protected.append(lock)
        if protected:
            dates = [until for until, _ in protected if until is not None]
            until_text = f"until {max(dates).isoformat()}" if dates else "until the legal hold is removed"
            modes = "/".join(sorted({mode for _, mode in protected}))
            raise RetainedByLock(
                f"target {self.name}: s3://{self.bucket}/{full} is retained by object lock ({modes}) "
                f"{until_text}; {len(protected)} version(s) kept. Delete it after that date "
                "(backupctl never bypasses retention)"
            )

    def sweep_partial(self, prefix: str, *, before: float, dry_run: bool = False) -> list[ObjectInfo]:
        """Incomplete multipart uploads under `prefix` initiated before `before` (Unix time),
        aborted unless `dry_run` (their parts are stored, and billed, until then); their keys
        and the bytes of the parts uploaded, sorted."""
        found: list[ObjectInfo] = []
        where = self.root + prefix
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            uploads = [
                upload
                for page in paginator.paginate(Bucket=self.bucket, Prefix=where)
                for upload in page.get("Uploads", [])
                if upload["Initiated"].timestamp() < before
            ]
        except Exception as error:
            permission = "s3:ListBucketMultipartUploads"
            raise self.error(error, "list the multipart uploads of", where, permission) from error
        for upload in uploads:
            key, upload_id = upload["Key"], upload["UploadId"]
            size = 0
            with suppress(Exception):  # the parts' sizes only feed the report
                parts = self.client.get_paginator("list_parts")
                for page in parts.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                    size += sum(part.get("Size", 0) for part in page.get("Parts", []))
            if not dry_run:
                self.call("abort_multipart_upload", "abort", key, "s3:AbortMultipartUpload",
                          Key=key, UploadId=upload_id)  # fmt: skip
            found.append(ObjectInfo(key[len(self.root) :], size))
        return sorted(found, key=lambda info: info.key)

    def posture(self) -> Posture:
        """Reachability, versioning, object lock and lifecycle read from the bucket itself."""
        return read_posture(self.client, self.config)

    def check_posture(self) -> None:
        """Raise a permanent TargetError listing every problem when the bucket is not fit to
        be written to (the backup run calls this before writing)."""
        check_posture(self)

    def setup(self, dry_run: bool = False) -> list[SetupChange]:
        """`backupctl target setup`: make the bucket match the declaration (see s3_posture)."""
        return apply_setup(self.config, dry_run=dry_run, client=self.client)

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()

    # ----------------------------------------------------------------- helpers
    def object_key(self, key: str) -> str:
        """The key inside the bucket for a target key."""
        if not key or key.startswith("/"):
            raise TargetError(f"target {self.name}: invalid object key '{key}'")
        return self.root + key

    def error(self, error: BaseException, doing: str, full: str | None, permission: str) -> TargetError:
        """`translate_error` for an object key in this bucket (the bucket itself when None)."""
        return translate_error(
            error, target=self.name, doing=doing, bucket=self.bucket, key=full, permission=permission
        )

    def call(self, method: str, doing: str, full: str | None, permission: str, **arguments: Any) -> Any:
        """Call a client method on this bucket, translating any failure into a TargetError."""
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **arguments)
        except Exception as error:
            raise self.error(error, doing, full, permission) from error

    def _put_arguments(self, key: str) -> dict[str, Any]:
        """Storage class, encryption and tagging shared by PutObject and CreateMultipartUpload."""
        arguments: dict[str, Any] = {}
        storage_class = "STANDARD" if is_manifest_key(key) else self.config.storage_class
        if storage_class != "STANDARD":  # the default; some S3-compatible services reject the header
            arguments["StorageClass"] = storage_class
        if self.config.sse != "none":
            arguments["ServerSideEncryption"] = self.config.sse
            if self.config.sse == "aws:kms" and self.config.kms_key_id:
                arguments["SSEKMSKeyId"] = self.config.kms_key_id
        lifecycle = self.config.lifecycle
        if lifecycle is not None and lifecycle.transition_days is not None:
            # The transition rule matches this tag, so manifests never move to an archive class.
            arguments["Tagging"] = f"{ROLE_TAG}={'manifest' if is_manifest_key(key) else 'artifact'}"
        return arguments

    def _warm_up(self, full: str) -> None:
        """Request an archive restore (or join one in progress) and wait until it is readable."""
        head = self.call("head_object", "read", full, "s3:GetObject", Key=full)
        storage_class = head.get("StorageClass", "GLACIER")
        request: RestoreRequestTypeDef = {"GlacierJobParameters": {"Tier": self.config.restore_tier}}
        if storage_class != "INTELLIGENT_TIERING":  # its archive tiers take no Days
            request["Days"] = self.config.restore_days
        try:
            self.client.restore_object(Bucket=self.bucket, Key=full, RestoreRequest=request)
        except Exception as error:
            if error_code(error) != "RestoreAlreadyInProgress":  # join a restore already running
                raise self.error(error, "restore", full, "s3:RestoreObject") from error
        interval, timeout = restore_poll_seconds(), restore_timeout(self.config)
        log.info(
            "s3://%s/%s is in %s: archive restore requested (tier %s, readable for %s days)",
            self.bucket,
            full,
            storage_class,
            self.config.restore_tier,
            self.config.restore_days,
        )
        started = time.monotonic()
        while True:
            head = self.call("head_object", "read", full, "s3:GetObject", Key=full)
            elapsed = time.monotonic() - started
            if 'ongoing-request="false"' in head.get("Restore", ""):
                log.info(
                    "s3://%s/%s: archive restore done after %s", self.bucket, full, humanize_seconds(elapsed)
                )
                return
            if elapsed >= timeout.total_seconds():
                raise TargetError(
                    f"target {self.name}: the archive restore of s3://{self.bucket}/{full} ({storage_class}, "
                    f"tier {self.config.restore_tier}) did not finish within {format_duration(timeout)}. "
                    "It keeps running in S3: run the same command again later (it waits for the restore "
                    "in progress), or raise `restore_timeout`, or use `restore_tier: Expedited`"
                )
            log.info(
                "s3://%s/%s: waiting for the %s archive restore (tier %s): %s elapsed, timeout %s",
                self.bucket,
                full,
                storage_class,
                self.config.restore_tier,
                humanize_seconds(elapsed),
                format_duration(timeout),
            )
            time.sleep(min(interval, max(timeout.total_seconds() - elapsed, 0.01)))

    def _versions(self, full: str) -> list[str]:
        """Version ids (delete markers included) of exactly `full`; 'null' on unversioned buckets."""
        versions: list[str] = []
        try:
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if item.get("Key") == full:
                        versions.append(item.get("VersionId") or "null")
        except Exception as error:
            raise self.error(error, "list the versions of", full, "s3:ListBucketVersions") from error
        return versions

    def _lock_of(self, full: str, version: str) -> tuple[datetime | None, str] | None:
        """(retain-until, mode) when retention or a legal hold protects the version, else None."""
        try:
            # HeadObject returns the version's retention (given s3:GetObjectRetention) and legal
            # hold; GetObjectRetention is the fallback for services that leave them out.
            head = self.client.head_object(Bucket=self.bucket, Key=full, VersionId=version)
        except Exception:
            return None
        until, mode = head.get("ObjectLockRetainUntilDate"), head.get("ObjectLockMode")
        if until is None:
            with suppress(Exception):
                found = self.client.get_object_retention(Bucket=self.bucket, Key=full, VersionId=version)
                until, mode = found["Retention"].get("RetainUntilDate"), found["Retention"].get("Mode")
        if until is not None and until.timestamp() > time.time():
            return until, str(mode or "retention")
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return None, "legal hold"
        return None


# --------------------------------------------------------------------------- streams
class _StreamingUpload(io.RawIOBase):
    """The sink `writer()` hands out: fills one part, uploads full parts in a bounded pool.

    Parts live in `max_concurrency` + 1 slots (s3_parts: a private spool file, or memory when
    the spool directory has no room): one being filled, the others in flight. A slot is filled
    again only once its part is uploaded. The first `SMALL_OBJECT` bytes stay in memory, so a
    manifest never touches the spool. Nothing is visible in the bucket before `commit()`;
    `abort()` discards the parts already uploaded.
    """

    def __init__(self, target: S3BlobTarget, key: str, put_arguments: dict[str, Any]) -> None:
        super().__init__()
        self._target = target
        self._key = key
        self._arguments = put_arguments
        self._part_size = target.config.part_size_mb * MiB
        self._concurrency = target.config.max_concurrency
        self._head = bytearray()  # until it outgrows SMALL_OBJECT; then the slots take over
        self._slots: PartSlots | None = None
        self._free: list[int] = []
        self._slot: int | None = None  # the slot being filled
        self._filled = 0
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: dict[Future[CompletedPartTypeDef], int] = {}  # part upload -> its slot
        self._parts: list[CompletedPartTypeDef] = []
        self._finished = False
        # Like s3transfer: with botocore's default "when_supported" checksums every part carries
        # a CRC32 that S3 verifies and CompleteMultipartUpload repeats.
        checksums = getattr(target.client.meta.config, "request_checksum_calculation", None)
        self._crc32 = checksums == "when_supported"

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        if self._finished:
            raise ValueError(f"the upload of {self._key} is already finished")
        view = memoryview(data).cast("B")
        if self._slots is None:
            if len(self._head) + len(view) <= SMALL_OBJECT:
                self._head += view
                return len(view)
            self._slots = open_part_slots(self._concurrency + 1, self._part_size)
            self._free = list(range(self._slots.count))
            log.debug("s3://%s/%s: parts kept in %s", self._target.bucket, self._key, self._slots.where)
            head, self._head = self._head, bytearray()
            self._fill(memoryview(head))
        self._fill(view)
        return len(view)

    def commit(self) -> None:
        """Make the object visible: one PutObject, or the last part and CompleteMultipartUpload."""
        self._finished = True
        if self._upload_id is None:
            body: bytes | PartBody = bytes(self._head)
            if self._slots is not None and self._slot is not None:
                body = PartBody(self._slots, self._slot, self._filled)
            self._target.call(
                "put_object", "upload", self._key, "s3:PutObject", Key=self._key, Body=body, **self._arguments
            )
            return
        if self._filled:
            self._send_part()
        for future in self._in_flight:
            self._parts.append(future.result())  # raises the first failed part's error
        self._in_flight = {}
        parts = sorted(self._parts, key=lambda part: part["PartNumber"])
        self._target.call(
            "complete_multipart_upload",
            "upload",
            self._key,
            "s3:PutObject",
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )
        self._upload_id = None

    def abort(self) -> None:
        """Discard everything: cancel queued parts, wait for running ones, abort the upload."""
        self._finished = True
        self._head = bytearray()
        for future in self._in_flight:
            future.cancel()
        wait(self._in_flight)
        self._in_flight = {}
        if self._upload_id is not None:
            try:
                self._target.call(
                    "abort_multipart_upload",
                    "abort",
                    self._key,
                    "s3:AbortMultipartUpload",
                    Key=self._key,
                    UploadId=self._upload_id,
                )
            except TargetError as error:  # keep the original error; the lifecycle rule cleans up
                log.warning("%s", error)
            self._upload_id = None

    def shutdown(self) -> None:
        """Stop the part threads (after commit or abort), then release the slots."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._slots is not None:
            self._slots.close()
            self._slots = None

    def _fill(self, view: memoryview) -> None:
        """Copy `view` into the slots, sending each part as it becomes full."""
        assert self._slots is not None
        offset = 0
        while offset < len(view):
            if self._slot is None:
                self._slot = self._take_slot()
                self._filled = 0
            chunk = view[offset : offset + self._part_size - self._filled]
            self._slots.write(self._slot, self._filled, chunk)
            self._filled += len(chunk)
            offset += len(chunk)
            if self._filled >= self._part_size:
                self._send_part()

    def _take_slot(self) -> int:
        """A free slot, waiting for a part upload to finish when all are in use; a failed part
        fails the write at once."""
        while not self._free:
            wait(self._in_flight, return_when=FIRST_COMPLETED)
            for future in [future for future in self._in_flight if future.done()]:
                slot = self._in_flight.pop(future)
                self._parts.append(future.result())
                self._free.append(slot)
        return self._free.pop()

    def _send_part(self) -> None:
        assert self._slots is not None and self._slot is not None
        if self._upload_id is None:
            arguments = dict(self._arguments, ChecksumAlgorithm="CRC32") if self._crc32 else self._arguments
            created = self._target.call(
                "create_multipart_upload", "upload", self._key, "s3:PutObject", Key=self._key, **arguments
            )
            self._upload_id = created["UploadId"]
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3-part")
        number = len(self._parts) + len(self._in_flight) + 1
        body = PartBody(self._slots, self._slot, self._filled)
        assert self._pool is not None
        self._in_flight[self._pool.submit(self._upload_part, number, body)] = self._slot
        self._slot, self._filled = None, 0

    def _upload_part(self, number: int, body: PartBody) -> CompletedPartTypeDef:
        extra: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if self._crc32 else {}
        response = self._target.call(
            "upload_part",
            "upload",
            self._key,
            "s3:PutObject",
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            **extra,
        )
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part


class _BodyStream(io.RawIOBase):
    """A GetObject StreamingBody as a raw stream; network errors become transient TargetErrors."""

    def __init__(self, target: S3BlobTarget, body: Any, key: str) -> None:
        super().__init__()
        self._target = target
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except Exception as error:
            raise self._target.error(error, "read", self._key, "s3:GetObject") from error
        view[: len(data)] = data
        return len(data)
