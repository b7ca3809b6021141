"""DigestIndex (the ledger audit's packed key -> digest map) against a dict doing the same."""

from __future__ import annotations

import random

from backupctl.catalog.digest_index import DigestIndex


def test_same_answers_as_a_dict_through_growth_overwrites_and_pops() -> None:
    chooser = random.Random(14)
    # Python hash() values: signed 64-bit, and keys equal in their low bits (one probe run).
    keys = [hash((chooser.random(), index)) for index in range(3000)]
    keys += [(index << 40) | 5 for index in range(200)] + [-(index << 33) for index in range(1, 200)]
    index, reference = DigestIndex(8), {}  # sized far too small: it grows many times
    for key in keys + chooser.sample(keys, 500):  # a key's second put overwrites (a newer record)
        digest = hash(chooser.random())
        index.put(key, digest)
        reference[key] = digest
    assert len(index) == len(reference)
    for key in [*chooser.sample(keys, 1500), 1, -1, 12345]:
        assert index.pop(key) == reference.pop(key, None)
        assert index.pop(key) is None  # popped once only
    assert len(index) == len(reference)
    assert sorted(index.remaining()) == sorted(reference)


def test_a_popped_key_put_again_is_live() -> None:
    index = DigestIndex()
    index.put(7, 70)
    assert index.pop(7) == 70 and not index
    index.put(7, 71)
    assert list(index.remaining()) == [7] and index.pop(7) == 71
