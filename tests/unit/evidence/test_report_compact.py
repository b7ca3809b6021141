"""The compact layout of the evidence PDF (a fleet): every control's status with its number of
exceptions, the exceptions summed up per control, and where every one of them is."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from backupctl.evidence.report_html import render


def _document() -> dict[str, Any]:
    controls = [
        {"policy": f"app-{p}", "control": c, "status": s, "summary": "why", "measured": {}}
        for p in range(3)
        for c, s in (("backups-scheduled", "NON_COMPLIANT"), ("encryption", "COMPLIANT"))
    ]
    exceptions = [
        {
            "policy": f"app-{p}",
            "control": "backups-scheduled",
            "status": "NON_COMPLIANT",
            "detail": f"missed {n}",
        }
        for p in range(3)
        for n in range(p + 1)
    ]
    return {
        "period": {"label": "2026Q3", "start": "2026-07-01", "end": "2026-10-01"},
        "generated_at": "2026-12-07T00:00:00+00:00",
        "generator": {"host": "h", "backupctl_version": "0"},
        "hosts": ["h"],
        "controls": controls,
        "exceptions": exceptions,
        "runs": [],
        "drills": [],
        "storage": {"app-0": {"nas": 2048}},
        "policies": [],
        "ledger": {"records": 1, "head_seq": 1, "head": "0" * 64, "problems": []},
    }


def test_compact_layout_counts_every_exception_and_names_the_list() -> None:
    html = render(_document(), "Backup evidence", compact=True, exceptions_sha256="ab" * 32)
    text = unescape(re.sub(r"<[^>]+>", " ", html))
    for policy, count in (("app-0", 1), ("app-1", 2), ("app-2", 3)):
        # the matrix row: the policy, its statuses, the number of exceptions of the failing one
        row = re.search(rf"{policy}\s+NON_COMPLIANT\s+\({count}\)\s+COMPLIANT", text)
        assert row, (policy, text)
    assert re.search(r"backups-scheduled\s+3\s+6\s+app-0: missed 0", text), text
    assert "Every one of the 6 exceptions" in text and "ab" * 32 in text
    assert "2.00 KiB" in text  # storage per target in the compact layout
