"""The hash tables of the shard's fold (engine/shards/preaggregate.py), over keys held as columns: a (key
words, n) uint64 array, one column per record.

- _hash: round r's 64-bit hash of each key, a multiply-add of its words by odd constants (no mixing step:
  every use checks keys word by word, and rows left sharing a slot go round again with another round's hash);
- KeyDictionary: the keys of earlier batches, each in one of two slots of a table, with an id, its words and a
  template record;
- _candidates/_differ: the scratch grouping of one batch -- every row writes its row number into its slot, the
  last writer wins, rows whose key equals the winner's share it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..schema import RECORD_DTYPE

ROUNDS = 3              # hash-table rounds before the rows still sharing a slot with another key go unfolded
SLOTS_PER_ROW = 4       # scratch table size: the power of two >= this many slots per row of the round
DICTIONARY_KEYS = 4096  # keys a folder remembers (it starts over when full)
DICTIONARY_SLOT_BITS = 15   # its table: 32768 slots
RECORD_WORDS = RECORD_DTYPE.itemsize // 8
assert RECORD_DTYPE.itemsize % 8 == 0, "records are read as 8-byte words"


def _splitmix64(seed: int, count: int) -> np.ndarray:
    """count odd 64-bit constants, the same on every machine."""
    out = []
    for _ in range(count):
        seed = (seed + 0x9E3779B97F4A7C15) & (2 ** 64 - 1)
        z = seed
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2 ** 64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2 ** 64 - 1)
        out.append((z ^ (z >> 31)) | 1)
    return np.array(out, dtype=np.uint64)


_MULTS = _splitmix64(0x5EED, ROUNDS * (RECORD_WORDS + 2)).reshape(ROUNDS, RECORD_WORDS + 2)   # per round


class KeyDictionary:
    """The keys of earlier batches: a table slot -> id, and per id the key's words and a template record (any
    record with that key: the plugin reads nothing else from it but the counters, which are overwritten).  A key
    lives in one of two slots, both taken from its 64-bit hash: its top bits, else those of the hash times an
    odd constant."""

    def __init__(self, key_rows: int, capacity: int = DICTIONARY_KEYS, slot_bits: int = DICTIONARY_SLOT_BITS):
        self.slot_bits = slot_bits
        self.table = np.full(1 << slot_bits, -1, dtype=np.intp)
        self.keys = np.zeros((key_rows, capacity), dtype=np.uint64)
        self.records = np.zeros((capacity, RECORD_WORDS), dtype=np.uint64)
        self.slots = np.zeros(capacity, dtype=np.intp)
        self.size = 0
        self.full = False           # a key found no room: start over after this batch

    def first_slots(self, h: np.ndarray) -> np.ndarray:
        return _slots(h, self.slot_bits)

    def second_slots(self, h: np.ndarray) -> np.ndarray:
        return _slots(h * _MULTS[0, -1], self.slot_bits)       # every bit of h reaches the top ones

    def lookup(self, keys: np.ndarray, h: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(ids, unknown): per key (column of keys; h its hash, slot its first slot) its id, and the rows whose
        key is in neither of its slots (their ids are garbage), or None."""
        ids = self.table.take(slot)
        unknown = self._differ(keys, ids)
        if not unknown.any():
            return ids, None
        rows = np.flatnonzero(unknown)
        if 2 * len(rows) >= len(ids):                   # mostly new keys: not worth a second look
            return ids, rows
        second = self.table.take(self.second_slots(h.take(rows)))
        ids[rows] = second
        unknown = self._differ(keys.take(rows, axis=1), second)
        return ids, (rows.compress(unknown) if unknown.any() else None)

    def _differ(self, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
        unknown = (self.keys.take(ids, axis=1) != keys).any(axis=0)    # id -1 reads the last column: rejected
        unknown |= ids < 0
        return unknown

    def insert(self, keys: np.ndarray, records: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Adds distinct new keys (columns of keys; their template records as (n, RECORD_WORDS) words, their
        hashes) where one of their slots is free and there is room: their ids, -1 for those left out."""
        ids = np.full(len(h), -1, dtype=np.intp)
        for slots_of in (self.first_slots, self.second_slots):
            todo = np.flatnonzero(ids < 0)
            where = slots_of(h.take(todo))
            free = np.flatnonzero(self.table.take(where) < 0)
            room = len(self.slots) - self.size
            if len(free) > room:
                self.full = True
                free = free[:room]
            if len(free) == 0:
                continue
            where = where.take(free)
            order = np.arange(len(free), dtype=np.intp)
            self.table[where] = order                   # new keys sharing a slot: the last writer wins
            won = self.table.take(where) == order
            new = np.arange(self.size, self.size + np.count_nonzero(won), dtype=np.intp)
            self.slots[new] = where.compress(won)
            self.table[self.slots[new]] = new           # also the slots of the keys that lost
            won = todo.take(free.compress(won))
            ids[won] = new
            self.keys[:, new] = keys.take(won, axis=1)
            self.records[new] = records.take(won, axis=0)
            self.size += len(new)
        return ids

    def clear(self) -> None:
        self.table[self.slots[:self.size]] = -1
        self.size = 0
        self.full = False


def _table_size(n: int) -> int:
    return 1 << max(4, (SLOTS_PER_ROW * n - 1).bit_length())


def _hash(keys: np.ndarray, rnd: int, scratch: Optional[np.ndarray] = None) -> np.ndarray:
    """Round rnd's 64-bit hash of each key (column of keys): a multiply-add of its words by odd constants."""
    mults = _MULTS[rnd]
    h = keys[0] * mults[0]
    if len(keys) > 1:
        scratch = np.empty_like(h) if scratch is None else scratch
        for j in range(1, len(keys)):
            np.multiply(keys[j], mults[j], out=scratch)
            h += scratch
    return h


def _slots(h: np.ndarray, bits: int) -> np.ndarray:
    """The top `bits` bits of each hash, as table indices."""
    return (h >> np.uint64(64 - bits)).view(np.intp)


def _candidates(h: np.ndarray, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row, the last row whose hash has the same top bits (its slot in a table of _table_size(n) slots)."""
    slot = _slots(h, _table_size(len(h)).bit_length() - 1)
    table[slot] = rows
    return table.take(slot)


def _differ(keys: np.ndarray, rep: np.ndarray) -> np.ndarray:
    """Whether each row's key differs from that of row rep[row] (bool per row); keys: (key rows, n)."""
    return (keys.take(rep, axis=1) != keys).any(axis=0)
