"""Vectorised aggregation of canonical records by the plugin's `aggregate` primitives.

A batch becomes a packed structured array of keys (the selected columns, copied
with a few wide fancy-index copies, see gather_plan; the derived networks; the
address family where rendering needs it; the history bin), viewed as 64-bit
words.  Keys of one word are grouped as they are; wider keys are hashed to 64
bits (a multiply-add of the words plus a finaliser, _hash_words).

Groups live in a hash table (keytable.KeyTable: one probe per record, counters
added with ufunc.at) while there are at most HASH_TABLE_MAX_ROWS of them; beyond
that (a table that no longer fits the CPU caches) they spill into sorted
partials: each batch is reduced on its own (group(): sort on the hash, verify
that equal hashes hold identical keys, else regroup by the full key words) and
partials are merged when they outgrow the table (amortised O(n log n)).  Keys
whose hash belongs to another key in the hash table are set aside and grouped
exactly at the purge.  Counters are exact uint64.

Memory: the table is capped at `max_rows` groups (default: what fits in
DEFAULT_TABLE_BYTES); when the cap is reached `Aggregator.full` turns true and
the runner purges early, as nfacctd does when its cache fills up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from ..config.tree import CoreConfig, PluginConfig
from ..schema import FIELD_BY_NAME, PRIMITIVES, RECORD_DTYPE
from .keytable import KeyTable
from .timebins import US, TimeBins

COUNTER_PRIMITIVES = ("flows",)        # `aggregate: flows` adds the FLOWS counter, it is not a key
IGNORED_PRIMITIVES = ("none",)          # `aggregate: none`: one grand total (per bin)
OR_PRIMITIVES = ("tcpflags",)           # nfacctd ORs tcp flags over an aggregate instead of keying on them
ADDRESS_PRIMITIVES = ("src_host", "dst_host", "src_net", "dst_net", "peer_dst_ip")   # rendered by flow family
TIME_COLUMNS = ("ts_start", "ts_end", "ts_arrival")     # truncated to seconds with timestamps_secs
STAMP = "_stamp"
DEFAULT_TABLE_BYTES = 512 * 1024 * 1024
COMPACT_MIN_ROWS = 1 << 20
REDUCE_BATCH_RATIO = 0.7                # keep grouping batches on arrival while they shrink below this
HASH_TABLE_MAX_ROWS = 1 << 16           # beyond: sorted partials (a bigger hash table misses the caches)
ADD_CHUNK = 1 << 14                     # records aggregated per step: 4 MiB of records, intermediates in cache
_HASH_MULT_INT = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_WORD_MULTS = np.array([(_HASH_MULT_INT * (2 * j + 1) + 0x632BE59BD9B4E019 * j) % (1 << 64) | 1 for j in range(64)],
                       dtype=np.uint64)        # odd, distinct per word position (keys are <= 64 words)

# _PREFIX_MASKS[b] is the 16-byte netmask of prefix length b (0..128).
_PREFIX_MASKS = np.zeros((129, 16), dtype=np.uint8)
for _b in range(129):
    _PREFIX_MASKS[_b, :_b // 8] = 0xFF
    if _b % 8:
        _PREFIX_MASKS[_b, _b // 8] = (0xFF << (8 - _b % 8)) & 0xFF


def net_addresses(addr: np.ndarray, mask: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Host addresses (n, 16) masked by their prefix length, per family (IPv4-mapped keeps its prefix)."""
    mask = mask.astype(np.int64)
    bits = np.where(family == 4, 96 + np.minimum(mask, 32), np.where(family == 6, np.minimum(mask, 128), 0))
    return addr & _PREFIX_MASKS[bits]


@dataclass(frozen=True)
class KeySpec:
    """How a plugin's aggregate becomes key bytes."""
    primitives: tuple[str, ...]     # key primitives, config order
    with_flows: bool                # print the FLOWS counter
    dtype: np.dtype                 # packed key dtype, itemsize a multiple of 8 (>= 8)
    history: bool
    gather: np.ndarray              # per key byte: the record byte it copies (derived bytes: 0, overwritten)
    derived: tuple[str, ...]        # key fields computed rather than copied
    or_flags: bool                  # tcpflags selected: OR-ed over the group, not part of the key
    plan: tuple = ()                # gather_plan(dtype): how build_keys copies record columns

    @property
    def counters(self) -> int:
        """Rows of the counts array: packets, bytes, flows (+ tcp flags)."""
        return 4 if self.or_flags else 3

    @classmethod
    def create(cls, aggregate: tuple[str, ...], history: bool) -> "KeySpec":
        prims = []
        for p in aggregate:
            if p in COUNTER_PRIMITIVES or p in IGNORED_PRIMITIVES:
                continue
            if p not in PRIMITIVES:
                raise ValueError(f"unknown aggregate primitive {p!r}")
            if p not in prims:
                prims.append(p)
        fields: list[tuple] = []
        if history:
            fields.append((STAMP, "i8"))
        for p in prims:
            prim = PRIMITIVES[p]
            if p in OR_PRIMITIVES:
                continue
            if prim.derived == "net":
                fields.append((p, "u1", (16,)))
            else:
                f = FIELD_BY_NAME[prim.columns[0]]
                fields.append((f.name, *((f.dtype,) if isinstance(f.dtype, str) else f.dtype)))
        if any(p in ADDRESS_PRIMITIVES for p in prims):
            fields.append(("family", "u1"))
        if "peer_dst_ip" in prims:
            fields.append(("peer_dst_missing", "u1"))      # sFlow: no next hop exported (render.peer_text)
        fields.sort(key=_alignment_rank)            # aligned fields first: wide gathers, see gather_plan
        width = sum(np.dtype([f]).itemsize for f in fields)
        pad = (-width) % 8 if width else 8
        if pad:
            fields.append(("_pad", "u1", (pad,)))
        dtype = np.dtype(fields)
        gather = np.zeros(dtype.itemsize, dtype=np.intp)
        derived = []
        for name in dtype.names:
            ftype, koff = dtype.fields[name][:2]
            if name in RECORD_DTYPE.names:
                roff = RECORD_DTYPE.fields[name][1]
                gather[koff:koff + ftype.itemsize] = np.arange(roff, roff + ftype.itemsize)
            else:
                derived.append(name)
        return cls(tuple(prims), "flows" in aggregate, dtype, history, gather, tuple(derived),
                   any(p in OR_PRIMITIVES for p in prims), gather_plan(dtype))


def _alignment_rank(field: tuple) -> int:
    """Sort rank of a key field: power-of-two sizes largest first, then the others (MACs, labels)."""
    size = np.dtype([field]).itemsize
    return -min(size, 16) if size & (size - 1) == 0 else 1


def gather_plan(dtype: np.dtype) -> tuple[tuple[int, np.ndarray, np.ndarray], ...]:
    """(width, key columns, record columns) per word width 8/4/2/1: the copied key fields, as few wide
    fancy-index copies as the offsets allow (much cheaper than copying byte by byte)."""
    cols: dict[int, tuple[list, list]] = {w: ([], []) for w in (8, 4, 2, 1)}
    for name in dtype.names:
        if name not in RECORD_DTYPE.names:
            continue
        ftype, koff = dtype.fields[name][:2]
        roff, size = RECORD_DTYPE.fields[name][1], ftype.itemsize
        width = next(w for w in (8, 4, 2, 1) if koff % w == 0 and roff % w == 0 and size % w == 0)
        cols[width][0].extend(range(koff // width, (koff + size) // width))
        cols[width][1].extend(range(roff // width, (roff + size) // width))
    return tuple((w, np.array(k, np.intp), np.array(r, np.intp)) for w, (k, r) in cols.items() if k)


def build_keys(records: np.ndarray, spec: KeySpec, bins: Optional[TimeBins], use_arrival: bool,
               secs: bool) -> np.ndarray:
    """The key of every record (structured array of spec.dtype): one byte gather, then derived fields."""
    n = len(records)
    records = np.ascontiguousarray(records)
    keys = np.empty(n, dtype=spec.dtype)
    for width, kcols, rcols in spec.plan:
        kind = f"u{width}"
        dst = keys.view(kind).reshape(n, -1)
        if kcols[-1] - kcols[0] + 1 == len(kcols):          # key columns in one run: a slice
            dst = dst[:, kcols[0]:kcols[-1] + 1]
            kcols = slice(None)
        src = records.view(kind).reshape(n, -1)
        dst[:, kcols] = src[:, rcols]
    for name in spec.derived:
        if name == STAMP:
            keys[name] = bins.assign(flow_seconds(records, use_arrival))
        elif name == "_pad":
            keys[name] = 0
        else:
            host, mask = PRIMITIVES[name].columns[:2]
            keys[name] = net_addresses(records[host], records[mask], records["family"])
    if secs:
        for name in TIME_COLUMNS:
            if name in spec.dtype.names:
                keys[name] -= keys[name] % US
    return keys


def flow_seconds(records: np.ndarray, use_arrival: bool) -> np.ndarray:
    """The time a flow is binned by: its start (or arrival with time_new); arrival when the start is absent."""
    start = records["ts_arrival"] if use_arrival else records["ts_start"]
    if not use_arrival:
        start = np.where(start != 0, start, records["ts_arrival"])
    return start // US


def _hash_words(words: np.ndarray) -> np.ndarray:
    """64-bit hash of each row of uint64 words: a multiply-add of the words by odd constants (one
    row-wise pass, numpy's integer matmul, wrapping mod 2**64), then a murmur3 finaliser."""
    h = words @ _WORD_MULTS[:words.shape[1]]
    tmp = np.empty_like(h)
    for mult in (_MIX1, _MIX2):
        np.right_shift(h, np.uint64(33), out=tmp)
        h ^= tmp
        h *= mult
    np.right_shift(h, np.uint64(33), out=tmp)
    h ^= tmp
    return h


def group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(order, starts, collided): a permutation putting equal keys together, and where each group starts."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), False
    words = np.ascontiguousarray(keys).view(np.uint64).reshape(n, keys.dtype.itemsize // 8)
    h = words[:, 0] if words.shape[1] == 1 else _hash_words(words)
    order = np.argsort(h)
    hs = h.take(order)
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    np.not_equal(hs[1:], hs[:-1], out=brk[1:])
    collided = False
    if words.shape[1] > 1:
        dup = np.flatnonzero(~brk[1:]) + 1          # sorted positions whose hash equals the previous one
        if len(dup) and not np.array_equal(words.take(order.take(dup), axis=0),
                                           words.take(order.take(dup - 1), axis=0)):
            collided = True                         # equal hashes, different keys: group by the full words
            order = np.lexsort(words.T[::-1])
            ws = words.take(order, axis=0)
            brk[1:] = np.any(ws[1:] != ws[:-1], axis=1)
    return order, np.flatnonzero(brk), collided


def reduce(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Group equal keys and fold their counters: (unique keys, folded counts, collided).

    counts is (k, n) uint64: rows 0-2 packets, bytes, flows are summed; a 4th row (tcp flags) is OR-ed.
    """
    order, starts, collided = group(keys)
    if len(order) == 0:
        return keys[:0], counts[:, :0], False
    first = order.take(starts)
    if len(starts) == len(order):                   # all keys distinct: nothing to sum
        return keys.take(first), counts.take(first, axis=1), collided
    sums = np.empty((counts.shape[0], len(starts)), dtype=np.uint64)
    for i in range(counts.shape[0]):
        fold = np.add if i < 3 else np.bitwise_or
        sums[i] = fold.reduceat(counts[i].take(order), starts)
    return keys.take(first), sums, collided


@dataclass
class AggregatedRows:
    """What a purge hands to a writer: one row per group."""
    primitives: tuple[str, ...]     # key primitives (config order)
    keys: np.ndarray                # structured: record-named key columns, src_net/dst_net, family, _stamp
    packets: np.ndarray             # uint64
    bytes: np.ndarray               # uint64
    flows: np.ndarray               # uint64
    stamp_inserted: Optional[np.ndarray]    # int64 epoch seconds (history on), else None
    stamp_updated: int              # epoch seconds of the purge
    with_flows: bool = False        # FLOWS counter selected
    tcp_flags: Optional[np.ndarray] = None  # uint8, OR of the group's flags (tcpflags selected)

    def __len__(self) -> int:
        return len(self.keys)

    def column(self, primitive: str) -> np.ndarray:
        """The key column of a primitive (the masked address for src_net/dst_net)."""
        if primitive in OR_PRIMITIVES:
            return self.tcp_flags
        prim = PRIMITIVES[primitive]
        return self.keys[primitive if prim.derived == "net" else prim.columns[0]]

    def family(self) -> Optional[np.ndarray]:
        names = self.keys.dtype.names or ()
        return self.keys["family"] if "family" in names else None

    def take(self, index) -> "AggregatedRows":
        pick = lambda a: None if a is None else a[index]       # noqa: E731
        return replace(self, keys=self.keys[index], packets=self.packets[index], bytes=self.bytes[index],
                       flows=self.flows[index], stamp_inserted=pick(self.stamp_inserted),
                       tcp_flags=pick(self.tcp_flags))


class Aggregator:
    """Accumulates record batches into (key, bin) groups; purge() returns them and empties the table.

    Two ways to keep the groups, chosen by how many there are: up to HASH_TABLE_MAX_ROWS a hash
    table (keytable.KeyTable: one lookup per record, no sorting; fast while it fits in the CPU caches);
    beyond it the table spills into sorted partials: each batch is kept (grouped on arrival while that
    shrinks it) and the partials are merged by sorting when they outgrow the table (amortised
    O(n log n), sequential memory access).  The next interval starts in the mode the last one ended in.
    """

    def __init__(self, plugin: PluginConfig, core: CoreConfig, start_s: Optional[float] = None,
                 max_rows: Optional[int] = None) -> None:
        self.bins = TimeBins.create(plugin.history, plugin.history_secs, plugin.history_roundoff, start_s)
        self.spec = KeySpec.create(tuple(plugin.aggregate), self.bins.enabled)
        self.use_arrival = bool(core.time_new)
        self.secs = bool(plugin.timestamps_secs)
        self.max_rows = max_rows or max(1024, DEFAULT_TABLE_BYTES // (self.spec.dtype.itemsize + 24))
        self.collisions = 0             # batches with keys whose hash belongs to another key (grouped exactly)
        self._last_rows = 0             # groups of the last purge: sizes the next table, picks the mode
        self._reduce_batches = True     # sorted mode: group each batch on arrival (off while batches barely shrink)
        self._skipped_batches = 0
        self._clear()

    def _clear(self) -> None:
        hashed = self._last_rows <= HASH_TABLE_MAX_ROWS
        self._table = KeyTable(self.spec.dtype, self.spec.counters, self._last_rows) if hashed else None
        self._keys = np.zeros(0, dtype=self.spec.dtype)
        self._counts = np.zeros((self.spec.counters, 0), dtype=np.uint64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []     # partials (and collided rows) to merge
        self._pending_rows = 0
        self._pending_reduced = True    # every pending partial is grouped already

    @property
    def rows(self) -> int:
        """Groups in the table plus not yet merged partial groups (an upper bound of the groups)."""
        table = len(self._table) if self._table is not None else len(self._keys)
        return table + self._pending_rows

    @property
    def full(self) -> bool:
        """The table reached max_rows groups: time for an early purge."""
        return (len(self._table) if self._table is not None else len(self._keys)) >= self.max_rows

    def add(self, records: np.ndarray, now_s: Optional[float] = None) -> None:
        """Aggregate a batch of RECORD_DTYPE records."""
        n = len(records)
        if n == 0:
            return
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"expected RECORD_DTYPE records, got {records.dtype}")
        if self.bins.enabled:
            self.bins.advance(time.time() if now_s is None else now_s)
        for i in range(0, n, ADD_CHUNK):     # slices small enough for the CPU caches (keys, hashes, ids)
            self._add_chunk(records[i:i + ADD_CHUNK])

    def _add_chunk(self, records: np.ndarray) -> None:
        n = len(records)
        keys = build_keys(records, self.spec, self.bins, self.use_arrival, self.secs)
        names = ("packets", "bytes", "flows", "tcp_flags")[:self.spec.counters]
        if self._table is not None:
            self._add_hashed(keys, [records[name] for name in names])
            if len(self._table) > HASH_TABLE_MAX_ROWS:
                self._spill()
            return
        counts = np.empty((self.spec.counters, n), dtype=np.uint64)
        for i, name in enumerate(names):
            counts[i] = records[name]
        self._add_sorted(keys, counts)

    def _add_hashed(self, keys: np.ndarray, counts: list[np.ndarray]) -> None:
        words = keys.view(np.uint64).reshape(len(keys), self.spec.dtype.itemsize // 8)
        h = words[:, 0].copy() if words.shape[1] == 1 else _hash_words(words)
        ids, collided = self._table.index(keys, h)
        if collided is not None:            # set aside, grouped exactly at the purge
            self.collisions += 1
            side = np.empty((len(counts), int(collided.sum())), dtype=np.uint64)
            for i, column in enumerate(counts):
                side[i] = column[collided]
            side_keys, side, _ = reduce(keys[collided], side)
            self._pending.append((side_keys, side))
            self._pending_rows += len(side_keys)
            ok = ~collided
            ids, counts = ids[ok], [column[ok] for column in counts]
        self._table.accumulate(ids, counts)

    def _spill(self) -> None:
        """Too many groups for the hash table: continue with sorted partials."""
        keys, counts = self._table.rows()
        self._table = None
        self._pending.append((keys, counts.copy()))
        self._pending_rows += len(keys)
        self._compact()

    def _add_sorted(self, keys: np.ndarray, counts: np.ndarray) -> None:
        n = len(keys)
        if self._reduce_batches:
            keys, counts, collided = reduce(keys, counts)
            self.collisions += collided
            # high cardinality: per-batch grouping saves nothing, leave it to the merge
            self._reduce_batches = len(keys) < REDUCE_BATCH_RATIO * n
        else:
            self._pending_reduced = False
            self._skipped_batches += 1
            if self._skipped_batches % 64 == 0:     # look again now and then
                self._reduce_batches = True
        self._pending.append((keys, counts))
        self._pending_rows += len(keys)
        if self._pending_rows >= max(COMPACT_MIN_ROWS, len(self._keys)):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        if len(self._keys) == 0 and len(self._pending) == 1 and self._pending_reduced:   # already grouped
            (self._keys, self._counts), self._pending, self._pending_rows = self._pending[0], [], 0
            return
        keys = np.concatenate([self._keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self._counts] + [c for _, c in self._pending], axis=1)
        self._keys, self._counts, collided = reduce(keys, counts)
        self.collisions += collided
        self._pending, self._pending_rows, self._pending_reduced = [], 0, True

    def purge(self, now_us: Optional[int] = None) -> AggregatedRows:
        """Everything accumulated, one row per group; the table is emptied."""
        now_us = int(time.time() * US) if now_us is None else int(now_us)
        if self._table is not None:
            keys, counts = self._table.rows()
            self._keys, self._counts = keys, counts
            self._pending_reduced = False       # collided rows: grouped with the table, exactly
        self._compact()
        keys, counts = self._keys, self._counts
        self._last_rows = len(keys)
        self._clear()
        stamps = keys[STAMP].copy() if self.spec.history else None
        flags = counts[3].astype(np.uint8) if self.spec.or_flags else None
        return AggregatedRows(self.spec.primitives, keys, counts[0], counts[1], counts[2], stamps,
                              now_us // US, self.spec.with_flows, flags)
