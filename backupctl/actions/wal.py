"""WAL archiving actions: `wal push` (archive_command), `wal fetch` (restore_command), the
archives of a PITR source, and `wal verify`.

`wal push` runs as PostgreSQL's archive_command, once per finished segment, as the server's
system user: it reads only the policy, the recipients (public) and this host's signing key; it
never opens the catalog. Its exit status is PostgreSQL's contract (docs/pitr.md):
0 only when the segment is durable on every WAL target; 1 on any failure, including SIGTERM /
SIGINT (never >= 128, which would kill the archiver); identical re-push 0; different content 1
with a loud error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.core.crypto import load_signing_key, parse_recipients
from backupctl.errors import ConfigError, IntegrityError, JobFailed, TargetError
from backupctl.pitr.archive import PushResult, SegmentArchive, SegmentMissing, SegmentRecord, push_to_all
from backupctl.pitr.chain import ChainReport, check_chain
from backupctl.pitr.postgres_wal import WalRules, lineage, parse_wal_name, segment_name, wal_meta
from backupctl.policy.schema import Policy, PostgresPitr, PostgresSource
from backupctl.settings import Settings
from backupctl.targets.base import build_target
from backupctl.targets.registry import holds_blobs

log = logging.getLogger(__name__)
RULES = WalRules()


def pitr_source(policy: Policy, source_name: str) -> tuple[PostgresSource, PostgresPitr]:
    """The postgres source `source_name` and its `pitr:` block; ConfigError when it has none."""
    source = policy.source(source_name)
    if not isinstance(source, PostgresSource) or source.pitr is None:
        raise ConfigError(
            f"source '{source_name}' of policy '{policy.name}' has no point-in-time recovery: "
            "add a 'pitr:' block to the postgres source (docs/pitr.md)"
        )
    return source, source.pitr


def wal_target_names(policy: Policy, source: PostgresSource) -> list[str]:
    """The blob targets of the WAL archive: `pitr.targets`, else the source's blob targets."""
    assert source.pitr is not None
    names = source.pitr.targets
    if names is None:
        names = [t.name for t in policy.targets_for(source) if holds_blobs(t.type)]
    if not names:
        raise ConfigError(f"source '{source.name}' has no blob target for its WAL archive")
    for name in names:
        if not holds_blobs(policy.target(name).type):
            raise ConfigError(
                f"target '{name}' is not a blob target (e.g. a restic repository): "
                "WAL goes to blob targets only"
            )
    return names


def open_archives(
    settings: Settings, policy: Policy, source_name: str, *, for_push: bool = False
) -> list[SegmentArchive]:
    """One SegmentArchive per WAL target, in policy order (with keys to push when `for_push`)."""
    source, _ = pitr_source(policy, source_name)
    recipients: list[Any] = []
    signing = None
    if for_push:
        recipients = parse_recipients(policy.encryption.recipients)
        signing = load_signing_key(settings.keys_dir)
    return [
        SegmentArchive(
            build_target(policy.target(name)),
            policy.name,
            source.name,
            recipients=recipients,
            signing_key=signing,
            location=target_location(policy.target(name)),
        )
        for name in wal_target_names(policy, source)
    ]


def target_location(config: Any) -> str:
    """A digest of where a target's configuration points (`hex`): its whole configuration, with a
    relative local path made absolute, so that a target repointed under the same name (new path,
    bucket, prefix, host) has another location. Secrets are references in the configuration, and
    only their digest is kept."""
    import json

    from backupctl.core.digests import digest_of
    from backupctl.targets.registry import traits_of

    data = config.model_dump(mode="json")
    field = traits_of(config).host_path_field
    if field and isinstance(data.get(field), str):
        data[field] = os.path.abspath(os.path.expanduser(data[field]))
    return digest_of(json.dumps(data, sort_keys=True).encode()).partition(":")[2]


def close_all(archives: Sequence[SegmentArchive]) -> None:
    for archive in archives:
        try:
            archive.target.close()
        except Exception:  # closing is best effort
            log.debug("closing %s failed", archive.target.name, exc_info=True)


# --------------------------------------------------------------------------- push
def push_wal(
    settings: Settings, policy: Policy, source_name: str, path: Path, name: str | None
) -> list[PushResult]:
    """Archive one file PostgreSQL hands to archive_command (%p, %f). Durable when it returns.

    Raises SegmentConflict / ArchiveIdentityMismatch (another server's WAL), TargetError,
    ConfigError (a name that is no WAL file, missing keys), JobFailed (interrupted).
    """
    name = name or path.name
    if not path.is_file():
        raise JobFailed(f"{path} does not exist (archive_command gets %p relative to the data directory)")
    archives = open_archives(settings, policy, source_name, for_push=True)
    try:
        try:
            return push_opened(settings, archives, path, name)
        except KeyboardInterrupt:
            # SIGTERM/SIGINT: the target's writer discarded the partial object; exit 1, never
            # >= 128 (PostgreSQL's archiver dies silently on a signal exit)
            raise JobFailed(
                f"interrupted while archiving {name}: nothing partial is visible; PostgreSQL retries it"
            ) from None
    finally:
        close_all(archives)


def push_opened(
    settings: Settings, archives: Sequence[SegmentArchive], path: Path, name: str
) -> list[PushResult]:
    """The push itself, into archives opened `for_push`: shared by `wal push` and the
    asynchronous archiver (actions.wal_archiver), so both apply the same rules (identity,
    identical/different content, durable on every target when it returns)."""
    kind, meta, sysid = wal_meta(path, name)
    if sysid is not None:
        for archive in archives:
            _claim_cached(settings, archive, str(sysid))
    return push_to_all(archives, path, name, kind, meta)


def _claim_cached(settings: Settings, archive: SegmentArchive, sysid: str) -> None:
    """claim_identity once per archive *location*: a small marker in the state dir saves one read
    per push. The marker is keyed on the target's location (actions.wal.target_location), not on
    its name: a target repointed under the same name (new path, bucket, prefix) is claimed again,
    so another cluster's archive there is detected (ArchiveIdentityMismatch)."""
    if not archive.location:  # where the target points is not known: claim (one read) every time
        archive.claim_identity(sysid, description="system identifier")
        return
    marker = settings.state_dir / "pitr" / f"{archive.policy}.{archive.source}.{archive.location[:32]}.sysid"
    try:
        if marker.read_text().strip() == sysid:
            return
    except OSError:
        pass
    archive.claim_identity(sysid, description="system identifier")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(sysid + "\n")
    except OSError:
        pass  # a state dir the server's user cannot write: the check just costs a read each time


# --------------------------------------------------------------------------- fetch
@dataclass
class FetchResult:
    name: str
    target: str
    from_spool: bool
    prefetched: list[str] = field(default_factory=list)


def fetch_wal(
    settings: Settings,
    policy: Policy,
    source_name: str,
    name: str,
    destination: Path,
    identities: list[Any],
    trusted: list[str],
    *,
    prefetch: int | None = None,
    spool: Path | None = None,
) -> FetchResult:
    """Restore one WAL file PostgreSQL asks restore_command for (%f into %p), and prefetch the
    next segments of the same timeline in parallel into `spool`, each checked against its signed
    digest before it is kept. Raises SegmentMissing when no target has it (PostgreSQL then ends
    recovery or tries another timeline), IntegrityError when a copy is damaged."""
    _, pitr = pitr_source(policy, source_name)
    depth = prefetch if prefetch is not None else pitr.prefetch
    if spool is not None:
        cached = spool / name
        if cached.is_file():
            os.replace(cached, destination)
            return FetchResult(name, "spool", from_spool=True)
    archives = open_archives(settings, policy, source_name)
    try:
        parsed = parse_wal_name(name)
        wanted = [name]
        if spool is not None and parsed.kind == "wal" and depth > 1 and _usable_spool(spool):
            assert parsed.segno is not None
            available = set(archives[0].list_names())
            for ahead in range(1, depth):
                next_name = segment_name(parsed.timeline, parsed.segno + ahead)
                if next_name in available and not (spool / next_name).exists():
                    wanted.append(next_name)
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            futures = {
                item: pool.submit(
                    _fetch_any,
                    archives,
                    item,
                    destination if item == name else spool / item,  # type: ignore[operator]
                    identities,
                    trusted,
                )
                for item in wanted
            }
            target = futures[name].result()
            prefetched = []
            for item, future in futures.items():
                if item != name and future.exception() is None:
                    prefetched.append(item)
        return FetchResult(name, target, from_spool=False, prefetched=prefetched)
    finally:
        close_all(archives)


def _usable_spool(spool: Path) -> bool:
    """Create the prefetch directory; False (no prefetch, the fetch itself still works) when it
    cannot be created, e.g. restore_command run by hand in a read-only directory."""
    try:
        spool.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.info("no prefetch: cannot create %s: %s", spool, error.strerror)
        return False
    return True


def _fetch_any(
    archives: Sequence[SegmentArchive],
    name: str,
    destination: Path,
    identities: list[Any],
    trusted: list[str],
) -> str:
    """Fetch from the first archive that has a good copy; the target's name."""
    errors: list[Exception] = []
    for archive in archives:
        try:
            archive.fetch_to(name, destination, identities, trusted)
            return archive.target.name
        except (IntegrityError, TargetError) as error:  # SegmentMissing is an IntegrityError
            errors.append(error)  # another target may hold a good copy
    others = [e for e in errors if not isinstance(e, SegmentMissing)]
    if not others:
        raise SegmentMissing(name, f"{name} is not archived on any WAL target")
    raise others[0]


# --------------------------------------------------------------------------- verify
@dataclass
class WalVerifyReport:
    policy: str
    source: str
    targets: dict[str, ChainReport]
    start: str | None  # first segment the oldest retained base backup needs

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.targets.values()) and bool(self.targets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "start": self.start,
            "ok": self.ok,
            "targets": {name: report.as_dict() for name, report in self.targets.items()},
        }


def verify_wal(
    settings: Settings, policy: Policy, source_name: str, trusted: list[str], start: str | None = None
) -> WalVerifyReport:
    """Check the chain on every WAL target from `start` (default: the oldest base backup's first
    segment, else the oldest archived) to the newest segment; every gap named. Signatures of
    every record are checked (IntegrityError on a forged one)."""
    from backupctl.pitr.postgres_base import list_base_backups

    archives = open_archives(settings, policy, source_name)
    reports: dict[str, ChainReport] = {}
    try:
        for archive in archives:
            records = archive.list_records(trusted)
            first = start
            if first is None:
                bases = list_base_backups(archive, trusted)
                first = bases[0].start_segment if bases else None
            reports[archive.target.name] = check_chain(lineage(records), RULES, start=first)
    finally:
        close_all(archives)
    return WalVerifyReport(policy.name, source_name, reports, start)


def records_of(archive: SegmentArchive, trusted: list[str]) -> list[SegmentRecord]:
    return archive.list_records(trusted)
