"""Pipeline round trips, tamper detection, manifest format and signatures (pure, in memory)."""

import io
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pyrage import x25519

from backupctl.core import pipeline
from backupctl.core.crypto import generate_keys, load_signing_key, verify_signature
from backupctl.core.manifest import ArtifactRecord, Manifest, new_snapshot_id, snapshot_time
from backupctl.core.pipeline import decrypt_stream, decrypted_reader
from backupctl.errors import IntegrityError


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (3 << 20) + 7])
def test_round_trip(encrypt: Callable[[bytes], bytes], identity: x25519.Identity, size: int) -> None:
    data = os.urandom(size // 2) + b"x" * (size - size // 2)
    stored = encrypt(data)
    sink = io.BytesIO()
    stats = decrypt_stream(io.BytesIO(stored), sink, [identity])
    assert sink.getvalue() == data
    assert stats.plain_bytes == size
    assert stats.stored_bytes == len(stored)


def test_flipped_byte_and_truncation_fail(
    encrypt: Callable[[bytes], bytes], identity: x25519.Identity
) -> None:
    stored = bytearray(encrypt(os.urandom(200_000)))
    flipped = bytes(stored[:1000]) + bytes([stored[1000] ^ 1]) + bytes(stored[1001:])
    with pytest.raises(IntegrityError):
        decrypt_stream(io.BytesIO(flipped), None, [identity])
    with pytest.raises(IntegrityError):
        decrypt_stream(io.BytesIO(bytes(stored[:-50])), None, [identity])


def test_wrong_identity_fails(encrypt: Callable[[bytes], bytes]) -> None:
    stored = encrypt(b"secret data")
    with pytest.raises(IntegrityError):
        decrypt_stream(io.BytesIO(stored), None, [x25519.Identity.generate()])


def test_decrypted_reader_is_a_pipe(encrypt: Callable[[bytes], bytes], identity: x25519.Identity) -> None:
    data = os.urandom(3 << 20)
    with decrypted_reader(io.BytesIO(encrypt(data)), [identity]) as (reader, result):
        assert reader.fileno() >= 0
        assert reader.read() == data
    assert result().plain_bytes == len(data)


def test_manifest_signature(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    assert oct((tmp_path / "keys" / "signing-ed25519.key").stat().st_mode & 0o777) == "0o600"
    key = load_signing_key(tmp_path / "keys")
    manifest = Manifest(
        snapshot_id=new_snapshot_id(),
        policy="p",
        policy_sha256="0" * 64,
        host="h",
        backupctl_version="0",
        started_at="2026-01-01T00:00:00.000000Z",
        finished_at="2026-01-01T00:00:01.000000Z",
        recipients=[keys.recipient],
        signing_public_key=key.public_b64,
        artifacts=[
            ArtifactRecord(
                "db",
                "postgres",
                "db.pgdump.zst.age",
                "pgdump",
                10,
                "a" * 64,
                5,
                "b" * 64,
                {"row_counts": {"public.t": 3}},
            )
        ],
    )
    data = manifest.to_bytes()
    assert Manifest.from_bytes(data) == manifest
    signature = key.sign(data)
    assert verify_signature(data, signature, [keys.signing_public]).startswith("SHA256:")
    with pytest.raises(IntegrityError, match="edited or forged"):
        verify_signature(data.replace(b'"public.t": 3', b'"public.t": 4'), signature, [keys.signing_public])


def test_snapshot_ids_sort_by_time() -> None:
    first = new_snapshot_id()
    assert snapshot_time(first).year >= 2026
    assert len({new_snapshot_id() for _ in range(50)}) == 50


@pytest.mark.skipif(not (shutil.which("age") and shutil.which("zstd")), reason="age and zstd CLIs needed")
def test_many_zstd_jobs_decode_with_the_clis(
    encrypt: Callable[[bytes], bytes], identity: x25519.Identity, tmp_path: Path
) -> None:
    # 14 MiB: two dozen of the pipeline's 512 KiB zstd jobs, as an operator decodes them by hand.
    data = b"".join(b"row %d\t%s\n" % (i, os.urandom(8).hex().encode()) for i in range(500_000))
    assert len(data) > 24 * pipeline.ZSTD_JOB_BYTES
    (tmp_path / "artifact").write_bytes(encrypt(data))
    (tmp_path / "key").write_text(str(identity))
    decoded = subprocess.run(
        f"age -d -i {tmp_path / 'key'} {tmp_path / 'artifact'} | zstd -d -q",
        shell=True, check=True, stdout=subprocess.PIPE,
    ).stdout  # fmt: skip
    assert decoded == data
