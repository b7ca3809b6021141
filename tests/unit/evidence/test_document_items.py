"""evidence.json is read back one list item at a time (evidence verify), in either layout."""

from __future__ import annotations

import json
from pathlib import Path

from backupctl.evidence.bundle import read_document_items, write_document

DOCUMENT = {
    "controls": [{"control": "x", "status": "COMPLIANT"}],
    "empty": [],
    "runs": [{"id": "r1", "status": "complete", "error": "a\nb ], {"}, {"id": "r2", "status": "failed"}],
    "version": 1,
}


def test_items_of_the_streamed_layout(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    with path.open("w") as stream:
        write_document(DOCUMENT, stream)
    assert json.loads(path.read_text()) == DOCUMENT
    assert list(read_document_items(path, "runs")) == DOCUMENT["runs"]
    assert list(read_document_items(path, "controls")) == DOCUMENT["controls"]
    assert list(read_document_items(path, "empty")) == []
    assert list(read_document_items(path, "missing")) == []


def test_items_of_another_layout_parse_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(DOCUMENT, indent=1))
    assert list(read_document_items(path, "runs")) == DOCUMENT["runs"]
