"""Decryption and decompression in two threads (core/pipeline.py, `_Decompressing`): what either
side's failure raises, that the other side stops, and that no thread is left running."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable

import pyrage
import pytest
from pyrage import x25519

from backupctl.core import pipeline
from backupctl.core.pipeline import decrypt_stream
from backupctl.errors import IntegrityError


def _decompressing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "decompress"]


class _CountingReader(io.RawIOBase):
    """The stored bytes, counting how many were read."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        self.read_bytes += len(data)
        return len(data)


class _FullDisk(io.RawIOBase):
    """A sink that fails with ENOSPC once `limit` bytes were written to it."""

    def __init__(self, limit: int) -> None:
        self.written = 0
        self._limit = limit

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.written + len(data) > self._limit:
            raise OSError(28, "No space left on device")
        self.written += len(data)
        return len(data)


def test_many_batches_round_trip_in_order(
    encrypt: Callable[[bytes], bytes], identity: x25519.Identity
) -> None:
    # Incompressible, so the stored stream spans many handed-off batches.
    data = os.urandom(5 * pipeline.HANDOFF_BYTES + 12345)
    sink = io.BytesIO()
    stats = decrypt_stream(io.BytesIO(encrypt(data)), sink, [identity])
    assert sink.getvalue() == data
    assert stats.plain_bytes == len(data)
    assert not _decompressing_threads()


def test_a_failing_sink_raises_its_own_error_and_stops_the_decryption(
    encrypt: Callable[[bytes], bytes], identity: x25519.Identity
) -> None:
    data = os.urandom(24 * pipeline.HANDOFF_BYTES)
    stored = _CountingReader(encrypt(data))
    with pytest.raises(OSError) as raised:
        decrypt_stream(stored, _FullDisk(pipeline.HANDOFF_BYTES), [identity])
    assert raised.value.errno == 28
    # Decryption stopped soon after the sink failed: not read to the end.
    assert stored.read_bytes < len(data) // 2
    assert not _decompressing_threads()


def test_damaged_zstd_inside_authentic_age_is_a_decompression_failure(identity: x25519.Identity) -> None:
    frames = io.BytesIO()
    pyrage.encrypt_io(io.BytesIO(b"this is not a zstd frame" * 1000), frames, [identity.to_public()])
    with pytest.raises(IntegrityError, match="decompression failed"):
        decrypt_stream(io.BytesIO(frames.getvalue()), None, [identity])
    assert not _decompressing_threads()


def test_a_damaged_artifact_stops_the_decompressing_thread(
    encrypt: Callable[[bytes], bytes], identity: x25519.Identity
) -> None:
    stored = bytearray(encrypt(os.urandom(3 * pipeline.HANDOFF_BYTES)))
    stored[len(stored) // 2] ^= 1
    with pytest.raises(IntegrityError, match="decryption failed"):
        decrypt_stream(io.BytesIO(bytes(stored)), io.BytesIO(), [identity])
    assert not _decompressing_threads()
