"""PostgreSQL base backups for point-in-time recovery: `pg_basebackup -Ft -X none -D -`
streamed through zstd → age into every WAL target, with a signed manifest.

Layout: `<policy>/pitr/<source>/base/<base-id>/{base.tar.zst.age, manifest.json, manifest.json.sig}`.
The manifest (`backupctl-pitr-base`, version 1) holds the start/stop LSN, timeline, the first and
last WAL segment the backup needs, the plain digest (BLAKE3) and the stored sha256. It is written
last and only once every segment from start to stop is archived: a base backup without its
manifest is incomplete and is never used (nor listed).
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from backupctl import __version__
from backupctl.core import runner
from backupctl.core.crypto import SigningKey, verify_signature
from backupctl.core.manifest import new_snapshot_id
from backupctl.core.pipeline import encrypt_stream
from backupctl.errors import IntegrityError, JobFailed, SourceError
from backupctl.pitr.archive import SegmentArchive, SegmentRecord
from backupctl.pitr.postgres_wal import format_lsn, parse_lsn, parse_wal_name, segment_name, segment_of_lsn

BASE_FORMAT = "backupctl-pitr-base"
BASE_VERSION = 1
BASE_DIR = "base/"
DATA_FILE = "base.tar.zst.age"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"


@dataclass(frozen=True)
class BaseBackup:
    base_id: str
    policy: str
    source: str
    started_at: str
    finished_at: str
    start_lsn: str
    stop_lsn: str
    timeline: int
    start_segment: str
    stop_segment: str
    plain_bytes: int
    plain_digest: str
    stored_bytes: int
    stored_sha256: str
    host: str
    file: str = DATA_FILE
    backupctl_version: str = __version__
    format: str = BASE_FORMAT
    version: int = BASE_VERSION

    @property
    def finished_time(self) -> datetime:
        return datetime.fromisoformat(self.finished_at)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> BaseBackup:
        try:
            raw = json.loads(data)
            if raw.get("format") != BASE_FORMAT or raw.get("version") != BASE_VERSION:
                raise ValueError("unknown base backup manifest format")
            return cls(**raw)
        except (ValueError, TypeError) as error:
            raise IntegrityError(f"base backup manifest is malformed: {error}") from None


def base_key(archive: SegmentArchive, base_id: str, file: str) -> str:
    return f"{archive.prefix}{BASE_DIR}{base_id}/{file}"


class _Tee(io.RawIOBase):
    """Writes every chunk to several sinks (one writer per WAL target)."""

    def __init__(self, sinks: Sequence[BinaryIO]) -> None:
        self._sinks = sinks

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        for sink in self._sinks:
            sink.write(data)
        return len(data)


def take_base_backup(
    archives: Sequence[SegmentArchive],
    signing_key: SigningKey,
    recipients: list[Any],
    *,
    url: str,
    password: str | None,
    pg_basebackup: str,
    host: str,
    wal_wait_seconds: float = 300.0,
    progress: Callable[[int], None] | None = None,
) -> BaseBackup:
    """Run pg_basebackup into every archive's target; wait until the WAL it needs is archived
    there; then write the signed manifest (the base backup is complete from that moment).

    Raises SourceError (pg_basebackup failed), JobFailed (its WAL was not archived in time: the
    base backup stays incomplete), TargetError.
    """
    base_id = new_snapshot_id()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    argv = [
        pg_basebackup,
        "-d",
        url,
        "-D",
        "-",
        "-F",
        "tar",
        "-X",
        "none",
        "-c",
        "fast",
        "-v",
        "--no-manifest",
        "-l",
        f"backupctl {base_id}",
    ]
    process = runner.start(argv, env={"PGPASSWORD": password} if password else None)
    runner.widen_pipe(process.stdout)
    stderr_lines: list[bytes] = []
    assert process.stderr is not None and process.stdout is not None
    err_pipe = process.stderr
    drain = threading.Thread(target=lambda: stderr_lines.extend(err_pipe), daemon=True)
    drain.start()
    try:
        with ExitStack() as stack:
            sinks = [stack.enter_context(a.target.writer(base_key(a, base_id, DATA_FILE))) for a in archives]
            stats = encrypt_stream(process.stdout, _Tee(sinks), recipients, progress=progress)  # type: ignore[arg-type]
            status = process.wait()
            drain.join()
            if status != 0:
                raise SourceError(
                    f"pg_basebackup exited with status {status}: {runner.last_lines(b''.join(stderr_lines))}"
                )
    finally:
        runner.stop(process)
    # -X none: pg_basebackup does not print the WAL range; the server archives a backup history
    # file (`<segment>.<offset>.backup`) with our label, start and stop location once the WAL
    # the backup needs is archived (pg_backup_stop waits for that). Its record carries them.
    label = _wait_for_backup_file(archives, f"backupctl {base_id}", wal_wait_seconds)
    timeline = int(label.meta.get("start_timeline") or label.meta.get("timeline") or 1)
    start_lsn, stop_lsn = parse_lsn(str(label.meta["start_lsn"])), parse_lsn(str(label.meta["stop_lsn"]))
    first, last = segment_of_lsn(timeline, start_lsn), segment_of_lsn(timeline, stop_lsn)
    backup = BaseBackup(
        base_id=base_id,
        policy=archives[0].policy,
        source=archives[0].source,
        started_at=started,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        start_lsn=format_lsn(start_lsn),
        stop_lsn=format_lsn(stop_lsn),
        timeline=timeline,
        start_segment=first,
        stop_segment=last,
        plain_bytes=stats.plain_bytes,
        plain_digest=stats.plain_digest,
        stored_bytes=stats.stored_bytes,
        stored_sha256=stats.stored_sha256,
        host=host,
    )
    _wait_for_wal(archives, backup, wal_wait_seconds)
    body = backup.to_bytes()
    for archive in archives:
        with archive.target.writer(base_key(archive, base_id, SIGNATURE)) as out:
            out.write(signing_key.sign(body))
        with archive.target.writer(base_key(archive, base_id, MANIFEST)) as out:
            out.write(body)  # last: its presence marks the base backup complete on this target
    return backup


def _wait_for_backup_file(archives: Sequence[SegmentArchive], label: str, seconds: float) -> SegmentRecord:
    """The record of the backup history file labelled `label` (archived on the first target)."""
    deadline = time.monotonic() + seconds
    seen: set[str] = set()
    while True:
        for name in archives[0].list_names():
            if not name.endswith(".backup") or name in seen:
                continue
            seen.add(name)
            record = archives[0].read_record(name, trusted=None)
            if record is not None and record.meta.get("label") == label:
                return record
        if time.monotonic() > deadline:
            raise JobFailed(
                f"the backup history file of '{label}' was not archived within {seconds:.0f}s: the base "
                "backup is incomplete. Check archive_command and `backupctl doctor`"
            )
        time.sleep(0.3)


def needed_segments(backup: BaseBackup) -> list[str]:
    first, last = parse_wal_name(backup.start_segment).segno, parse_wal_name(backup.stop_segment).segno
    assert first is not None and last is not None
    return [segment_name(backup.timeline, segno) for segno in range(first, last + 1)]


def _wait_for_wal(archives: Sequence[SegmentArchive], backup: BaseBackup, seconds: float) -> None:
    """Until every segment start..stop is archived on every target (the server archives the
    stop segment right after pg_basebackup ends: pg_backup_stop switches to a new segment)."""
    deadline = time.monotonic() + seconds
    needed = set(needed_segments(backup))
    while True:
        missing = {a.target.name: sorted(needed - set(a.list_names())) for a in archives}
        if not any(missing.values()):
            return
        if time.monotonic() > deadline:
            shown = "; ".join(f"{t}: {', '.join(m)}" for t, m in missing.items() if m)
            raise JobFailed(
                f"base backup {backup.base_id} is incomplete: the WAL it needs was not archived within "
                f"{seconds:.0f}s ({shown}). Check archive_command and `backupctl doctor`"
            )
        time.sleep(0.5)


def list_base_backups(archive: SegmentArchive, trusted: list[str] | None) -> list[BaseBackup]:
    """Complete base backups on the archive's target (signed manifest present), oldest first."""
    base = archive.prefix + BASE_DIR
    ids = sorted(
        {
            info.key[len(base) :].split("/")[0]
            for info in archive.target.list_keys(base)
            if info.key.endswith("/" + MANIFEST)
        }
    )
    backups = []
    for base_id in ids:
        with archive.target.reader(base_key(archive, base_id, MANIFEST)) as handle:
            body = handle.read()
        if trusted is not None:
            with archive.target.reader(base_key(archive, base_id, SIGNATURE)) as handle:
                signature = handle.read()
            try:
                verify_signature(body, signature, trusted)
            except IntegrityError as error:
                raise IntegrityError(f"base backup {base_id} on {archive.target.name}: {error}") from None
        backups.append(BaseBackup.from_bytes(body))
    return backups


def delete_base_backup(archive: SegmentArchive, base_id: str) -> None:
    """Manifest first (it stops counting as complete), then the rest. RetainedByLock propagates."""
    for file in (MANIFEST, SIGNATURE, DATA_FILE):
        archive.target.delete(base_key(archive, base_id, file))


def run_pg_basebackup_check(pg_basebackup: str) -> None:
    """Raise ConfigError when pg_basebackup is not runnable."""
    try:
        subprocess.run([pg_basebackup, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        raise JobFailed(f"{pg_basebackup} is not runnable: {error}") from None
