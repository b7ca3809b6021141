"""SQLAlchemy 2.x models of the catalog. Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class SnapshotRow(Base):
    """One backup run of a policy. `status` is 'complete' only after every artifact and the
    manifest are stored and re-hashed on at least one target (`partial`: some targets failed)."""

    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    policy: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | complete | partial | failed
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    plain_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    copies: Mapped[list[CopyRow]] = relationship(back_populates="snapshot", cascade="all, delete-orphan")
    artifacts: Mapped[list[ArtifactRow]] = relationship(
        back_populates="snapshot", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_snapshots_policy_status_started", "policy", "status", "started_at"),)


class CopyRow(Base):
    """A snapshot's presence on one target."""

    __tablename__ = "snapshot_copies"

    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # complete | failed | deleted
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    snapshot: Mapped[SnapshotRow] = relationship(back_populates="copies")


class ArtifactRow(Base):
    __tablename__ = "artifacts"

    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_type: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    plain_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    plain_digest: Mapped[str] = mapped_column(String(80))  # algorithm:hex
    stored_sha256: Mapped[str] = mapped_column(String(64))
    facts: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)

    snapshot: Mapped[SnapshotRow] = relationship(back_populates="artifacts")


class VerificationRow(Base):
    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)


class DrillRow(Base):
    """One restore drill: which snapshot, from where, pass/fail, measured RTO/RPO, every check."""

    __tablename__ = "drills"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the run id
    policy: Mapped[str] = mapped_column(String(64), index=True)
    drill: Mapped[str] = mapped_column(String(64))
    snapshot_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    runtime: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    rto_seconds: Mapped[float | None] = mapped_column(nullable=True)
    rto_objective_seconds: Mapped[float | None] = mapped_column(nullable=True)
    rpo_seconds: Mapped[float | None] = mapped_column(nullable=True)
    rpo_objective_seconds: Mapped[float | None] = mapped_column(nullable=True)
    stages: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    checks: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    report_paths: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class RunRecordRow(Base):
    """One append-only, hash-chained ledger row: the new state of a run record (see
    backupctl.catalog.ledger). Never updated or deleted by backupctl."""

    __tablename__ = "run_records"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32), index=True)  # UTC, fixed-width ISO text
    host: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # snapshot | copy | verification | drill | observation
    subject: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(160))
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (Index("ix_run_records_kind_subject", "kind", "subject"),)


class ArchiveObservationRow(Base):
    """What a command that reads a source's point-in-time archive (WAL, binlogs) saw of it: the
    newest archived point, and whether the chain is continuous from the oldest kept base backup
    or dump (`restorable_from`). Evidence computes a PITR source's achieved RPO from these rows
    (`wal push` never writes the catalog). Append-only, mirrored in the run ledger (kind `pitr`)."""

    __tablename__ = "archive_observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    archive: Mapped[str] = mapped_column(String(16))  # WAL | binlogs
    host: Mapped[str] = mapped_column(String(255))
    via: Mapped[str] = mapped_column(String(32))  # the command that read the archive
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    newest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    restorable_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    continuous: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)

    __table_args__ = (Index("ix_archive_observations_source", "policy", "source", "observed_at"),)
