"""Vectorised aggregation of canonical records by the plugin's `aggregate` primitives.

A batch becomes a packed structured array of keys (the selected columns, one
fixed-size copy per run of key bytes adjacent in the record, see copy_runs; the
derived networks; the address family where rendering needs it; the history
bin), viewed as 64-bit words and hashed to 64 bits (a multiply-add of the words
plus a finaliser, _hash_words).

Groups live in a hash table (keytable.KeyTable: one probe per record, counters
added with ufunc.at) while there are at most HASH_TABLE_MAX_ROWS of them;
beyond that (a table that no longer fits the CPU caches) they move to a spill
buffer (spill_buffer.SpillBuffer): batches of (key words, counters, hashes),
folded on arrival while that shrinks them, are appended after the groups, and
when they outgrow the groups (at least COMPACT_MIN_ROWS) everything is folded
in place (grouping.fold_in_place, amortised O(n log n)): one in-place sort of
the hashes with the row number packed into their low bits (numpy's SIMD sort;
no argsort), a check that rows with equal hash bits hold identical keys (else
those runs are regrouped exactly by their words), then every group's other
rows are added into its first row and the first rows move to the front.  Rows
stay in the order their keys first arrived.  Keys whose hash belongs to
another key in the hash table are set aside and grouped exactly at the purge.
Counters are exact uint64.  A fold of a million groups stalls the plugin for
~0.1 s (more on a busy box) while the shards keep writing its rings, so once
a fold is due (`compaction_due`) the plugin loop runs it when its rings are
nearly empty (`compact_if_due`): the stall then has a whole ring of headroom.
Past COMPACT_SLACK_ROWS more rows add() folds at once whatever the rings hold.

Memory: the spill buffer holds (key bytes + 8 x counters + 8) per row, for
up to twice as many rows as groups (at least COMPACT_MIN_ROWS more), and a
fold needs ~17 bytes a row more.  The
table is capped at `max_rows` groups (default: what fits in
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
from .grouping import fold, sorted_groups
from .keytable import EMPTY, KeyTable
from .spill_buffer import SpillBuffer
from .timebins import US, TimeBins

COUNTER_PRIMITIVES = ("flows",)        # `aggregate: flows` adds the FLOWS counter, it is not a key
IGNORED_PRIMITIVES = ("none",)          # `aggregate: none`: one grand total (per bin)
OR_PRIMITIVES = ("tcpflags",)           # nfacctd ORs tcp flags over an aggregate instead of keying on them
ADDRESS_PRIMITIVES = ("src_host", "dst_host", "src_net", "dst_net", "peer_dst_ip")   # rendered by flow family
TIME_COLUMNS = ("ts_start", "ts_end", "ts_arrival")     # truncated to seconds with timestamps_secs
STAMP = "_stamp"
DEFAULT_TABLE_BYTES = 512 * 1024 * 1024
COMPACT_MIN_ROWS = 1 << 20            # the spill buffer is folded when its unfolded rows reach this many
COMPACT_SLACK_ROWS = 1 << 18            # ... a due fold waits at most this many rows more for the rings to empty
REDUCE_BATCH_RATIO = 0.7                # keep grouping batches on arrival while they shrink below this
HASH_TABLE_MAX_ROWS = 1 << 16           # beyond: the spill buffer (a bigger hash table misses the caches)
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
    beyond it a spill buffer (spill_buffer.SpillBuffer): each batch is appended (folded on arrival while
    that shrinks it) and the buffer is folded in place when the appended rows outgrow its groups
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
        self._reduce_batches = True     # spill mode: fold each batch on arrival (off while batches barely shrink)
        self._skipped_batches = 0
        self._clear()

    def _clear(self) -> None:
        hashed = self._last_rows <= HASH_TABLE_MAX_ROWS
        room = max(self._last_rows, HASH_TABLE_MIN_ROWS)
        self._table = KeyTable(self.spec.dtype, self.spec.counters, room) if hashed else None
        self._buffer: Optional[SpillBuffer] = None     # groups past the table (and rows it set aside)

    @property
    def rows(self) -> int:
        """Groups in the table plus rows in the spill buffer (an upper bound of the groups)."""
        table = len(self._table) if self._table is not None else 0
        return table + (len(self._buffer) if self._buffer is not None else 0)

    @property
    def full(self) -> bool:
        """The table reached max_rows groups: time for an early purge."""
        return self._groups >= self.max_rows

    @property
    def _groups(self) -> int:
        if self._table is not None:
            return len(self._table)
        return self._buffer.folded if self._buffer is not None else 0

    @property
    def buffer(self) -> SpillBuffer:
        """The spill buffer, mapped on first use: room for the most rows the aggregator holds (max_rows
        groups, as many appended rows before a fold, a chunk)."""
        if self._buffer is None:
            width = self.spec.dtype.itemsize // 8
            room = 2 * max(self.max_rows, COMPACT_MIN_ROWS) + COMPACT_SLACK_ROWS + 2 * ADD_CHUNK
            self._buffer = SpillBuffer(width, self.spec.counters, room)
        return self._buffer

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
            self.buffer.append(*side)
            ok = ~collided
            ids, columns = ids[ok], [column[ok] for column in columns]
        self._table.accumulate(ids, columns)

    def _spill(self) -> None:
        """Too many groups for the hash table: continue with the spill buffer."""
        self._table_to_buffer()
        self._compact()

    def _table_to_buffer(self) -> None:
        """The hash table's groups into the spill buffer (grouped exactly with any collided rows set aside)."""
        keys, counts = self._table.rows()
        self.buffer.append(key_words(keys), counts, self._table.hashes[:len(keys)])
        self._table = None

    def _add_sorted(self, words: np.ndarray, counts: np.ndarray, h: np.ndarray) -> None:
        n = len(words)
        if self._reduce_batches:
            words, counts, h, collided = fold(words, counts, h)
            self.collisions += collided
            # high cardinality: per-batch folding saves nothing, leave it to the merge
            self._reduce_batches = len(words) < REDUCE_BATCH_RATIO * n
        else:
            self._skipped_batches += 1
            if self._skipped_batches % 64 == 0:     # look again now and then
                self._reduce_batches = True
        self.buffer.append(words, counts, h)
        if self.buffer.pending >= self._fold_threshold() + COMPACT_SLACK_ROWS:
            self._compact()

    def _fold_threshold(self) -> int:
        """Unfolded rows past which a fold is due: as many as the groups, at least COMPACT_MIN_ROWS."""
        return max(COMPACT_MIN_ROWS, self._buffer.folded if self._buffer is not None else 0)

    @property
    def compaction_due(self) -> bool:
        """The spill buffer's unfolded rows outgrew its groups: a fold should run soon."""
        return self._buffer is not None and self._buffer.pending >= self._fold_threshold()

    def compact_if_due(self) -> bool:
        """Run a due fold now (the plugin loop's choice of moment: its rings nearly empty); True if it ran."""
        if not self.compaction_due:
            return False
        self._compact()
        return True

    def _compact(self) -> None:
        if self._buffer is not None:
            self.collisions += self._buffer.compact()

    def purge(self, now_us: Optional[int] = None) -> AggregatedRows:
        """Everything accumulated, one row per group; the table is emptied."""
        now_us = int(time.time() * US) if now_us is None else int(now_us)
        if self._table is not None and self._buffer is None:   # the table's rows as they are
            keys, counts = self._table.rows()
        else:
            if self._table is not None:         # collided rows set aside: grouped with the table, exactly
                self._table_to_buffer()
            self._compact()
            keys = self._buffer.words.view(self.spec.dtype).reshape(len(self._buffer))
            counts = self._buffer.counts
        self._last_rows = len(keys)
        self._clear()
        stamps = keys[STAMP].copy() if self.spec.history else None
        flags = counts[3].astype(np.uint8) if self.spec.or_flags else None
        return AggregatedRows(self.spec.primitives, keys, counts[0], counts[1], counts[2], stamps,
                              now_us // US, self.spec.with_flows, flags)
