"""The streaming pipeline: plain → zstd (multi-threaded) → age → sha256 → target, and back.

The plain stream is hashed with BLAKE3 on the way (`backupctl.core.digests`), the stored bytes
with sha256.

Everything is pulled or pushed in chunks: memory stays flat whatever the size. pyrage drives
the encryption loop and calls our file-like wrappers, which count and hash as bytes pass. On
the way back, decryption and decompression run in two threads (`_Decompressing`).
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyrage
import zstandard

from backupctl.core.digests import PLAIN_ALGORITHM, labelled, new_hasher
from backupctl.core.runner import widen_pipe
from backupctl.errors import IntegrityError

CHUNK = 1 << 20
# zstd's smallest job, with two workers or more. zstd's default at level 1 (2 MiB jobs) kept up to
# ~16 MiB of job buffers with two workers, a tenth of a backup's peak RSS; 512 KiB jobs keep ~5 MiB
# for the same CPU time and output size (docs/benchmarks.md, issue #17 session 10). With one
# worker they cost 10-20 % more CPU: one worker keeps zstd's default. Compressing in the reading
# thread (no workers) saved 3 MiB more, but pg_dump then waited on the full pipe 5-17 % of its run
# instead of 1-5 %.
ZSTD_JOB_BYTES = 512 << 10
# Decrypted (still compressed) bytes are handed to the decompressing thread in batches of this
# size, at most HANDOFF_DEPTH batches waiting: a few MiB in flight whatever the artifact's size.
HANDOFF_BYTES = 256 << 10
HANDOFF_DEPTH = 4
Progress = Callable[[int], None]
T = typing.TypeVar("T")


@dataclass
class StreamStats:
    plain_bytes: int
    plain_digest: str  # algorithm:hex (core.digests)
    stored_bytes: int
    stored_sha256: str


class HashingReader(io.RawIOBase):
    """Wraps a readable stream; counts and hashes (sha256 unless told) every byte read through it."""

    def __init__(
        self, inner: BinaryIO, progress: Progress | None = None, *, algorithm: str = "sha256"
    ) -> None:
        self.error: BaseException | None = None
        self._inner = inner
        self._algorithm = algorithm
        self._hash = new_hasher(algorithm)
        self.count = 0
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        if not data:
            return 0
        size = len(data)
        view[:size] = data
        self._hash.update(data)
        self.count += size
        if self._progress:
            self._progress(size)
        return size

    def _read(self, size: int) -> bytes:
        try:
            return self._inner.read(size)
        except BaseException as error:  # pyrage wraps what its callbacks raise: remember it
            self.error = error
            raise

    def read(self, size: int = -1) -> bytes:
        data = self._read(size if size and size > 0 else CHUNK)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self._progress:
                self._progress(len(data))
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def digest(self) -> str:
        """`algorithm:hex` (core.digests)."""
        return labelled(self._algorithm, self._hash)


class HashingWriter(io.RawIOBase):
    """Wraps a writable stream; counts and hashes (sha256 unless told) every byte written through it."""

    def __init__(self, inner: BinaryIO | None, *, algorithm: str = "sha256") -> None:
        self.error: BaseException | None = None
        self._inner = inner
        self._algorithm = algorithm
        self._hash = new_hasher(algorithm)
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data) if not isinstance(data, bytes) else data
        self._hash.update(chunk)
        self.count += len(chunk)
        if self._inner is not None:
            try:
                self._inner.write(chunk)
            except BaseException as error:  # pyrage wraps what its callbacks raise: remember it
                self.error = error
                raise
        return len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def digest(self) -> str:
        """`algorithm:hex` (core.digests)."""
        return labelled(self._algorithm, self._hash)


def encrypt_stream(
    plain: BinaryIO,
    sink: BinaryIO,
    recipients: list[Any],
    *,
    level: int = 1,
    threads: int = 0,
    progress: Progress | None = None,
) -> StreamStats:
    """Compress `plain` with zstd and encrypt it to `recipients` into `sink`.

    `threads` zstd workers (0: one per CPU); two or more compress jobs of `ZSTD_JOB_BYTES`.
    """
    source = HashingReader(plain, progress, algorithm=PLAIN_ALGORITHM)
    workers = threads or (os.cpu_count() or 1)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=workers, job_size=ZSTD_JOB_BYTES if workers > 1 else 0, write_checksum=1
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    compressed = compressor.stream_reader(typing.cast(BinaryIO, source), read_size=CHUNK, closefd=False)
    stored = HashingWriter(sink)
    try:
        pyrage.encrypt_io(compressed, stored, recipients)
    except Exception:
        # Ctrl-C / SIGTERM (KeyboardInterrupt) or a target's error raised inside a callback
        # arrives wrapped as pyrage.EncryptError: re-raise the original so it is handled as such.
        original = source.error or stored.error
        if original is not None:
            raise original from None
        raise
    return StreamStats(source.count, source.digest(), stored.count, stored.hexdigest())


def decrypt_stream(
    stored: BinaryIO,
    sink: BinaryIO | None,
    identities: list[Any],
    *,
    plain_algorithm: str = PLAIN_ALGORITHM,
    progress: Progress | None = None,
) -> StreamStats:
    """Decrypt and decompress `stored` into `sink` (None: discard, for verification), hashing
    the plain bytes with `plain_algorithm` (the one of the manifest's digest being checked).

    Decryption runs in the calling thread, decompression, the plain hash and the writes to
    `sink` in another (`_Decompressing`). Raises IntegrityError when the age authentication or
    the zstd frame checksum fails; an OSError of `sink` (a closed pipe, a full disk) as it is.
    """
    reader = HashingReader(stored, progress)
    plain = HashingWriter(sink, algorithm=plain_algorithm)
    decompressing = _Decompressing(plain)
    try:
        try:
            pyrage.decrypt_io(reader, decompressing, identities)
        finally:
            decompressing.finish()
    except Exception as error:
        raise _decrypt_failure(decompressing.error or error) from None
    if decompressing.error is not None:
        raise _decrypt_failure(decompressing.error) from None
    return StreamStats(plain.count, plain.digest(), reader.count, reader.hexdigest())


def _decrypt_failure(error: BaseException) -> BaseException:
    """What a failed decryption raises: the sink's own OSError as it is, else IntegrityError."""
    if isinstance(error, zstandard.ZstdError):
        return IntegrityError(f"decompression failed: {_short(error)}")
    # pyrage surfaces truncation and header damage as generic errors from the age crate.
    if isinstance(error, OSError) and error.errno is not None:
        return error
    return IntegrityError(f"decryption failed: {_short(error)}")


class _Decompressing(io.RawIOBase):
    """pyrage's output (zstd frames), decompressed into `plain` by a thread of its own.

    pyrage holds the GIL while it decrypts; zstd releases it while it decompresses, and so do
    the writes to a pipe or a spool file. In one thread the three took turns: spooling a 1 GiB
    database's plain dump (420 MiB) took 2.0-2.4 s; in two threads 1.2-1.4 s, about what
    `age -d | zstd -d > FILE` takes (docs/benchmarks.md, issue #17 session 12).

    The decrypting thread batches what pyrage writes into HANDOFF_BYTES pieces and blocks while
    HANDOFF_DEPTH of them wait. When decompression or `plain` fails, the thread keeps taking
    (and dropping) batches until `finish()`, and the next `write` raises, which stops pyrage.
    """

    def __init__(self, plain: HashingWriter) -> None:
        self.error: BaseException | None = None
        self._plain = plain
        self._batches: queue.Queue[bytes | None] = queue.Queue(maxsize=HANDOFF_DEPTH)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._thread = threading.Thread(target=self._work, name="decompress", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.error is not None:
            raise IntegrityError("decompression stopped")  # decrypt_stream reports self.error
        chunk = bytes(data)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= HANDOFF_BYTES:
            self._hand_off()
        return len(chunk)

    def finish(self) -> None:
        """Hand over what is pending, wait for the thread to decompress and flush it all."""
        if self.error is None:
            self._hand_off()
        self._batches.put(None)
        self._thread.join()

    def _hand_off(self) -> None:
        if self._pending:
            self._batches.put(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0

    def _work(self) -> None:
        writer = zstandard.ZstdDecompressor().stream_writer(
            typing.cast(BinaryIO, self._plain), write_size=CHUNK, write_return_read=True, closefd=False
        )
        while (batch := self._batches.get()) is not None:
            if self.error is not None:
                continue  # drain until finish(): the decrypting thread never blocks on a full queue
            try:
                writer.write(batch)
            except BaseException as error:
                self.error = self._plain.error or error
        if self.error is None:
            try:
                writer.flush()  # type: ignore[no-untyped-call]
            except BaseException as error:
                self.error = self._plain.error or error


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


@contextmanager
def threaded_pipe(produce: Callable[[BinaryIO], T], name: str) -> Iterator[tuple[BinaryIO, Callable[[], T]]]:
    """A readable stream fed by `produce(writer)` running in a background thread.

    Yields (reader, result): read to the end, then `result()` raises what `produce` raised, or
    returns what it returned. The reader is a real pipe: it has a `fileno()` that a restore
    tool can take as its stdin.
    """
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=0)  # unbuffered: a tool may take over the fd
    writer = os.fdopen(write_fd, "wb", buffering=CHUNK)
    # 1 MiB instead of 64 KiB: with the producer in threads of its own, a spool of a 1 GiB
    # restore filled in 1.2-1.4 s instead of 1.5-1.8 s (docs/benchmarks.md, issue #17 session 12).
    widen_pipe(writer)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = produce(writer)
        except BrokenPipeError:
            outcome["error"] = IntegrityError("the restore tool stopped reading before the end of the stream")
        except BaseException as error:
            outcome["error"] = error
        finally:
            try:
                writer.close()
            except OSError:
                pass

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        value: T = outcome["value"]
        return value

    try:
        yield reader, result
    finally:
        reader.close()  # unblocks the writer thread if the consumer gave up early
        thread.join(timeout=30)


@contextmanager
def decrypted_reader(
    stored: BinaryIO,
    identities: list[Any],
    *,
    plain_algorithm: str = PLAIN_ALGORITHM,
    progress: Progress | None = None,
) -> Iterator[tuple[BinaryIO, Callable[[], StreamStats]]]:
    """A readable plain stream of an encrypted artifact, decrypted in a background thread
    (see `threaded_pipe`); `result()` returns the stream stats or raises the decryption error."""
    def produce(sink: BinaryIO) -> StreamStats:
        return decrypt_stream(stored, sink, identities, plain_algorithm=plain_algorithm, progress=progress)

    with threaded_pipe(produce, "decrypt") as pipe:
        yield pipe


def sha256_of(stream: BinaryIO, progress: Progress | None = None) -> tuple[str, int]:
    """sha256 and size of everything readable from `stream`."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if progress:
            progress(len(chunk))
    return digest.hexdigest(), size
