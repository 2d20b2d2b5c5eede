"""The aggregator's spill buffer: in-place folds equal the copying fold whatever the hash; pages are released."""
from __future__ import annotations

import numpy as np
import pytest

from engine.plugins import aggregate as aggmod
from engine.plugins import grouping
from engine.plugins.grouping import compress_in_place, fold, fold_in_place
from engine.plugins.spill_buffer import PAGE, SpillBuffer

HASHES = {
    "real": lambda words: aggmod._hash_words(words),
    "few-values": lambda words: (words[:, 0] % np.uint64(7)) << np.uint64(60),     # distinct keys share hashes
    "constant": lambda words: np.zeros(len(words), np.uint64),
}


def random_rows(rng, distinct: int, n: int, width: int, counters: int):
    pool = rng.integers(0, 2**63, (distinct, width), dtype=np.int64).view(np.uint64)
    words = pool[rng.integers(0, distinct, n)]
    counts = rng.integers(0, 1 << 40, (counters, n), dtype=np.uint64)
    if counters > 3:
        counts[3] &= np.uint64(0xFF)
    return words, counts


@pytest.mark.parametrize("hash_name", list(HASHES))
@pytest.mark.parametrize("n,distinct,width,counters", [(1, 1, 1, 3), (2, 1, 2, 4), (5000, 5000, 3, 3),
                                                        (20000, 700, 5, 4), (20000, 15000, 1, 3)])
def test_fold_in_place_equals_fold(hash_name, n, distinct, width, counters, monkeypatch):
    monkeypatch.setattr(grouping, "COMPRESS_CHUNK", 1000)          # many chunks
    rng = np.random.default_rng(n + width)
    words, counts = random_rows(rng, distinct, n, width, counters)
    h = HASHES[hash_name](words)
    want_words, want_counts, want_h, _ = fold(words.copy(), counts.copy(), h.copy())
    groups, _ = fold_in_place(words, counts, h)
    assert groups == len(want_words)
    assert np.array_equal(words[:groups], want_words)           # same rows, same (first-arrival) order
    assert np.array_equal(counts[:, :groups], want_counts)
    assert np.array_equal(h[:groups], want_h)


@pytest.mark.parametrize("share", [0.0, 0.01, 0.5, 1.0])
def test_compress_in_place_equals_compress(share, monkeypatch):
    monkeypatch.setattr(grouping, "COMPRESS_CHUNK", 64)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 60, 1000, dtype=np.uint64)
    keep = rng.random(1000) < share
    want = a.compress(keep)
    assert compress_in_place(a, keep) == len(want)
    assert np.array_equal(a[:len(want)], want)


def test_compact_folds_appended_rows_and_releases_the_pages_past_the_groups():
    buf = SpillBuffer(1, 3, capacity=400 * PAGE // 8)            # counters rows start on page boundaries
    rows = 100_000
    words = np.full((rows, 1), 7, dtype=np.uint64)
    words[:10, 0] = np.arange(10)                                   # keys 0-9, then 7 again and again
    counts = np.ones((3, rows), dtype=np.uint64)
    buf.append(words[:50_000], counts[:, :50_000], aggmod._hash_words(words[:50_000]))
    buf.append(words[50_000:], counts[:, 50_000:], aggmod._hash_words(words[50_000:]))
    assert (len(buf), buf.pending) == (rows, rows)
    assert buf.compact() is False
    assert (len(buf), buf.folded, buf.pending) == (10, 10, 0)
    assert buf.words[:, 0].tolist() == list(range(10))
    assert buf.counts[0].tolist() == [1] * 7 + [rows - 9] + [1] * 2
    lo, hi = -(-10 * 8 // PAGE) * PAGE // 8, rows * 8 // PAGE * PAGE // 8      # the whole pages past the groups
    assert buf._words[hi - 1, 0] == 0 and not buf._words[lo:hi].any()          # handed back: read as zeros
    assert not buf._counts[:, lo:hi].any() and not buf._hashes[lo:hi].any()
    assert buf._words[hi:rows].all()                                # the last part page is kept


def test_grows_past_its_room_without_losing_rows():
    buf = SpillBuffer(2, 4, capacity=100)
    rng = np.random.default_rng(1)
    words, counts = random_rows(rng, 500, 1000, 2, 4)
    h = aggmod._hash_words(words)
    for i in range(0, 1000, 300):
        buf.append(words[i:i + 300], counts[:, i:i + 300], h[i:i + 300])
    assert len(buf) == 1000
    assert np.array_equal(buf.words, words) and np.array_equal(buf.counts, counts)
    want = fold(words, counts, h)
    buf.compact()
    assert np.array_equal(buf.words, want[0]) and np.array_equal(buf.counts, want[1])
