"""The memory plugin's table: aggregated rows kept until a client erases or resets them.

Keys are built and grouped by the spine's vectorised code (aggregate.build_keys,
aggregate.group).  Batches are reduced on arrival and merged into the table
when the pending partials outgrow it, or before a query reads it.  The table is
bounded by `max_rows`: when a merge would exceed it, the keys already in the
table keep counting and the new ones beyond the bound are dropped and counted
(dropped_keys, dropped_flows / packets / bytes), never an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..aggregate import AggregatedRows, KeySpec, build_keys, group, reduce
from ..grouping import counter_ufunc
from ...schema import RECORD_DTYPE

MERGE_MIN_ROWS = 1 << 18            # pending partial rows that trigger a merge (at least)


def entry_bytes(spec: KeySpec) -> int:
    """Memory one table entry takes: its key plus its counters."""
    return spec.dtype.itemsize + 8 * spec.counters


@dataclass
class Snapshot:
    """A consistent copy of the table (what one query reads)."""
    aggregate: tuple[str, ...]
    keys: np.ndarray                # spec.dtype
    counts: np.ndarray              # (3 or 4, n) uint64: packets, bytes, flows (+ tcp flags)


class MemoryTable:
    """The plugin's aggregated table (one row per key, no time bins)."""

    def __init__(self, aggregate: tuple[str, ...], max_rows: Optional[int] = None, secs: bool = False) -> None:
        self.aggregate = tuple(aggregate)
        self.spec = KeySpec.create(self.aggregate, False)
        self.max_rows = max_rows            # None: unbounded
        self.secs = secs
        self.dropped_keys = 0
        self.dropped_flows = 0
        self.dropped_packets = 0
        self.dropped_bytes = 0
        self.merges = 0
        self.clear()

    def clear(self) -> None:
        self.keys = np.zeros(0, dtype=self.spec.dtype)
        self.counts = np.zeros((self.spec.counters, 0), dtype=np.uint64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def __len__(self) -> int:
        self.merge()
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.counts.nbytes + sum(k.nbytes + c.nbytes for k, c in self._pending)

    def add(self, records: np.ndarray) -> None:
        """Aggregate a batch of RECORD_DTYPE records."""
        if len(records) == 0:
            return
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"expected RECORD_DTYPE records, got {records.dtype}")
        keys = build_keys(records, self.spec, None, False, self.secs)
        counts = np.empty((self.spec.counters, len(records)), dtype=np.uint64)
        counts[0], counts[1], counts[2] = records["packets"], records["bytes"], records["flows"]
        if self.spec.or_flags:
            counts[3] = records["tcp_flags"]
        keys, counts, _ = reduce(keys, counts)
        self._pending.append((keys, counts))
        self._pending_rows += len(keys)
        if self._pending_rows >= max(MERGE_MIN_ROWS, len(self.keys)):
            self.merge()

    def merge(self) -> None:
        """Fold the pending partials into the table, dropping new keys beyond max_rows."""
        if not self._pending:
            return
        n_old = len(self.keys)
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self.counts] + [c for _, c in self._pending], axis=1)
        self._pending, self._pending_rows = [], 0
        order, starts, _ = group(keys)
        first = order.take(starts)
        folded = np.empty((counts.shape[0], len(starts)), dtype=np.uint64)
        for i in range(counts.shape[0]):
            folded[i] = counter_ufunc(i).reduceat(counts[i].take(order), starts)
        keys = keys.take(first)
        if self.max_rows is not None and len(keys) > self.max_rows:
            is_old = np.minimum.reduceat(order, starts) < n_old        # the group holds a row of the table
            room = max(0, self.max_rows - int(is_old.sum()))
            new = np.flatnonzero(~is_old)
            dropped = new[room:]
            keep = np.ones(len(keys), dtype=bool)
            keep[dropped] = False
            self.dropped_keys += len(dropped)
            self.dropped_packets += int(folded[0, dropped].sum())
            self.dropped_bytes += int(folded[1, dropped].sum())
            self.dropped_flows += int(folded[2, dropped].sum())
            keys, folded = keys[keep], folded[:, keep]
        self.keys, self.counts = keys, folded
        self.merges += 1

    def snapshot(self) -> Snapshot:
        """A copy of the table that stays valid while the table keeps changing."""
        self.merge()
        return Snapshot(self.aggregate, self.keys.copy(), self.counts.copy())

    def remove(self, mask: np.ndarray) -> int:
        """Delete the rows where mask is true (pmacct -r: matched counters reset); rows removed."""
        self.merge()
        self.keys, self.counts = self.keys[~mask], self.counts[:, ~mask]
        return int(mask.sum())


def snapshot_rows(snap: Snapshot, now_s: int = 0) -> AggregatedRows:
    """A snapshot as the AggregatedRows that render.py formats."""
    spec = KeySpec.create(snap.aggregate, False)
    flags = snap.counts[3].astype(np.uint8) if spec.or_flags else None
    return AggregatedRows(spec.primitives, snap.keys, snap.counts[0], snap.counts[1], snap.counts[2], None,
                          now_s, spec.with_flows, flags)
