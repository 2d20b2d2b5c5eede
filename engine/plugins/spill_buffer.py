"""Where the aggregator keeps its groups past the hash table: one set of arrays, folded in place.

Key words (capacity, w), counters (k, capacity) and hashes (capacity,) are
anonymous mappings reserved for the most rows the aggregator can hold, so
they never move: only the pages rows were written to are resident.  Batches
are appended after the folded groups; compact() folds everything in place
(grouping.fold_in_place: the sort's ~17 bytes a row, no copy of the rows) and
hands the pages past the groups back to the kernel.  The purge's rows are
views of these arrays.  A list of partials folded by concatenation held the
groups, the partials, their concatenation and the fold's output at once.
"""
from __future__ import annotations

import mmap

import numpy as np

from ..proc import anonymous_map
from .grouping import fold_in_place

PAGE = mmap.PAGESIZE


class SpillBuffer:
    """Rows of `width`-word keys with `counters` uint64 counters (0-2 summed, a 4th OR-ed); room for
    `capacity` rows (grown by a copy past that)."""

    def __init__(self, width: int, counters: int, capacity: int) -> None:
        self.count = 0                  # rows in use ...
        self.folded = 0                 # ... the first `folded` of them distinct keys (after compact())
        self._map(width, counters, max(1, capacity))

    def _map(self, width: int, counters: int, capacity: int) -> None:
        self._maps = [anonymous_map(capacity * width * 8), anonymous_map(counters * capacity * 8),
                      anonymous_map(capacity * 8)]
        self._words = np.frombuffer(self._maps[0], np.uint64, capacity * width).reshape(capacity, width)
        self._counts = np.frombuffer(self._maps[1], np.uint64, counters * capacity).reshape(counters, capacity)
        self._hashes = np.frombuffer(self._maps[2], np.uint64, capacity)

    def __len__(self) -> int:
        return self.count

    @property
    def pending(self) -> int:
        """Rows appended since the last compact()."""
        return self.count - self.folded

    @property
    def words(self) -> np.ndarray:
        return self._words[:self.count]

    @property
    def counts(self) -> np.ndarray:
        return self._counts[:, :self.count]

    def append(self, words: np.ndarray, counts: np.ndarray, h: np.ndarray) -> None:
        end = self.count + len(h)
        if end > len(self._hashes):
            self._grow(end)
        self._words[self.count:end] = words
        self._counts[:, self.count:end] = counts
        self._hashes[self.count:end] = h
        self.count = end

    def compact(self) -> bool:
        """Fold all rows in place (one per key, in arrival order); True where equal hashes held different
        keys (grouped exactly).  The pages past the groups go back to the kernel."""
        if self.pending == 0:
            return False
        groups, collided = fold_in_place(self.words, self.counts, self._hashes[:self.count])
        self._release(groups, self.count)
        self.count = self.folded = groups
        return collided

    def _release(self, start: int, end: int) -> None:
        """Drop the pages of rows [start, end) (they read as zeros if written again)."""
        capacity = len(self._hashes)
        row_bytes = (self._words.shape[1] * 8, 8, 8)
        bases = ([0], [i * capacity * 8 for i in range(len(self._counts))], [0])
        for mm, size, offsets in zip(self._maps, row_bytes, bases):
            for base in offsets:
                lo = -(-(base + start * size) // PAGE) * PAGE
                hi = (base + end * size) // PAGE * PAGE
                if hi > lo:
                    mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def _grow(self, rows: int) -> None:
        """More room than reserved (not reached while the aggregator purges at max_rows): a copy 2x bigger."""
        words, counts, hashes = self.words.copy(), self.counts.copy(), self._hashes[:self.count].copy()
        self._map(words.shape[1], len(counts), max(rows, 2 * len(self._hashes)))
        self._words[:self.count], self._counts[:, :self.count], self._hashes[:self.count] = words, counts, hashes
