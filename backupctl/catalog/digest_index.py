"""A map of 64-bit keys to 64-bit digests in three flat arrays: what the ledger audit keeps per
record (the newest digest of each `(kind, subject)`).

A `dict[int, int]` of a 355k-record ledger held ~49 MB: a 2^20-slot table (a dict grows at
two-thirds full) plus two int objects of 40 bytes per record. Here a slot is 17 bytes (two
`array('q')` entries and a state byte): ~9 MB for the same ledger (evidence benchmark,
docs/evidence.md "Performance"). Open addressing with linear probing; a popped key stays as a
tombstone, so `remaining()` lists the keys never popped (the records the catalog lost).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

_EMPTY, _LIVE, _POPPED = 0, 1, 2


class DigestIndex:
    """key -> digest (both signed 64-bit ints, e.g. Python `hash()` values); `put` overwrites."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 1 << max(4, (capacity * 3 // 2).bit_length())  # at most two-thirds full
        self._allocate(size)

    def _allocate(self, size: int) -> None:
        self._mask = size - 1
        self._keys = array("q", bytes(8 * size))
        self._digests = array("q", bytes(8 * size))
        self._state = bytearray(size)
        self._used = 0  # live and popped slots: what the load factor counts
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def put(self, key: int, digest: int) -> None:
        """Set `key`'s digest (a popped key becomes live again)."""
        if 3 * (self._used + 1) > 2 * (self._mask + 1):
            self._grow()
        keys, state, mask = self._keys, self._state, self._mask
        slot = key & mask
        while state[slot] and keys[slot] != key:
            slot = (slot + 1) & mask
        if state[slot] != _LIVE:
            if state[slot] == _EMPTY:
                self._used += 1
            self._live += 1
            state[slot] = _LIVE
            keys[slot] = key
        self._digests[slot] = digest

    def pop(self, key: int) -> int | None:
        """`key`'s digest, removed; None when it is not there (or popped already)."""
        keys, state, mask = self._keys, self._state, self._mask
        slot = key & mask
        while state[slot]:
            if keys[slot] == key:
                if state[slot] != _LIVE:
                    return None
                state[slot] = _POPPED
                self._live -= 1
                return self._digests[slot]
            slot = (slot + 1) & mask
        return None

    def remaining(self) -> Iterator[int]:
        """The keys put and never popped, in no particular order."""
        keys = self._keys
        for slot, value in enumerate(self._state):
            if value == _LIVE:
                yield keys[slot]

    def _grow(self) -> None:
        keys, digests, state = self._keys, self._digests, self._state
        self._allocate(2 * (self._mask + 1))
        for slot, value in enumerate(state):
            if value == _LIVE:
                self.put(keys[slot], digests[slot])
