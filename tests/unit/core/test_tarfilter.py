"""The 'data' filter fallback for Pythons without PEP 706 (Debian bookworm's 3.11.2) refuses
what tarfile's own filter refuses and limits file modes the same way."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from backupctl.core import tarfilter


def member(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    return info


CASES = [
    member("a/b.txt"),
    member("/etc/passwd"),
    member("../outside"),
    member("a/../../outside"),
    member("setuid", mode=0o4777),
    member("private", mode=0o400),
    member("script", mode=0o750),
    member("dir", tarfile.DIRTYPE, mode=0o777),
    member("device", tarfile.CHRTYPE),
    member("fifo", tarfile.FIFOTYPE),
    member("a/link", tarfile.SYMTYPE, linkname="../b.txt"),
    member("a/escape", tarfile.SYMTYPE, linkname="../../etc"),
    member("absolute-link", tarfile.SYMTYPE, linkname="/etc/passwd"),
    member("hard", tarfile.LNKTYPE, linkname="a/b.txt"),
    member("hard-escape", tarfile.LNKTYPE, linkname="../x"),
]


@pytest.mark.skipif(not tarfilter.HAS_FILTERS, reason="compares with tarfile's own data filter")
@pytest.mark.parametrize("info", CASES, ids=[case.name for case in CASES])
def test_fallback_matches_tarfile(info: tarfile.TarInfo, tmp_path: Path) -> None:
    try:
        expected: tarfile.TarInfo | None = tarfile.data_filter(info, str(tmp_path))
    except tarfile.FilterError:
        expected = None
    try:
        got: tarfile.TarInfo | None = tarfilter._data_filter(info, str(tmp_path))
    except tarfilter.RefusedMember:
        got = None
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert got.name == expected.name
        if expected.mode is not None:  # tarfile ignores directory and link modes; we keep them limited
            assert got.mode == expected.mode


def test_with_attrs_copies() -> None:
    info = member("x", mode=0o600)
    changed = tarfilter.with_attrs(info, uid=7, mode=0o644)
    assert (changed.uid, changed.mode, info.uid, info.mode) == (7, 0o644, 0, 0o600)
