"""The audit's direct canonical JSON of snapshot and copy rows equals the dict path (issue #14).

Rows are written to and read back from a real SQLite catalog, with the values that differ in
JSON: quotes, backslashes, control characters, non-ASCII text, NULLs, big integers.
"""

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from backupctl.catalog.ledger import (
    canonical,
    copy_payload,
    current_payloads,
    snapshot_payload,
)
from backupctl.catalog.models import CopyRow, SnapshotRow
from backupctl.catalog.store import Catalog

ODD = 'quote " backslash \\ tab \t newline \n bell \x07 café 東京 😀 </script>'


def test_direct_canonical_equals_the_dict_path(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path}/catalog.sqlite")
    started = datetime(2026, 7, 1, 2, 3, 4, 567890, tzinfo=UTC)
    snapshots = [
        dict(id="s1", policy="shop", status="complete", started_at=started, finished_at=started,
             host="db1", pid=1, policy_sha256="a" * 64, manifest_sha256="b" * 64,
             plain_bytes=2**40 + 3, stored_bytes=12, error=None),
        dict(id="s2", policy=ODD, status="failed", started_at=started, finished_at=None,
             host=ODD, pid=None, policy_sha256=None, manifest_sha256=None, plain_bytes=0,
             stored_bytes=0, error=ODD),
    ]  # fmt: skip
    copies = [
        dict(snapshot_id="s1", target="nas", status="complete", stored_bytes=2**33, error=None,
             updated_at=started),
        dict(snapshot_id="s2", target=ODD, status="failed", stored_bytes=0, error=ODD,
             updated_at=started),
    ]  # fmt: skip
    with catalog.engine.begin() as connection:
        connection.execute(insert(SnapshotRow), snapshots)
        connection.execute(insert(CopyRow), copies)
    with catalog.engine.connect() as connection:
        expected = {
            ("snapshot", str(row["id"])): canonical(snapshot_payload(row))
            for row in connection.execute(select(SnapshotRow.__table__)).mappings()
        }
        expected |= {
            ("copy", f"{row['snapshot_id']}/{row['target']}"): canonical(copy_payload(row))
            for row in connection.execute(select(CopyRow.__table__)).mappings()
        }
        found = {(kind, subject): payload for kind, subject, payload in current_payloads(connection)}
    assert found == expected
    assert len(found) == 4


def test_audit_writes_the_segment_lines_of_segment_line(tmp_path: Path) -> None:
    """The ledger.jsonl lines `audit` writes directly equal segment_line (json.dumps of the record,
    sorted keys), odd values included; only the records after `since`."""
    import io

    from sqlalchemy.orm import Session

    from backupctl.catalog.ledger import Segment, appender, audit, iter_ledger, segment_line

    catalog = Catalog.open(f"sqlite:///{tmp_path}/catalog.sqlite")
    with Session(catalog.engine) as session, session.begin():
        for index, subject in enumerate(["a", ODD, "c"]):
            appender(session).append("observation", subject, {"n": index, "odd": ODD})
    stream = io.StringIO()
    with catalog.engine.connect() as connection:
        segment = Segment(1, "anchor", stream)
        result = audit(connection, segment)
        expected = "".join(segment_line(record) for record in iter_ledger(connection, 1))
    assert result.ok and result.records == 3
    assert stream.getvalue() == expected and expected.count("\n") == 2
    assert (segment.head_seq, segment.count, segment.head) == (3, 2, result.head)
