"""A staging MariaDB whose client predates mariadb-dump's sandbox line gets the dump without it."""

from __future__ import annotations

import io
from typing import BinaryIO, cast

import pytest

from backupctl.staging.mariadb_sandbox import SANDBOX_LINE, client_knows_sandbox, without_sandbox_line


@pytest.mark.parametrize(
    ("version", "knows"),
    [
        ("10.5.23-MariaDB-0+deb11u1", False),  # Debian bullseye: backupctl/mariadb:10.5
        ("10.5.25-MariaDB", True),
        ("10.11.6-MariaDB-0+deb12u1", False),
        ("10.11.11-MariaDB-0+deb12u1", True),
        ("11.4.2-MariaDB", True),
        ("11.8.1-MariaDB", True),
        ("10.4.34-MariaDB", False),
        ("not a version", True),
    ],
)
def test_which_clients_read_the_sandbox_line(version: str, knows: bool) -> None:
    assert client_knows_sandbox(version) is knows


@pytest.mark.parametrize("end", [b" \n", b"\n"])  # mariadb-dump 10.11.19 writes a blank before it
@pytest.mark.parametrize("body", [b"", b"-- MariaDB dump\nCREATE TABLE t (id int);\n" * 50000])
def test_the_line_is_dropped_and_everything_else_kept_and_read(body: bytes, end: bytes) -> None:
    source = io.BytesIO(SANDBOX_LINE + end + body)
    assert without_sandbox_line(cast(BinaryIO, source)).read() == body
    assert source.tell() == len(SANDBOX_LINE + end + body)  # read to its end: its producer may hash it
    plain = b"-- an older mariadb-dump\n" + body
    assert without_sandbox_line(cast(BinaryIO, io.BytesIO(plain))).read() == plain
    assert without_sandbox_line(cast(BinaryIO, io.BytesIO(b"/*"))).read() == b"/*"
