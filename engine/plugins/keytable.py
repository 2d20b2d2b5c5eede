"""An open-addressing hash table of packed keys, in numpy: key -> dense row id, with counters per row.

Each batch is looked up as a whole: rows are hashed to 64 bits (the caller's
hash), probed linearly in a slot table kept at most half full, and keys not yet
present are inserted (first occurrence of each new hash).  Every row is then
verified against the stored key words; a row whose hash belongs to a different
key is reported back (`collided`) and gets no id, so the caller can group those
rows exactly on a slow path.  Counters are added with ufunc.at (exact uint64).

Entries are stored densely in insertion order (keys, hashes, counters), so a
purge is a slice, not a sort.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .grouping import counter_ufunc

MIN_SLOTS = 1 << 10
EMPTY = -1


class KeyTable:
    """Distinct keys of one dtype (itemsize a multiple of 8) with `counters` uint64 counters each."""

    def __init__(self, dtype: np.dtype, counters: int, capacity: int = 0) -> None:
        self.dtype = np.dtype(dtype)
        self.words = self.dtype.itemsize // 8
        self.count = 0
        capacity = max(256, int(capacity))
        self.words_cm = np.zeros((self.words, capacity), dtype=np.uint64)    # key words, column-major
        self.hashes = np.zeros(capacity, dtype=np.uint64)
        self.counts = np.zeros((counters, capacity), dtype=np.uint64)
        self._alloc_slots(max(MIN_SLOTS, _pow2(2 * capacity)))

    def __len__(self) -> int:
        return self.count

    @property
    def capacity(self) -> int:
        """Entries that fit without growing (storage, slots at most half full)."""
        return min(self.words_cm.shape[1], len(self._slot_id) // 2)

    @property
    def nbytes(self) -> int:
        return (self.words_cm.nbytes + self.hashes.nbytes + self.counts.nbytes + self._slot_id.nbytes
                + self._slot_hash.nbytes)

    def _alloc_slots(self, size: int) -> None:
        self._mask = np.uint64(size - 1)
        self._slot_id = np.full(size, EMPTY, dtype=np.int32 if size < (1 << 31) else np.int64)
        self._slot_hash = np.zeros(size, dtype=np.uint64)

    # -- lookups ---------------------------------------------------------------------
    def find(self, h: np.ndarray) -> np.ndarray:
        """Row id of each hash (EMPTY where absent)."""
        slot = h & self._mask
        ids = self._slot_id.take(slot).astype(np.int64)
        used = ids != EMPTY
        hit = used & (self._slot_hash.take(slot) == h)
        if hit.all():                               # steady state: every key found at its first slot
            return ids
        ids[~hit] = EMPTY
        todo = np.flatnonzero(used & ~hit)          # slot taken by another hash: probe on
        slot = slot.take(todo)
        while len(todo):
            slot = (slot + np.uint64(1)) & self._mask
            sid = self._slot_id.take(slot)
            used = sid != EMPTY
            hit = used & (self._slot_hash.take(slot) == h.take(todo))
            ids[todo[hit]] = sid[hit]
            more = used & ~hit
            todo, slot = todo[more], slot[more]
        return ids

    def _place(self, h: np.ndarray, ids: np.ndarray) -> None:
        """Put distinct hashes (absent from the slots) with their row ids into free slots."""
        slot = h & self._mask
        while len(h):
            free = self._slot_id.take(slot) == EMPTY
            cand = np.flatnonzero(free)
            placed = np.zeros(len(h), dtype=bool)
            if len(cand):
                # one winner per free slot: the scatter keeps one id per slot, read back who it was
                self._slot_id[slot[cand]] = ids[cand]
                win = cand[self._slot_id.take(slot[cand]) == ids[cand]]
                self._slot_hash[slot[win]] = h[win]
                placed[win] = True
            keep = ~placed
            h, ids = h[keep], ids[keep]
            slot = (slot[keep] + np.uint64(1)) & self._mask     # every remaining slot is taken now

    def _reserve(self, rows: int) -> None:
        """Room for `rows` entries: storage grown 2x or more at a time, slots rebuilt a quarter full."""
        if rows > self.words_cm.shape[1]:
            cap = _pow2(2 * rows)
            words = np.zeros((self.words, cap), dtype=np.uint64)
            words[:, :self.count] = self.words_cm[:, :self.count]
            hashes = np.zeros(cap, dtype=np.uint64)
            hashes[:self.count] = self.hashes[:self.count]
            counts = np.zeros((self.counts.shape[0], cap), dtype=np.uint64)
            counts[:, :self.count] = self.counts[:, :self.count]
            self.words_cm, self.hashes, self.counts = words, hashes, counts
        if 2 * rows > len(self._slot_id):
            self._alloc_slots(_pow2(4 * rows))
            self._place(self.hashes[:self.count], np.arange(self.count))

    def _insert(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots for hashes absent from the table, duplicates among them included: (first, ids): the
        rows of h that become entries (first occurrence of each hash, in order) and every row's new id.

        Rows claim free slots under provisional ids (-2 - row; rows with equal hashes probe the same
        slots together, and the scatter, written in reverse, leaves the earliest); a row whose probed
        slot then holds its hash is done (it won the slot, or an equal hash did); the others probe on.
        No sorting."""
        m = len(h)
        self._reserve(self.count + m)
        slot = h & self._mask
        todo = np.arange(m)
        home = np.empty(m, dtype=np.uint64)             # the slot each row's hash ends up in
        while len(todo):
            cand = np.flatnonzero(self._slot_id.take(slot) == EMPTY)[::-1]    # the earliest row written last
            if len(cand):
                self._slot_id[slot[cand]] = -2 - todo[cand]
                won = cand[self._slot_id.take(slot[cand]) == -2 - todo[cand]]
                self._slot_hash[slot[won]] = h.take(todo[won])
            done = self._slot_hash.take(slot) == h.take(todo)
            done &= self._slot_id.take(slot) < EMPTY          # a provisional entry of this batch
            home[todo[done]] = slot[done]
            more = ~done
            todo, slot = todo[more], (slot[more] + np.uint64(1)) & self._mask
        winner = -2 - self._slot_id.take(home).astype(np.int64)    # the row that holds each row's slot
        first = np.flatnonzero(winner == np.arange(m))
        fresh = np.arange(self.count, self.count + len(first))
        self._slot_id[home.take(first)] = fresh
        dense = np.empty(m, dtype=np.int64)
        dense[first] = fresh
        self.hashes[self.count:self.count + len(first)] = h.take(first)
        self.count += len(first)
        return first, dense.take(winner)

    def index(self, keys: np.ndarray, h: np.ndarray, ids: Optional[np.ndarray] = None
              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(row ids, collided): ids of every key, inserting new ones; collided marks rows (id -1) whose
        hash belongs to a different key (None when there are none).  ids: find(h), when known."""
        words = keys.view(np.uint64).reshape(len(keys), self.words)
        ids = self.find(h) if ids is None else ids
        new = np.flatnonzero(ids == EMPTY)
        if len(new):
            start = self.count
            first, ids[new] = self._insert(h.take(new))
            self.words_cm[:, start:self.count] = words.take(new.take(first), axis=0).T
        bad = words[:, 0] != self.words_cm[0].take(ids)
        for j in range(1, self.words):
            bad |= words[:, j] != self.words_cm[j].take(ids)
        if not bad.any():
            return ids, None
        ids[bad] = EMPTY
        return ids, bad

    def accumulate(self, ids: np.ndarray, counts: list[np.ndarray]) -> None:
        """Add counters 0-2 (packets, bytes, flows) and OR counter 3 (tcp flags) into rows ids."""
        for i, values in enumerate(counts):
            counter_ufunc(i).at(self.counts[i], ids, values)

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, counts) of the entries, insertion order (counts: a view into the table)."""
        keys = np.ascontiguousarray(self.words_cm[:, :self.count].T).view(self.dtype).reshape(self.count)
        return keys, self.counts[:, :self.count]


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()
