"""copy_artifact between two local targets reports the bytes it copies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from backupctl.errors import IntegrityError
from backupctl.policy.schema import LocalTarget
from backupctl.targets.base import BlobTarget, build_target
from backupctl.targets.snapshot_files import copy_artifact


def local(path: Path, name: str) -> BlobTarget:
    return build_target(LocalTarget.model_validate({"name": name, "type": "local", "path": str(path)}))


def test_copy_reports_progress_up_to_the_stored_size(tmp_path: Path) -> None:
    origin, destination = local(tmp_path / "a", "a"), local(tmp_path / "b", "b")
    data = os.urandom(3 * (1 << 20) + 123)
    with origin.writer("p/s1/db.pgdump.zst.age") as sink:
        sink.write(data)
    seen: list[int] = []
    copy_artifact(
        origin, destination, "p/s1/db.pgdump.zst.age", hashlib.sha256(data).hexdigest(), len(data),
        progress=seen.append,
    )  # fmt: skip
    assert sum(seen) == len(data) and len(seen) == 4
    with destination.reader("p/s1/db.pgdump.zst.age") as handle:
        assert handle.read() == data


def test_copy_without_progress_still_checks_the_hash(tmp_path: Path) -> None:
    origin, destination = local(tmp_path / "a", "a"), local(tmp_path / "b", "b")
    with origin.writer("p/s1/x") as sink:
        sink.write(b"stored bytes")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        copy_artifact(origin, destination, "p/s1/x", "0" * 64, 12)
