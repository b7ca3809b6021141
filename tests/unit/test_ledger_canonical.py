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
