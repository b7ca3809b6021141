"""The append-only, hash-chained record of every run (issue #14).

Every change the catalog makes to a run record (a snapshot, a copy of it on a target, a verify
run, a drill, a status observation, an observation of a point-in-time archive: kind `pitr`)
also appends one `run_records` row holding the new state of that record as canonical JSON.
Row `n` carries `prev_hash` (row `n-1`'s hash) and
`hash = sha256(prev_hash "\n" seq "\n" at "\n" host "\n" kind "\n" subject "\n" trigger "\n" payload)`,
so editing or deleting a past ledger row breaks the chain, and editing or deleting a snapshot,
copy, verification, drill or archive observation row makes it disagree with its newest ledger
row: both are found by `audit` (at export) and by `backupctl evidence verify`.

One chain per catalog (a fleet sharing a PostgreSQL catalog shares it): appends are serialised by
a transaction-scoped advisory lock on PostgreSQL, and by SQLite's single writer (the appender
writes before it reads the tail, so it already holds the write lock).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection, MetaData, Table, func, insert, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from backupctl.catalog.digest_index import DigestIndex
from backupctl.catalog.models import (
    ArchiveObservationRow,
    CopyRow,
    DrillRow,
    RunRecordRow,
    SnapshotRow,
    VerificationRow,
)

GENESIS = "0" * 64
# Any fixed 64-bit number: the key of the PostgreSQL advisory lock that serialises appends.
_PG_LOCK_KEY = 0x6261636B75706374
KINDS = ("snapshot", "copy", "verification", "drill", "observation", "pitr")


# One encoder, built once: json.dumps with options builds a new one per call (a third of the
# audit's time over 500k payloads, measured with cProfile in the evidence benchmark).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> str:
    """The one serialization that is hashed: sorted keys, no spaces, UTF-8 kept as is."""
    return _CANONICAL.encode(value)


def stamp(moment: datetime | None) -> str | None:
    """A UTC time as fixed-width ISO text (sorts as it compares); SQLite hands back naive UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(
    prev_hash: str, seq: int, at: str, host: str, kind: str, subject: str, trigger: str, payload: str
) -> str:
    """The hash of one ledger row (documented in docs/evidence.md; verify.py recomputes it)."""
    data = "\n".join([prev_hash, str(seq), at, host, kind, subject, trigger, payload])
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def detect_trigger() -> str:
    """Who or what started this process: `BACKUPCTL_TRIGGER` when set, systemd (a unit's
    `INVOCATION_ID`), cron (the parent process), a terminal user, else `non-interactive:USER`."""
    explicit = os.environ.get("BACKUPCTL_TRIGGER")
    if explicit:
        return explicit[:120]
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.geteuid())
    if os.environ.get("INVOCATION_ID"):
        return f"systemd:{user}"
    parent = _parent_name()
    if "cron" in parent:
        return f"cron:{user}"
    if sys.stdin is not None and sys.stdin.isatty():
        return f"terminal:{user}"
    return f"non-interactive:{user}" + (f" ({parent})" if parent else "")


def _parent_name() -> str:
    try:
        return Path(f"/proc/{os.getppid()}/comm").read_text().strip()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- payloads
def snapshot_payload(row: Any) -> dict[str, Any]:
    get = _getter(row)
    return {
        "id": get("id"),
        "policy": get("policy"),
        "status": get("status"),
        "started_at": stamp(get("started_at")),
        "finished_at": stamp(get("finished_at")),
        "host": get("host"),
        "policy_sha256": get("policy_sha256"),
        "manifest_sha256": get("manifest_sha256"),
        "plain_bytes": int(get("plain_bytes") or 0),
        "stored_bytes": int(get("stored_bytes") or 0),
        "error": get("error"),
    }


def copy_payload(row: Any) -> dict[str, Any]:
    get = _getter(row)
    return {
        "snapshot_id": get("snapshot_id"),
        "target": get("target"),
        "status": get("status"),
        "stored_bytes": int(get("stored_bytes") or 0),
        "error": get("error"),
    }


def verification_payload(row: Any) -> dict[str, Any]:
    get = _getter(row)
    return {
        "id": int(get("id")),
        "snapshot_id": get("snapshot_id"),
        "target": get("target"),
        "at": stamp(get("at")),
        "ok": bool(get("ok")),
        "problems": list(get("problems") or []),
    }


def archive_observation_payload(row: Any) -> dict[str, Any]:
    get = _getter(row)
    return {
        "id": int(get("id")),
        "policy": get("policy"),
        "source": get("source"),
        "archive": get("archive"),
        "host": get("host"),
        "via": get("via"),
        "observed_at": stamp(get("observed_at")),
        "newest_at": stamp(get("newest_at")),
        "restorable_from": stamp(get("restorable_from")),
        "continuous": bool(get("continuous")),
        "problems": list(get("problems") or []),
    }


DRILL_FIELDS = (
    "id",
    "policy",
    "drill",
    "snapshot_id",
    "target",
    "runtime",
    "ok",
    "reason",
    "rto_seconds",
    "rto_objective_seconds",
    "rpo_seconds",
    "rpo_objective_seconds",
    "stages",
    "checks",
    "report_paths",
)


def drill_payload(row: Any) -> dict[str, Any]:
    get = _getter(row)
    payload = {name: get(name) for name in DRILL_FIELDS}
    payload["ok"] = bool(payload["ok"])
    payload["started_at"] = stamp(get("started_at"))
    payload["finished_at"] = stamp(get("finished_at"))
    # Through JSON and back: what the database returns from a JSON column compares equal.
    result: dict[str, Any] = json.loads(canonical(payload))
    return result


def _getter(row: object) -> Any:
    if isinstance(row, Mapping):
        return row.get
    return lambda name: getattr(row, name)


def copy_subject(snapshot_id: str, target: str) -> str:
    return f"{snapshot_id}/{target}"


# ----------------------------------------------------------------------------- appending
@dataclass
class _Tail:
    seq: int
    hash: str


class Appender:
    """Appends ledger rows within one session's transaction (one tail read per transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.host = socket.gethostname()
        self.trigger = detect_trigger()
        self._tail: _Tail | None = None

    def append(self, kind: str, subject: str, payload: Mapping[str, Any], at: datetime | None = None) -> str:
        """Append one record; returns its hash."""
        tail = self._tail or self._read_tail()
        seq = tail.seq + 1
        when = stamp(at or datetime.now(UTC))
        assert when is not None
        body = canonical(payload)
        digest = record_hash(tail.hash, seq, when, self.host, kind, subject, self.trigger, body)
        self.session.add(
            RunRecordRow(
                seq=seq,
                at=when,
                host=self.host,
                kind=kind,
                subject=subject[:200],
                trigger=self.trigger,
                payload=body,
                prev_hash=tail.hash,
                hash=digest,
            )
        )
        self._tail = _Tail(seq, digest)
        return digest

    def _read_tail(self) -> _Tail:
        # Write first, then read the tail: the rows of this transaction go out with the flush,
        # which on SQLite takes the database's write lock, so no other writer can append
        # between our read and our insert. PostgreSQL serialises on an advisory lock.
        self.session.flush()
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        else:
            self.session.execute(text("UPDATE run_records SET seq = seq WHERE 1 = 0"))
        row = self.session.execute(
            select(RunRecordRow.seq, RunRecordRow.hash).order_by(RunRecordRow.seq.desc()).limit(1)
        ).first()
        return _Tail(0, GENESIS) if row is None else _Tail(int(row[0]), str(row[1]))


def appender(session: Session) -> Appender:
    """The session's appender (created on first use, kept in `session.info`)."""
    found = session.info.get("ledger")
    if not isinstance(found, Appender):
        found = Appender(session)
        session.info["ledger"] = found
    return found


# ----------------------------------------------------------------------------- auditing
@dataclass(frozen=True)
class LedgerRecord:
    seq: int
    at: str
    host: str
    kind: str
    subject: str
    trigger: str
    payload: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "host": self.host,
            "kind": self.kind,
            "subject": self.subject,
            "trigger": self.trigger,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload)
        return value


@dataclass
class Audit:
    """What `audit` found: chain breaks and records that disagree with the ledger."""

    records: int = 0
    head: str = GENESIS
    head_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def chain_problems(records: Iterable[LedgerRecord], start_prev: str | None = None) -> Iterator[str]:
    """Breaks in a run of consecutive ledger records: a gap in seq, a prev_hash that is not the
    previous row's hash, or a hash that does not match the row's content."""
    previous: LedgerRecord | None = None
    for record in records:
        expected_prev = previous.hash if previous else start_prev
        if previous is not None and record.seq != previous.seq + 1:
            yield f"ledger: records {previous.seq + 1}..{record.seq - 1} are missing (deleted)"
        elif expected_prev is not None and record.prev_hash != expected_prev:
            yield f"ledger: record {record.seq} does not follow record {record.seq - 1} (prev_hash differs)"
        actual = record_hash(
            record.prev_hash,
            record.seq,
            record.at,
            record.host,
            record.kind,
            record.subject,
            record.trigger,
            record.payload,
        )
        if actual != record.hash:
            yield f"ledger: record {record.seq} ({record.kind} {record.subject}) was edited (hash differs)"
        previous = record


def iter_ledger(connection: Connection, since_seq: int = 0) -> Iterator[LedgerRecord]:
    """Ledger rows after `since_seq`, oldest first, streamed."""
    columns = (
        RunRecordRow.seq, RunRecordRow.at, RunRecordRow.host, RunRecordRow.kind, RunRecordRow.subject,
        RunRecordRow.trigger, RunRecordRow.payload, RunRecordRow.prev_hash, RunRecordRow.hash,
    )  # fmt: skip
    query = select(*columns).where(RunRecordRow.seq > since_seq).order_by(RunRecordRow.seq)
    for r in connection.execution_options(yield_per=5000).execute(query):
        yield LedgerRecord(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])


def read_ledger(connection: Connection, since_seq: int = 0) -> list[LedgerRecord]:
    return list(iter_ledger(connection, since_seq))


def _key(kind: str, subject: str) -> int:
    """A 64-bit key for (kind, subject): the audit of a 400k-record ledger keeps ints, not strings.
    Python's own (keyed SipHash) string hash: the keys live in one process only, and it costs a
    third of a BLAKE2b digest per record (evidence benchmark)."""
    return hash((kind, subject))


def _digest(payload: str) -> int:
    return hash(payload)


# The canonical JSON of the two big tables written directly, keys in sorted order: building a
# dict and encoding it cost 2.8 s for 350k rows (evidence benchmark). Equal to
# canonical(snapshot_payload(row)) / canonical(copy_payload(row)): tests/unit/test_ledger_canonical.py
_SNAPSHOT_COLUMNS = (
    "error", "finished_at", "host", "id", "manifest_sha256", "plain_bytes", "policy",
    "policy_sha256", "started_at", "status", "stored_bytes",
)  # fmt: skip
_COPY_COLUMNS = ("error", "snapshot_id", "status", "stored_bytes", "target")


def _text(value: Any) -> str:
    """A JSON string or null, as the canonical encoder writes it (UTF-8 kept as is)."""
    return "null" if value is None else encode_basestring(str(value))


def stored_stamp(value: datetime | str | None) -> str | None:
    """stamp() of a DateTime column read without SQLAlchemy's type processing: SQLite hands back
    the stored text, `YYYY-MM-DD HH:MM:SS.ffffff` (naive UTC, as SQLAlchemy always writes it),
    other databases a datetime. Parsing that text into a datetime and formatting it back cost
    ~1.5 s of the audit's 355k rows (evidence benchmark); the same text is cut and pasted."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " " and value[19] == ".":
            return f"{value[:10]}T{value[11:]}Z"
        return stamp(datetime.fromisoformat(value))
    return stamp(value)


def snapshot_canonical(row: Sequence[Any]) -> str:
    """canonical(snapshot_payload(...)) of a row of _SNAPSHOT_COLUMNS, without the dict (the
    two times as a datetime or as the text SQLite stores, see stored_stamp)."""
    error, finished, host, ident, manifest, plain, policy, policy_sha, started, status, stored = row
    return (
        f'{{"error":{_text(error)},"finished_at":{_text(stored_stamp(finished))},"host":{_text(host)},'
        f'"id":{_text(ident)},"manifest_sha256":{_text(manifest)},"plain_bytes":{int(plain or 0)},'
        f'"policy":{_text(policy)},"policy_sha256":{_text(policy_sha)},'
        f'"started_at":{_text(stored_stamp(started))},"status":{_text(status)},'
        f'"stored_bytes":{int(stored or 0)}}}'
    )


def copy_canonical(row: Sequence[Any]) -> str:
    """canonical(copy_payload(...)) of a row of _COPY_COLUMNS, without the dict."""
    error, snapshot_id, status, stored, target = row
    return (
        f'{{"error":{_text(error)},"snapshot_id":{_text(snapshot_id)},"status":{_text(status)},'
        f'"stored_bytes":{int(stored or 0)},"target":{_text(target)}}}'
    )


def current_payloads(connection: Connection) -> Iterator[tuple[str, str, str]]:
    """(kind, subject, canonical payload) of every snapshot, copy, verification and drill row
    now in the catalog, streamed."""
    streamed = connection.execution_options(yield_per=5000)
    # Driver rows: the two times as the stored text on SQLite, see stored_stamp.
    snapshot_columns = [SnapshotRow.__table__.c[name] for name in _SNAPSHOT_COLUMNS]
    for values in raw_rows(connection, select(*snapshot_columns)):
        yield "snapshot", str(values[3]), snapshot_canonical(values)
    for values in raw_rows(connection, select(*(CopyRow.__table__.c[name] for name in _COPY_COLUMNS))):
        yield "copy", copy_subject(str(values[1]), str(values[4])), copy_canonical(values)
    for row in streamed.execute(select(VerificationRow.__table__)).mappings():
        yield "verification", str(row["id"]), canonical(verification_payload(row))
    for row in streamed.execute(select(DrillRow.__table__)).mappings():
        yield "drill", str(row["id"]), canonical(drill_payload(row))
    for row in streamed.execute(select(ArchiveObservationRow.__table__)).mappings():
        yield "pitr", str(row["id"]), canonical(archive_observation_payload(row))


_ascii = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

# A ledger record as one line of an evidence bundle's ledger.jsonl: json.dumps(as_dict(),
# sort_keys=True), with the encoder built once (a new one per call cost 1.5 s over the 180k
# records of a segment, cProfile, evidence benchmark).
_SEGMENT_LINE = json.JSONEncoder(sort_keys=True)


def segment_line(record: LedgerRecord) -> str:
    """The line of ledger.jsonl holding `record` (with its newline). `audit` writes the same
    line without the dict (tests/unit/test_ledger_canonical.py compares them)."""
    return _SEGMENT_LINE.encode(record.as_dict()) + "\n"


def raw_rows(connection: Connection, query: ClauseElement) -> Iterator[tuple[Any, ...]]:
    """The rows of `query` as the database driver returns them (plain tuples, no type
    processing: SQLite's DateTime as its stored text), streamed 5000 at a time: a server-side
    cursor on PostgreSQL. SQLAlchemy's Row per row cost ~1.5 s of the audit of a 355k-record
    ledger (evidence benchmark)."""
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    driver = connection.connection.dbapi_connection
    assert driver is not None
    if connection.dialect.name == "postgresql":
        cursor = driver.cursor(name=f"backupctl_{os.getpid()}_{next(_CURSORS)}")
    else:
        cursor = driver.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(5000):
            yield from rows
    finally:
        cursor.close()


_CURSORS = itertools.count()


@dataclass
class Segment:
    """The records after `since` written to `stream` while auditing (one pass over the ledger
    for both: the bundle's segment is exactly what the audit checked). After the audit: the
    last record written (`head_seq`, `head`: `since` and `anchor` when none) and `count`."""

    since: int
    anchor: str | None
    stream: TextIO
    head_seq: int = 0
    head: str = GENESIS
    count: int = 0


def audit(connection: Connection, segment: Segment | None = None) -> Audit:
    """Check the whole chain and every record against its newest ledger row; with `segment`,
    also write the records after `segment.since` to its stream (ledger.jsonl).

    Streams the ledger and the tables; what it keeps is one pair of 64-bit digests per record,
    packed (DigestIndex: ~9 MB for a 355k-record ledger, where a dict of ints held ~49 MB).
    """
    result = Audit()
    since = segment.since if segment is not None else 0
    if segment is not None:
        segment.head_seq, segment.head, segment.count = segment.since, segment.anchor or GENESIS, 0
    # key of (kind, subject) -> digest of its newest payload, sized once from the last seq (a
    # growing table re-inserts every slot in Python at each doubling).
    last_seq = connection.execute(select(func.max(RunRecordRow.seq))).scalar()
    newest = DigestIndex(int(last_seq or 0))
    put = newest.put
    # The chain check of chain_problems, inlined over raw rows: no LedgerRecord per row (the
    # audit of a 355k-record ledger went from 4 s to about 1 s, evidence benchmark).
    sha256 = hashlib.sha256
    expected_seq, expected_prev = 1, GENESIS
    columns = (
        RunRecordRow.seq, RunRecordRow.at, RunRecordRow.host, RunRecordRow.kind, RunRecordRow.subject,
        RunRecordRow.trigger, RunRecordRow.payload, RunRecordRow.prev_hash, RunRecordRow.hash,
    )  # fmt: skip
    query = select(*columns).order_by(RunRecordRow.seq)
    records, written = 0, 0
    write = segment.stream.write if segment is not None else None
    problems = result.problems
    for seq, at, host, kind, subject, trigger, payload, prev_hash, stored in raw_rows(connection, query):
        seq = int(seq)
        records += 1
        if records == 1 and (seq != 1 or prev_hash != GENESIS):
            problems.append(f"ledger: records 1..{seq - 1} are missing (deleted)")
        elif seq != expected_seq:
            problems.append(f"ledger: records {expected_seq}..{seq - 1} are missing (deleted)")
        elif prev_hash != expected_prev:
            problems.append(f"ledger: record {seq} does not follow record {seq - 1} (prev_hash differs)")
        data = f"{prev_hash}\n{seq}\n{at}\n{host}\n{kind}\n{subject}\n{trigger}\n{payload}"  # record_hash
        if sha256(data.encode("utf-8")).hexdigest() != stored:
            problems.append(f"ledger: record {seq} ({kind} {subject}) was edited (hash differs)")
        if kind != "observation":
            put(hash((kind, subject)), hash(payload))  # _key, _digest inlined
        if write is not None and seq > since:
            write(
                f'{{"at": {_ascii(at)}, "hash": {_ascii(stored)}, "host": {_ascii(host)}, '
                f'"kind": {_ascii(kind)}, "payload": {_ascii(payload)}, "prev_hash": {_ascii(prev_hash)}, '
                f'"seq": {seq}, "subject": {_ascii(subject)}, "trigger": {_ascii(trigger)}}}\n'
            )
            written += 1
        expected_seq, expected_prev = seq + 1, stored
    result.records = records
    if records:
        result.head, result.head_seq = expected_prev, expected_seq - 1
    if segment is not None and written:
        segment.head_seq, segment.head, segment.count = expected_seq - 1, expected_prev, written
    for kind, subject, payload in current_payloads(connection):
        recorded = newest.pop(_key(kind, subject))
        if recorded is None:
            result.problems.append(
                f"catalog: {kind} {subject} is not in the ledger (inserted behind its back)"
            )
        elif recorded != _digest(payload):
            result.problems.append(f"catalog: {kind} {subject} was edited after it was recorded")
    if newest:  # records the ledger has and the catalog lost: find their names (rare: a second pass)
        lost = set(newest.remaining())
        named: dict[int, str] = {}  # in ledger order of each key's first record, as the dict was
        for record in iter_ledger(connection):
            key = _key(record.kind, record.subject)
            if key in lost and record.kind != "observation":
                named.setdefault(key, f"{record.kind} {record.subject}")
        result.problems += [f"catalog: {name} was deleted from the catalog" for name in named.values()]
    return result


def backfill(connection: Connection) -> int:
    """Append a record for every snapshot, copy, verification and drill row that exists (the
    0004 migration: catalogs made before the ledger). Returns how many were appended."""
    # Reflected, not the models: a later migration may add columns the database does not have
    # yet when this one runs.
    metadata = MetaData()
    table = {
        name: Table(name, metadata, autoload_with=connection)
        for name in ("snapshots", "snapshot_copies", "verifications", "drills", "run_records")
    }
    entries: list[tuple[str, str, str, str]] = []  # (at, kind, subject, payload)
    for row in connection.execute(select(table["snapshots"])).mappings():
        at = stamp(row["finished_at"] or row["started_at"]) or ""
        entries.append((at, "snapshot", str(row["id"]), canonical(snapshot_payload(row))))
    for row in connection.execute(select(table["snapshot_copies"])).mappings():
        subject = copy_subject(str(row["snapshot_id"]), str(row["target"]))
        entries.append((stamp(row["updated_at"]) or "", "copy", subject, canonical(copy_payload(row))))
    for row in connection.execute(select(table["verifications"])).mappings():
        payload = verification_payload(row)
        entries.append((stamp(row["at"]) or "", "verification", str(row["id"]), canonical(payload)))
    for row in connection.execute(select(table["drills"])).mappings():
        entries.append(
            (stamp(row["finished_at"]) or "", "drill", str(row["id"]), canonical(drill_payload(row)))
        )
    kind_order = {kind: index for index, kind in enumerate(KINDS)}
    entries.sort(key=lambda entry: (entry[0], kind_order[entry[1]], entry[2]))
    host, prev = socket.gethostname(), GENESIS
    rows = []
    for seq, (at, kind, subject, body) in enumerate(entries, start=1):
        digest = record_hash(prev, seq, at, host, kind, subject, "migration-0004", body)
        rows.append(
            dict(
                seq=seq,
                at=at,
                host=host,
                kind=kind,
                subject=subject,
                trigger="migration-0004",
                payload=body,
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    if rows:
        connection.execute(insert(table["run_records"]), rows)
    return len(rows)
