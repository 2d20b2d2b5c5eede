"""Vectorised aggregation of canonical records by the plugin's `aggregate` primitives.

A batch becomes a packed structured array of keys (the selected columns, one
fixed-size copy per run of key bytes adjacent in the record, see copy_runs; the
derived networks; the address family where rendering needs it; the history
bin), viewed as 64-bit words and hashed to 64 bits (a multiply-add of the words
plus a finaliser, _hash_words).

Groups live in a hash table (keytable.KeyTable: one probe per record, counters
added with ufunc.at) while there are at most HASH_TABLE_MAX_ROWS of them; beyond
that (a table that no longer fits the CPU caches) they spill into partials of
(key words, counters, hashes), merged when they outgrow the table (amortised
O(n log n)) by fold(): one in-place sort of the hashes with the row number
packed into their low bits (numpy's SIMD sort; no argsort), a check that rows
with equal hash bits hold identical keys (else those runs are regrouped
exactly by their words), then the first row of every group is kept in place
(a boolean compress, no random gather of keys) and the group's other rows are
added into it.  Rows stay in the order their keys first arrived.  Keys whose
hash belongs to another key in the hash table are set aside and grouped
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
from .keytable import EMPTY, KeyTable
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
HASH_TABLE_MIN_ROWS = 1 << 14           # a new hash table's room (rows), without a hint from the last purge
SPILL_NEW_SHARE = 0.5                   # a full table spills early when a batch brings this share of new keys
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
    derived: tuple[str, ...]        # key fields computed rather than copied
    or_flags: bool                  # tcpflags selected: OR-ed over the group, not part of the key
    runs: tuple                     # copy_runs(dtype): how build_keys copies record bytes

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
        fields.sort(key=_alignment_rank)            # aligned fields first: runs copied as plain ints (_item_type)
        width = sum(np.dtype([f]).itemsize for f in fields)
        pad = (-width) % 8 if width else 8
        if pad:
            fields.append(("_pad", "u1", (pad,)))
        dtype = np.dtype(fields)
        derived = tuple(name for name in dtype.names if name not in RECORD_DTYPE.names)
        return cls(tuple(prims), "flows" in aggregate, dtype, history, derived,
                   any(p in OR_PRIMITIVES for p in prims), copy_runs(dtype))


def _alignment_rank(field: tuple) -> int:
    """Sort rank of a key field: power-of-two sizes largest first, then the others (MACs, labels)."""
    size = np.dtype([field]).itemsize
    return -min(size, 16) if size & (size - 1) == 0 else 1


def copy_runs(dtype: np.dtype) -> tuple[tuple[int, int, int], ...]:
    """(key offset, record offset, size) of the copied key fields, fields adjacent in both merged into one
    run (the five-tuple's three addresses are one 48-byte run)."""
    spans = sorted((dtype.fields[name][1], RECORD_DTYPE.fields[name][1], dtype.fields[name][0].itemsize)
                   for name in dtype.names if name in RECORD_DTYPE.names)
    runs: list[tuple[int, int, int]] = []
    for koff, roff, size in spans:
        if runs and sum(runs[-1][::2]) == koff and sum(runs[-1][1:]) == roff:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + size)
        else:
            runs.append((koff, roff, size))
    return tuple(runs)


def _item_type(koff: int, roff: int, size: int) -> str:
    """The numpy type that copies one run as one item per row (an unsigned int where aligned)."""
    if size in (1, 2, 4, 8) and koff % size == 0 and roff % size == 0:
        return f"u{size}"
    return f"V{size}"


def build_keys(records: np.ndarray, spec: KeySpec, bins: Optional[TimeBins], use_arrival: bool,
               secs: bool) -> np.ndarray:
    """The key of every record (structured array of spec.dtype): one copy per run of key bytes (a
    fixed-size item per row, ~2x faster than fancy-indexing columns), then derived fields."""
    n = len(records)
    records = np.ascontiguousarray(records)
    keys = np.zeros(n, dtype=spec.dtype)
    dst = keys.view(np.uint8).reshape(n, spec.dtype.itemsize)
    src = records.view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
    for koff, roff, size in spec.runs:
        item = _item_type(koff, roff, size)
        dst[:, koff:koff + size].view(item)[:, 0] = src[:, roff:roff + size].view(item)[:, 0]
    for name in spec.derived:
        if name == STAMP:
            keys[name] = bins.assign(flow_seconds(records, use_arrival))
        elif name == "_pad":
            continue
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


def key_words(keys: np.ndarray) -> np.ndarray:
    """Structured keys (itemsize a multiple of 8) as (n, words) uint64 (a view when contiguous)."""
    return np.ascontiguousarray(keys).view(np.uint64).reshape(len(keys), keys.dtype.itemsize // 8)


def sorted_groups(words: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(order, breaks, collided): a permutation putting equal keys together (each group's rows in their
    original order), True where a group starts in that order, and whether equal hashes held different keys.

    One in-place sort of the hashes with the row number in their low bits (numpy's SIMD sort, ~4x faster
    than argsort); runs of equal hash bits are checked row against row, and a run holding different keys
    is regrouped exactly by its words."""
    n = len(h)
    bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = h & ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.intp)
    packed >>= np.uint64(bits)
    brk = np.empty(n, dtype=bool)
    brk[:1] = True
    np.not_equal(packed[1:], packed[:-1], out=brk[1:])
    same = np.flatnonzero(~brk)                     # sorted positions whose hash bits equal the previous one
    if len(same) == 0:
        return order, brk, False
    differ = _rows_differ(words, order.take(same), order.take(same - 1))
    if not differ.any():
        return order, brk, False
    _regroup_runs(words, order, brk, same[differ])
    return order, brk, True


def _rows_differ(words: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether rows a[i] and b[i] of words differ."""
    diff = words.take(a, axis=0)
    diff ^= words.take(b, axis=0)
    acc = diff[:, 0].copy()
    for j in range(1, diff.shape[1]):
        acc |= diff[:, j]
    return acc != 0


def _regroup_runs(words: np.ndarray, order: np.ndarray, brk: np.ndarray, bad: np.ndarray) -> None:
    """Slow path, in place: the runs of equal hash bits holding `bad` positions (keys unlike the previous
    row) are sorted by their key words (stable) and broken where the words change."""
    starts = np.flatnonzero(brk)
    runs = np.unique(np.searchsorted(starts, bad, side="right") - 1)
    lo, sizes = starts[runs], np.diff(np.append(starts, len(brk)))[runs]
    run = np.repeat(np.arange(len(runs)), sizes)
    pos = np.arange(len(run)) + np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)     # the runs' positions
    rows = order[pos]
    sub = words.take(rows, axis=0)
    perm = np.lexsort(tuple(sub.T[::-1]) + (run,))
    order[pos] = rows[perm]
    sub = sub[perm]
    new = np.ones(len(pos), dtype=bool)
    new[1:] = (run[1:] != run[:-1]) | np.any(sub[1:] != sub[:-1], axis=1)
    brk[pos] = new


def fold(words: np.ndarray, counts: np.ndarray, h: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Group equal keys: (words, counts, hashes) of one row per group, in the order the keys first
    appear, and whether equal hashes held different keys.

    words (n, w) uint64, counts (k, n) uint64 (rows 0-2 packets, bytes, flows summed; a 4th, tcp flags,
    OR-ed), h (n,) hashes.  The first row of each group stays where it is (boolean compress: sequential);
    only the other rows of a group are gathered and added into it."""
    n = len(h)
    if n <= 1:
        return words, counts, h, False
    words = np.ascontiguousarray(words)
    order, brk, collided = sorted_groups(words, h)
    if brk.all():                                   # all keys distinct
        return words, counts, h, collided
    starts = np.flatnonzero(brk)
    keep = np.zeros(n, dtype=bool)
    keep[order.take(starts)] = True                 # each group's first row
    rest = np.flatnonzero(~brk)                     # sorted positions of the other rows
    first_of_rest = order.take(starts.take(np.cumsum(brk).take(rest) - 1))
    target = (np.cumsum(keep) - 1).take(first_of_rest)     # their group's row in the output
    src = order.take(rest)
    out_counts = np.empty((counts.shape[0], len(starts)), dtype=np.uint64)
    for i in range(counts.shape[0]):
        out_counts[i] = counts[i].compress(keep)
        (np.add if i < 3 else np.bitwise_or).at(out_counts[i], target, counts[i].take(src))
    out_words = words.view(f"V{words.shape[1] * 8}").reshape(n).compress(keep)   # one item per row: faster
    return out_words.view(np.uint64).reshape(len(starts), words.shape[1]), out_counts, h.compress(keep), collided


def group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(order, starts, collided): a permutation putting equal keys together, and where each group starts."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), False
    words = key_words(keys)
    order, brk, collided = sorted_groups(words, _hash_words(words))
    return order, np.flatnonzero(brk), collided


def reduce(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Group equal keys and fold their counters: (unique keys, folded counts, collided).

    counts is (k, n) uint64: rows 0-2 packets, bytes, flows are summed; a 4th row (tcp flags) is OR-ed.
    """
    if len(keys) == 0:
        return keys[:0], counts[:, :0], False
    words = key_words(keys)
    words, counts, _, collided = fold(words, counts, _hash_words(words))
    return words.view(keys.dtype).reshape(len(words)), counts, collided


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
    beyond it the table spills into partials (key words, counters, hashes): each batch is kept (folded on
    arrival while that shrinks it) and the partials are folded together when they outgrow the table
    (amortised O(n log n), sequential memory access).  The next interval starts in the mode the last
    one ended in.
    """

    def __init__(self, plugin: PluginConfig, core: CoreConfig, start_s: Optional[float] = None,
                 max_rows: Optional[int] = None) -> None:
        self.bins = TimeBins.create(plugin.history, plugin.history_secs, plugin.history_roundoff, start_s)
        self.spec = KeySpec.create(tuple(plugin.aggregate), self.bins.enabled)
        self.use_arrival = bool(core.time_new)
        self.secs = bool(plugin.timestamps_secs)
        self.max_rows = max_rows or max(1024, DEFAULT_TABLE_BYTES // (self.spec.dtype.itemsize + 32))
        self.collisions = 0             # batches with keys whose hash belongs to another key (grouped exactly)
        self._last_rows = 0             # groups of the last purge: sizes the next table, picks the mode
        self._reduce_batches = True     # sorted mode: fold each batch on arrival (off while batches barely shrink)
        self._skipped_batches = 0
        self._clear()

    def _clear(self) -> None:
        hashed = self._last_rows <= HASH_TABLE_MAX_ROWS
        width = self.spec.dtype.itemsize // 8
        room = max(self._last_rows, HASH_TABLE_MIN_ROWS)
        self._table = KeyTable(self.spec.dtype, self.spec.counters, room) if hashed else None
        self._words = np.zeros((0, width), dtype=np.uint64)        # sorted mode: the folded groups
        self._counts = np.zeros((self.spec.counters, 0), dtype=np.uint64)
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []    # partials (and collided rows)
        self._pending_rows = 0
        self._pending_reduced = True    # every pending partial is folded already

    @property
    def rows(self) -> int:
        """Groups in the table plus not yet merged partial groups (an upper bound of the groups)."""
        table = len(self._table) if self._table is not None else len(self._words)
        return table + self._pending_rows

    @property
    def full(self) -> bool:
        """The table reached max_rows groups: time for an early purge."""
        return (len(self._table) if self._table is not None else len(self._words)) >= self.max_rows

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
        words = keys.view(np.uint64).reshape(n, self.spec.dtype.itemsize // 8)
        h = _hash_words(words)
        columns = [records[name] for name in ("packets", "bytes", "flows", "tcp_flags")[:self.spec.counters]]
        if self._table is not None:
            ids = self._table.find(h)
            new = int(np.count_nonzero(ids == EMPTY))
            if new > SPILL_NEW_SHARE * n and len(self._table) + new > self._table.capacity:
                self._spill()               # high cardinality: growing the table costs more than sorting
            else:
                self._add_hashed(keys, words, h, columns, ids)
                if len(self._table) > HASH_TABLE_MAX_ROWS:
                    self._spill()
                return
        counts = np.empty((self.spec.counters, n), dtype=np.uint64)
        for i, column in enumerate(columns):
            counts[i] = column
        self._add_sorted(words, counts, h)

    def _add_hashed(self, keys: np.ndarray, words: np.ndarray, h: np.ndarray, columns: list[np.ndarray],
                    ids: np.ndarray) -> None:
        ids, collided = self._table.index(keys, h, ids)
        if collided is not None:            # set aside, grouped exactly at the purge
            self.collisions += 1
            side_counts = np.array([column[collided] for column in columns], dtype=np.uint64)
            side = fold(words[collided], side_counts, h[collided])[:3]
            self._pending.append(side)
            self._pending_rows += len(side[0])
            ok = ~collided
            ids, columns = ids[ok], [column[ok] for column in columns]
        self._table.accumulate(ids, columns)

    def _spill(self) -> None:
        """Too many groups for the hash table: continue with sorted partials."""
        keys, counts = self._table.rows()
        hashes = self._table.hashes[:len(keys)].copy()
        self._table = None
        self._pending.append((key_words(keys), counts.copy(), hashes))
        self._pending_rows += len(keys)
        self._compact()

    def _add_sorted(self, words: np.ndarray, counts: np.ndarray, h: np.ndarray) -> None:
        n = len(words)
        if self._reduce_batches:
            words, counts, h, collided = fold(words, counts, h)
            self.collisions += collided
            # high cardinality: per-batch folding saves nothing, leave it to the merge
            self._reduce_batches = len(words) < REDUCE_BATCH_RATIO * n
        else:
            self._pending_reduced = False
            self._skipped_batches += 1
            if self._skipped_batches % 64 == 0:     # look again now and then
                self._reduce_batches = True
        self._pending.append((words, counts, h))
        self._pending_rows += len(words)
        if self._pending_rows >= max(COMPACT_MIN_ROWS, len(self._words)):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        if len(self._words) == 0 and len(self._pending) == 1 and self._pending_reduced:    # already folded
            (self._words, self._counts, self._hashes), self._pending, self._pending_rows = self._pending[0], [], 0
            return
        words = np.concatenate([self._words] + [w for w, _, _ in self._pending])
        counts = np.concatenate([self._counts] + [c for _, c, _ in self._pending], axis=1)
        hashes = np.concatenate([self._hashes] + [h for _, _, h in self._pending])
        self._pending, self._pending_rows, self._pending_reduced = [], 0, True
        self._words, self._counts, self._hashes, collided = fold(words, counts, hashes)
        self.collisions += collided

    def purge(self, now_us: Optional[int] = None) -> AggregatedRows:
        """Everything accumulated, one row per group; the table is emptied."""
        now_us = int(time.time() * US) if now_us is None else int(now_us)
        if self._table is not None:
            keys, counts = self._table.rows()
            self._words, self._counts = key_words(keys), counts
            self._hashes = self._table.hashes[:len(keys)]
            self._pending_reduced = False       # collided rows: grouped with the table, exactly
        self._compact()
        keys = np.ascontiguousarray(self._words).view(self.spec.dtype).reshape(len(self._words))
        counts = self._counts
        self._last_rows = len(keys)
        self._clear()
        stamps = keys[STAMP].copy() if self.spec.history else None
        flags = counts[3].astype(np.uint8) if self.spec.or_flags else None
        return AggregatedRows(self.spec.primitives, keys, counts[0], counts[1], counts[2], stamps,
                              now_us // US, self.spec.with_flows, flags)
