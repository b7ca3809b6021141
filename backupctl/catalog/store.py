"""Catalog access: open (and migrate), record runs, query snapshots.

The catalog is an index, not the truth: manifests on the targets are. A snapshot row becomes
'complete' only after every artifact and the manifest were stored and re-hashed on a target.
"""

from __future__ import annotations

import json
import os
import socket
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from backupctl.catalog import ledger
from backupctl.catalog.models import (
    ArchiveObservationRow,
    ArtifactRow,
    CopyRow,
    DrillRow,
    RunRecordRow,
    SnapshotRow,
    VerificationRow,
)
from backupctl.core.manifest import Manifest, parse_time
from backupctl.core.runner import pid_alive
from backupctl.core.secrets import mask, mask_url_password
from backupctl.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; a test checks it against Alembic's head. Knowing it lets every command
# skip importing Alembic (half a second) when the schema is already current.
HEAD_REVISION = "0005"
COMPLETE_STATES = ("complete", "partial")
# What a SnapshotView is made of, in this order (see Catalog._views).
_VIEW_COLUMNS = (
    SnapshotRow.id,
    SnapshotRow.policy,
    SnapshotRow.status,
    SnapshotRow.started_at,
    SnapshotRow.finished_at,
    SnapshotRow.host,
    SnapshotRow.plain_bytes,
    SnapshotRow.stored_bytes,
    SnapshotRow.error,
)


# Observations of an unchanged, healthy archive closer together than this are not recorded.
OBSERVATION_QUIET = timedelta(minutes=15)


@dataclass(frozen=True)
class ArchiveObservation:
    """What one reading of a PITR source's archive found (see ArchiveObservationRow).

    newest_at: the newest archived point (None: nothing archived); restorable_from: the finish
    of the oldest kept base backup / dump the chain starts at; continuous: no hole from there to
    the newest point (in every archive target); via: the command that read the archive.
    """

    policy: str
    source: str
    archive: str
    via: str
    observed_at: datetime
    newest_at: datetime | None
    restorable_from: datetime | None
    continuous: bool
    problems: tuple[str, ...] = ()


def _same_state(previous: ArchiveObservationRow, new: ArchiveObservation, quiet: timedelta) -> bool:
    def utc(moment: datetime | None) -> datetime | None:
        return None if moment is None else (moment if moment.tzinfo else moment.replace(tzinfo=UTC))

    return (
        not previous.problems
        and not new.problems
        and previous.continuous == new.continuous
        and utc(previous.restorable_from) == utc(new.restorable_from)
        and timedelta(0) <= new.observed_at - (utc(previous.observed_at) or new.observed_at) < quiet
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass
class SnapshotView:
    """A read-only snapshot summary for commands and reports."""

    id: str
    policy: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    host: str
    plain_bytes: int
    stored_bytes: int
    targets: dict[str, str]  # target -> copy status
    sources: list[str]
    error: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "policy": self.policy,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "host": self.host,
            "plain_bytes": self.plain_bytes,
            "stored_bytes": self.stored_bytes,
            "targets": self.targets,
            "sources": self.sources,
            "error": self.error,
        }


@dataclass(frozen=True)
class CopyState:
    """What one target holds of one snapshot (a row of `copies`)."""

    snapshot_id: str
    target: str
    status: str
    stored_bytes: int = 0
    error: str | None = None


def _record_copies(session: Session, copies: Sequence[CopyState]) -> None:
    """Insert or update `copies` in the session's transaction: existing rows change with one
    UPDATE per 500 copies of the same state (prune records thousands at once)."""
    states: dict[tuple[str, str, int, str | None], list[str]] = {}
    for copy in copies:
        key = (copy.target, copy.status, copy.stored_bytes, copy.error)
        states.setdefault(key, []).append(copy.snapshot_id)
    now = _now()
    for (target, status, stored_bytes, error), ids in states.items():
        for chunk in _chunks(ids):
            of_chunk = (CopyRow.target == target, CopyRow.snapshot_id.in_(chunk))
            existing = set(session.scalars(select(CopyRow.snapshot_id).where(*of_chunk)))
            if existing:
                changed = dict(status=status, stored_bytes=stored_bytes, error=error, updated_at=now)
                session.execute(update(CopyRow).where(*of_chunk).values(**changed))
            session.add_all(
                CopyRow(snapshot_id=snapshot_id, target=target, status=status,
                        stored_bytes=stored_bytes, error=error, updated_at=now)
                for snapshot_id in dict.fromkeys(chunk) if snapshot_id not in existing
            )  # fmt: skip
    chain = ledger.appender(session)
    for copy in copies:
        payload = ledger.copy_payload(copy.__dict__)
        chain.append("copy", ledger.copy_subject(copy.snapshot_id, copy.target), payload, now)


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Close the pooled connections when the catalog goes away or, at the latest, at exit:
        # a PostgreSQL catalog then sees a clean disconnect, SQLite checkpoints its WAL.
        weakref.finalize(self, engine.dispose)

    @classmethod
    def open(cls, url: str) -> Catalog:
        """Open the catalog at a SQLAlchemy URL, creating/migrating its schema."""
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is what we ship
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            engine = create_engine(url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise ConfigError(f"cannot use catalog URL {mask_url_password(url)}: {error}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        catalog = cls(engine)
        catalog.migrate()
        return catalog

    def migrate(self) -> None:
        if self.revision() == HEAD_REVISION:
            return
        if self.engine.dialect.name == "sqlite" and self._create_sqlite():
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as error:
            raise ConfigError(
                f"cannot open the catalog ({self.engine.url!r}): {mask(str(error.orig))}"
            ) from None

    def _create_sqlite(self) -> bool:
        """A SQLite catalog without any table gets the head schema from `sqlite_schema` in one
        transaction, without importing Alembic (~11 MiB of a first backup's peak RSS). False
        when the file has tables (older revisions migrate through Alembic) or another process
        created them first."""
        import sqlite3

        from backupctl.catalog.sqlite_schema import REVISION, STATEMENTS

        try:
            connection = self.engine.raw_connection()
        except OperationalError as error:
            raise ConfigError(
                f"cannot open the catalog ({self.engine.url!r}): {mask(str(error.orig))}"
            ) from None
        try:
            cursor = connection.cursor()
            try:
                # IMMEDIATE: the write lock now, so two first commands cannot both create it.
                cursor.execute("BEGIN IMMEDIATE")
                if cursor.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    connection.rollback()
                    return False
                for statement in STATEMENTS:
                    cursor.execute(statement)
                cursor.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (REVISION,))
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                cursor.close()
        except sqlite3.Error as error:  # (the DB-API's own: not wrapped by SQLAlchemy here)
            raise ConfigError(f"cannot open the catalog ({self.engine.url!r}): {mask(str(error))}") from None
        finally:
            connection.close()
        return True

    def revision(self) -> str | None:
        """The schema revision recorded in the database, None when it has none yet."""
        try:
            with self.engine.connect() as connection:
                row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        except SQLAlchemyError:
            return None
        return str(row[0]) if row else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # ------------------------------------------------------------------ recording a run
    def begin_snapshot(self, snapshot_id: str, policy: str, policy_sha256: str, started_at: datetime) -> None:
        with self.session() as session:
            row = SnapshotRow(
                id=snapshot_id,
                policy=policy,
                status="running",
                started_at=started_at,
                host=socket.gethostname(),
                pid=os.getpid(),
                policy_sha256=policy_sha256,
                plain_bytes=0,
                stored_bytes=0,
            )
            session.add(row)
            ledger.appender(session).append("snapshot", snapshot_id, ledger.snapshot_payload(row))

    def record_copy(
        self, snapshot_id: str, target: str, status: str, stored_bytes: int = 0, error: str | None = None
    ) -> None:
        self.record_copies([CopyState(snapshot_id, target, status, stored_bytes, error)])

    def record_copies(self, copies: Sequence[CopyState]) -> None:
        """Record several copies in one transaction (prune: one commit per target, not per
        snapshot)."""
        with self.session() as session:
            _record_copies(session, copies)

    def finish_snapshot(
        self,
        manifest: Manifest,
        manifest_sha256: str,
        status: str,
        error: str | None = None,
        copies: Sequence[CopyState] = (),
    ) -> None:
        """Record the artifacts, the copies per target and the final status (complete /
        partial) in one transaction: a crash never leaves copies without their snapshot's
        status (and one commit is one fsync less at the end of every backup)."""
        with self.session() as session:
            row = session.get(SnapshotRow, manifest.snapshot_id)
            if row is None:
                raise RuntimeError(f"snapshot {manifest.snapshot_id} was never begun")
            _record_copies(session, copies)
            _apply_manifest(session, row, manifest)
            row.status = status
            row.finished_at = _now()
            row.manifest_sha256 = manifest_sha256
            row.error = error
            ledger.appender(session).append("snapshot", row.id, ledger.snapshot_payload(row))

    def mark_complete_if_everywhere(self, snapshot_id: str, targets: list[str]) -> None:
        """A partial snapshot becomes complete once every target holds a complete copy."""
        with self.session() as session:
            row = session.get(SnapshotRow, snapshot_id)
            if row is None or row.status != "partial":
                return
            held = {copy.target for copy in row.copies if copy.status == "complete"}
            if set(targets) <= held:
                row.status = "complete"
                row.error = None
                ledger.appender(session).append("snapshot", row.id, ledger.snapshot_payload(row))

    def fail_snapshot(self, snapshot_id: str, error: str) -> None:
        with self.session() as session:
            row = session.get(SnapshotRow, snapshot_id)
            if row is not None:
                row.status = "failed"
                row.finished_at = _now()
                row.error = error
                ledger.appender(session).append("snapshot", row.id, ledger.snapshot_payload(row))

    def mark_interrupted(self, policy: str) -> list[str]:
        """Runs left 'running' by a process of this host that no longer exists become 'failed'."""
        host = socket.gethostname()
        changed: list[str] = []
        with self.session() as session:
            rows = session.scalars(
                select(SnapshotRow).where(SnapshotRow.policy == policy, SnapshotRow.status == "running")
            ).all()
            for row in rows:
                if row.host == host and row.pid is not None and pid_alive(row.pid) is False:
                    row.status = "failed"
                    row.finished_at = _now()
                    row.error = "interrupted: the backup process died before finishing"
                    changed.append(row.id)
                    ledger.appender(session).append("snapshot", row.id, ledger.snapshot_payload(row))
        return changed

    def record_verification(self, snapshot_id: str, target: str, ok: bool, problems: list[str]) -> None:
        with self.session() as session:
            row = VerificationRow(snapshot_id=snapshot_id, target=target, at=_now(), ok=ok, problems=problems)
            session.add(row)
            session.flush()  # assigns the id the ledger records
            ledger.appender(session).append("verification", str(row.id), ledger.verification_payload(row))

    def record_observation(self, what: str, subject: str, payload: dict[str, object]) -> None:
        """Append an observation to the run ledger (e.g. what `status` saw of a policy's
        3-2-1-1-0 rule), so that the evidence of a period shows what was observed then."""
        with self.session() as session:
            ledger.appender(session).append("observation", f"{what}:{subject}", payload)

    def record_archive_observation(
        self, observation: ArchiveObservation, *, quiet_interval: timedelta = OBSERVATION_QUIET
    ) -> bool:
        """Append what a command saw of a point-in-time archive (and its `pitr` ledger record).

        Skipped (False) when the previous observation of the same source is younger than
        `quiet_interval`, saw the same continuity and start, and neither has a problem: a status
        timer every minute would otherwise add half a million rows a year per source, while the
        evidence needs the changes and a steady cadence.
        """
        with self.session() as session:
            previous = session.execute(
                select(ArchiveObservationRow)
                .where(
                    ArchiveObservationRow.policy == observation.policy,
                    ArchiveObservationRow.source == observation.source,
                )
                .order_by(ArchiveObservationRow.observed_at.desc(), ArchiveObservationRow.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if previous is not None and _same_state(previous, observation, quiet_interval):
                return False
            row = ArchiveObservationRow(
                policy=observation.policy,
                source=observation.source,
                archive=observation.archive,
                host=socket.gethostname(),
                via=observation.via[:32],
                observed_at=observation.observed_at,
                newest_at=observation.newest_at,
                restorable_from=observation.restorable_from,
                continuous=observation.continuous,
                problems=list(observation.problems),
            )
            session.add(row)
            session.flush()  # assigns the id the ledger records
            ledger.appender(session).append(
                "pitr", str(row.id), ledger.archive_observation_payload(row), at=observation.observed_at
            )
            return True

    def import_manifest(self, manifest: Manifest, manifest_sha256: str, target: str) -> bool:
        """Insert (or complete) a snapshot from a target's manifest. True when something changed."""
        with self.session() as session:
            row = session.get(SnapshotRow, manifest.snapshot_id)
            created = row is None
            if row is None:
                row = SnapshotRow(
                    id=manifest.snapshot_id,
                    policy=manifest.policy,
                    started_at=parse_time(manifest.started_at),
                    host=manifest.host,
                    pid=None,
                    policy_sha256=manifest.policy_sha256,
                )
                session.add(row)
            if row.status not in COMPLETE_STATES:
                row.status = "complete"
                row.finished_at = parse_time(manifest.finished_at)
                row.manifest_sha256 = manifest_sha256
                row.error = None
                _apply_manifest(session, row, manifest)
                ledger.appender(session).append("snapshot", row.id, ledger.snapshot_payload(row))
                created = True
            copy = session.get(CopyRow, (manifest.snapshot_id, target))
            if copy is None or copy.status != "complete":
                if copy is None:
                    copy = CopyRow(snapshot_id=manifest.snapshot_id, target=target)
                    session.add(copy)
                copy.status = "complete"
                copy.stored_bytes = manifest.stored_bytes
                copy.error = None
                copy.updated_at = _now()
                payload = ledger.copy_payload(copy)
                subject = ledger.copy_subject(copy.snapshot_id, target)
                ledger.appender(session).append("copy", subject, payload)
                created = True
            return created

    # ------------------------------------------------------------------ queries
    def snapshots(self, policy: str, *, include_incomplete: bool = False) -> list[SnapshotView]:
        """Snapshots of a policy, newest first."""
        return self._views(policy, include_incomplete=include_incomplete)

    def resolve(self, policy: str, reference: str) -> SnapshotView:
        """`latest`, a full id, or a unique id prefix → a complete snapshot. Raises ConfigError."""
        if reference == "latest":
            candidates = self._views(policy, limit=1)
        else:
            candidates = [
                view for view in self._views(policy, id_prefix=reference) if view.id.startswith(reference)
            ]  # LIKE ignores case in SQLite; ids are compared exactly, as before
        if not candidates and not self._views(policy, limit=1):
            raise ConfigError(
                f"policy '{policy}' has no complete snapshot in the catalog "
                "(run `backupctl backup` or `backupctl catalog rebuild --target NAME`)"
            )
        if reference == "latest":
            return candidates[0]
        matches = [view for view in candidates if view.id == reference] or candidates
        if len(matches) == 1:
            return matches[0]
        if not matches:
            with self.session() as session:
                row = session.get(SnapshotRow, reference)
                if row is not None:
                    raise ConfigError(
                        f"snapshot {reference} is {row.status}, not complete: {row.error or ''}".strip()
                    )
            raise ConfigError(f"policy '{policy}' has no snapshot '{reference}'")
        raise ConfigError(f"'{reference}' matches {len(matches)} snapshots; give more of the id")

    def complete_copies(self, policy: str) -> list[tuple[str, datetime, str]]:
        """(snapshot id, started at, target) of every complete copy of the policy's complete or
        partial snapshots, newest snapshot first: what retention plans from (one query)."""
        query = (
            select(SnapshotRow.id, SnapshotRow.started_at, CopyRow.target)
            .join(CopyRow, CopyRow.snapshot_id == SnapshotRow.id)
            .where(
                SnapshotRow.policy == policy,
                SnapshotRow.status.in_(COMPLETE_STATES),
                CopyRow.status == "complete",
            )
            .order_by(SnapshotRow.started_at.desc(), SnapshotRow.id.desc(), CopyRow.target)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [(str(row[0]), _utc(row[1]), str(row[2])) for row in rows]

    def unfinished_runs(self, policy: str) -> dict[str, dict[str, str]]:
        """Snapshot id -> {target: copy status} of the policy's runs that are `failed` or still
        `running`, oldest first: what the sweep of dead runs (backupctl.actions.sweep) looks
        at. Two flat queries, the snapshots and their copies."""
        query = (
            select(SnapshotRow.id)
            .where(SnapshotRow.policy == policy, SnapshotRow.status.in_(("failed", "running")))
            .order_by(SnapshotRow.started_at, SnapshotRow.id)
        )
        with self.engine.connect() as connection:
            runs: dict[str, dict[str, str]] = {str(row[0]): {} for row in connection.execute(query)}
            for chunk in _chunks(list(runs)):
                copies = connection.execute(
                    select(CopyRow.snapshot_id, CopyRow.target, CopyRow.status).where(
                        CopyRow.snapshot_id.in_(chunk)
                    )
                )
                for snapshot_id, target, status in copies:
                    runs[snapshot_id][target] = status
        return runs

    def _views(
        self,
        policy: str,
        *,
        include_incomplete: bool = False,
        id_prefix: str | None = None,
        limit: int | None = None,
    ) -> list[SnapshotView]:
        """Views of a policy's snapshots, newest first, from flat column queries.

        One query for the snapshots, then their copies and artifact sources by id in chunks:
        no ORM objects, and the artifacts' facts (JSON) are never read. Copies are ordered by
        target and sources by name, as SQLite's primary-key order always returned them.
        """
        query = (
            select(*_VIEW_COLUMNS)
            .where(SnapshotRow.policy == policy)
            .order_by(SnapshotRow.started_at.desc(), SnapshotRow.id.desc())
        )
        if not include_incomplete:
            query = query.where(SnapshotRow.status.in_(COMPLETE_STATES))
        if id_prefix is not None:
            query = query.where(SnapshotRow.id.startswith(id_prefix, autoescape=True))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
            ids = [str(row[0]) for row in rows]
            targets: dict[str, dict[str, str]] = {snapshot_id: {} for snapshot_id in ids}
            sources: dict[str, list[str]] = {snapshot_id: [] for snapshot_id in ids}
            for chunk in _chunks(ids):
                copies = connection.execute(
                    select(CopyRow.snapshot_id, CopyRow.target, CopyRow.status)
                    .where(CopyRow.snapshot_id.in_(chunk))
                    .order_by(CopyRow.snapshot_id, CopyRow.target)
                )
                for snapshot_id, target, status in copies:
                    targets[snapshot_id][target] = status
                artifacts = connection.execute(
                    select(ArtifactRow.snapshot_id, ArtifactRow.source)
                    .where(ArtifactRow.snapshot_id.in_(chunk))
                    .order_by(ArtifactRow.snapshot_id, ArtifactRow.source)
                )
                for snapshot_id, source in artifacts:
                    sources[snapshot_id].append(source)
        return [
            SnapshotView(
                id=row[0],
                policy=row[1],
                status=row[2],
                started_at=_utc(row[3]),
                finished_at=_aware(row[4]),
                host=row[5],
                plain_bytes=row[6],
                stored_bytes=row[7],
                targets=targets[row[0]],
                sources=sources[row[0]],
                error=row[8],
            )
            for row in rows
        ]

    def last_verification(self, policy: str) -> tuple[datetime, bool, str, str] | None:
        """(at, ok, target, snapshot id) of the newest verification of any snapshot of a policy."""
        with self.session() as session:
            verification = VerificationRow
            columns = (verification.at, verification.ok, verification.target, verification.snapshot_id)
            row = session.execute(
                select(*columns)
                .join(SnapshotRow, SnapshotRow.id == VerificationRow.snapshot_id)
                .where(SnapshotRow.policy == policy)
                .order_by(VerificationRow.at.desc(), VerificationRow.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        at = _aware(row[0])
        assert at is not None
        return at, bool(row[1]), str(row[2]), str(row[3])

    def last_reads(self, policy: str) -> dict[tuple[str, str], datetime]:
        """(snapshot id, target) -> when a verify last read that copy, for the policy's copies
        that were ever verified (ok or not): what a sampled verify rotates by."""
        query = (
            select(VerificationRow.snapshot_id, VerificationRow.target, func.max(VerificationRow.at))
            .join(SnapshotRow, SnapshotRow.id == VerificationRow.snapshot_id)
            .where(SnapshotRow.policy == policy)
            .group_by(VerificationRow.snapshot_id, VerificationRow.target)
        )
        with self.engine.connect() as connection:
            return {(str(row[0]), str(row[1])): _utc(row[2]) for row in connection.execute(query)}

    def last_observation(self, what: str, subject: str) -> dict[str, Any] | None:
        """The payload of the newest `record_observation(what, subject, ...)`, None if none."""
        query = (
            select(RunRecordRow.payload)
            .where(RunRecordRow.kind == "observation", RunRecordRow.subject == f"{what}:{subject}")
            .order_by(RunRecordRow.seq.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            payload = connection.execute(query).scalar()
        return None if payload is None else cast(dict[str, Any], json.loads(payload))

    def verifications(self, snapshot_id: str) -> list[VerificationRow]:
        with self.session() as session:
            return list(
                session.scalars(select(VerificationRow).where(VerificationRow.snapshot_id == snapshot_id))
            )


def _apply_manifest(session: Session, row: SnapshotRow, manifest: Manifest) -> None:
    row.plain_bytes = manifest.plain_bytes
    row.stored_bytes = manifest.stored_bytes
    existing = {artifact.source for artifact in row.artifacts}
    for artifact in manifest.artifacts:
        if artifact.source in existing:
            continue
        row.artifacts.append(
            ArtifactRow(
                source=artifact.source,
                source_type=artifact.source_type,
                file=artifact.file,
                format=artifact.format,
                plain_bytes=artifact.plain_bytes,
                stored_bytes=artifact.stored_bytes,
                plain_digest=artifact.plain_digest,
                stored_sha256=artifact.stored_sha256,
                facts=artifact.facts,
            )
        )


def _utc(value: datetime) -> datetime:
    aware = _aware(value)
    assert aware is not None
    return aware


def _chunks(ids: list[str], size: int = 500) -> Iterator[list[str]]:
    """Slices of at most `size` ids: bound parameters per statement stay well under every limit."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def record_drill(catalog: Catalog, row: DrillRow) -> None:
    with catalog.session() as session:
        merged = session.merge(row)
        ledger.appender(session).append("drill", merged.id, ledger.drill_payload(merged))


def drill_history(catalog: Catalog, policy: str | None = None, limit: int = 200) -> list[DrillRow]:
    """Drills, newest first (optionally of one policy)."""
    with catalog.session() as session:
        query = select(DrillRow).order_by(DrillRow.finished_at.desc()).limit(limit)
        if policy:
            query = query.where(DrillRow.policy == policy)
        rows = list(session.scalars(query))
        for row in rows:
            row.started_at = _aware(row.started_at) or row.started_at
            row.finished_at = _aware(row.finished_at) or row.finished_at
        return rows
