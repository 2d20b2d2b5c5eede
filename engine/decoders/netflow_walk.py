"""The structural walk of NetFlow v9 / IPFIX packets, vectorised over a whole batch.

Headers of every packet are read at once (one gather of 24 bytes per packet: the
header and, in the same bytes, the first set header); the sets are then walked
in rounds: round k reads the set header of every packet still walking, at its
cursor, and advances the cursors by the set lengths.  Round 1 comes with the
header gather, so a batch of one-set packets costs no further gather.  The walk
depends on the bytes only (never on templates), so it runs before any lookup.

A packet is *regular* when its header is well-formed and its walk ended
cleanly (out of bytes, or v9's flowset count reached) within MAX_ROUNDS sets.
Everything else (a malformed set, zero padding, a lying length, very many
sets) is left to the per-packet Python walk, which counts it exactly.

Exporters are numbered once per batch (ExporterTable): every later step works
on small integer ids, and record writes take each address as two 8-byte words.
The numbering of recent batches is kept (KnownExporters, in the DecoderState):
a batch from known IPv4-mapped exporters is numbered by one searchsorted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

V9_HEADER_LEN, IPFIX_HEADER_LEN = 20, 16
HEADER_WINDOW = 24          # bytes read at every packet start: the v9 header and the first set header
MAX_ROUNDS = 8              # packets with more sets take the Python walk (bounded work per round)
FEW_EXPORTERS = 8           # number_exporters compares against each one's first packet; more: a sort
KNOWN_EXPORTERS = 32        # exporters remembered across batches (KnownExporters)
NO_LIMIT = 1 << 40


def be32_at(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The big-endian 32-bit word at each position (positions + 4 <= len(buf)), as int64: one gather."""
    every_byte = np.ndarray(shape=(len(buf) - 3,), dtype=">u4", buffer=buf, strides=(1,))
    return every_byte[pos].astype(np.int64)


def readable_headers(buf: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The buffer, zero-padded when a packet starts less than HEADER_WINDOW bytes before its end (rare)."""
    if len(offsets) and int(offsets.max()) + HEADER_WINDOW <= len(buf):
        return buf
    return np.concatenate([np.asarray(buf, np.uint8), np.zeros(HEADER_WINDOW, np.uint8)])


# -- exporters ----------------------------------------------------------------------------------

class ExporterTable:
    """Exporter addresses numbered 0..k-1 (bytes ↔ id); `words`: each as two native uint64 (k, 2)."""

    def __init__(self, keys=(), words: Optional[np.ndarray] = None) -> None:
        self.keys: list[bytes] = list(keys)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self._words = words

    def id_of(self, key: bytes) -> int:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.keys)
            self.keys.append(key)
            self._words = None
        return i

    @property
    def words(self) -> np.ndarray:
        if self._words is None or len(self._words) != len(self.keys):
            self._words = np.frombuffer(b"".join(self.keys), dtype="<u8").reshape(len(self.keys), 2)
        return self._words


class KnownExporters:
    """The IPv4-mapped exporters of recent batches, numbered in the order of their second address word
    (which alone tells them apart): a batch of known exporters is numbered by one searchsorted."""

    def __init__(self) -> None:
        self.sorted: Optional[np.ndarray] = None     # uint64 second words, ascending; table ids follow them
        self.table = ExporterTable()

    def number(self, key: np.ndarray) -> Optional[np.ndarray]:
        """Each packet's id in self.table, or None when an exporter is new."""
        if self.sorted is None:
            return None
        ids = np.searchsorted(self.sorted, key)
        np.minimum(ids, len(self.sorted) - 1, out=ids)
        return ids if (self.sorted[ids] == key).all() else None

    def learn(self, batch: ExporterTable) -> None:
        """Add a batch's exporters (all IPv4-mapped); start again from them past KNOWN_EXPORTERS."""
        keys = set(batch.keys) | (set(self.table.keys) if len(self.table.keys) + len(batch.keys) <= KNOWN_EXPORTERS
                                  else set())
        ordered = sorted(keys, key=lambda k: int.from_bytes(k[8:], "little"))
        self.table = ExporterTable(ordered)
        self.sorted = self.table.words[:, 1].copy()


def number_exporters(exporters: np.ndarray,
                     known: Optional[KnownExporters] = None) -> tuple[ExporterTable, np.ndarray]:
    """(exporters, id of each packet's exporter in it): known ones by one searchsorted, else no sort for up
    to FEW_EXPORTERS.  The table may hold exporters of earlier batches too (known.table).

    IPv4-mapped addresses differ in their second word only, which is then the exact key; other
    addresses are hashed to one word and checked afterwards (an exact unique on a collision).
    """
    exporters = np.ascontiguousarray(exporters, dtype=np.uint8)
    n = len(exporters)
    if n == 0:
        return ExporterTable(), np.zeros(0, np.int64)
    words = exporters.view("<u8").reshape(n, 2)
    hashed = bool(words[:, 0].any())
    key = (words[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ words[:, 1] if hashed else words[:, 1]
    if known is not None and not hashed:
        ids = known.number(key)
        if ids is not None:
            return known.table, ids
    ids = np.zeros(n, np.int64)
    first = [0]
    todo = key != key[0]
    while todo.any():                          # one pass per further exporter: compare against its first packet
        if len(first) == FEW_EXPORTERS:
            _, first_at, ids = np.unique(key, return_index=True, return_inverse=True)
            first, ids = first_at.tolist(), ids.ravel().astype(np.int64)
            break
        i = int(todo.argmax())
        same = key == key[i]
        ids[same] = len(first)
        first.append(i)
        todo[same] = False
    if hashed and not (words[first][ids] == words).all():                     # a collision
        uniq, ids = np.unique(exporters.view(np.dtype((np.void, 16))).ravel(), return_inverse=True)
        return ExporterTable([bytes(u) for u in uniq.tolist()]), ids.ravel().astype(np.int64)
    table = ExporterTable([exporters[i].tobytes() for i in first], words[first])
    if known is not None and not hashed:
        known.learn(table)
        return known.table, known.number(key)
    return table, ids


# -- headers and sets ---------------------------------------------------------------------------

@dataclass
class PacketHeaders:
    """Per packet of the batch (arrays of len n); fields are 0 where `ok` is False."""
    ok: np.ndarray          # bool: header well-formed
    version: np.ndarray     # 9 or 10
    uptime: np.ndarray      # v9 sysUptime ms (0 for IPFIX)
    secs: np.ndarray        # v9 unix secs / IPFIX export time
    seq: np.ndarray
    domain: np.ndarray      # v9 source id / IPFIX observation domain
    count: np.ndarray       # v9: the header's count (max(count, 1) flowsets are walked, as nfacctd); IPFIX: length
    end: np.ndarray         # absolute end of the sets (v9: the packet; IPFIX: the message length)
    first_set: Optional[np.ndarray] = None      # the 4 bytes after the header (first set id << 16 | length)
    only: int = 0           # 9 or 10 when every packet has that version, else 0
    all_ok: bool = False    # every header is well-formed


@dataclass
class SetRows:
    """Every set of the regular packets, in packet order then position."""
    packet: np.ndarray      # int64 index of the packet in the batch
    start: np.ndarray       # int64 absolute offset of the set body in the buffer
    length: np.ndarray      # int64 body length (set length - 4)
    set_id: np.ndarray      # int64
    one_per_packet: bool = False    # set i is packet i's only set (every packet has exactly one)


_WINDOW = np.dtype((np.void, HEADER_WINDOW))
_BE32 = np.dtype(">u4")


def read_headers(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, version: np.ndarray,
                 only: int = 0) -> PacketHeaders:
    """Every header at once; the buffer must hold HEADER_WINDOW bytes from every offset (readable_headers).

    only: 9 or 10 when the caller knows every packet has that version."""
    n = len(offsets)
    every_byte = np.ndarray((len(buf) - HEADER_WINDOW + 1,), _WINDOW, buf, 0, (1,))
    # the window as six big-endian 32-bit words: version|count (v9) or length (IPFIX), then w4 .. w20
    words = np.ndarray((n, 6), _BE32, every_byte[offsets]).astype(np.int64)
    w2 = words[:, 0] & 0xFFFF
    w4, w8, w12, w16, w20 = (words[:, i] for i in range(1, 6))
    if not only:
        v0 = int(version[0]) if n else 0
        only = v0 if v0 in (9, 10) and (version == v0).all() else 0
    if only == 9:
        ok = lengths >= V9_HEADER_LEN
        h = PacketHeaders(ok, version, w4, w8, w12, w16, w2, offsets + lengths, w20, 9)
    elif only == 10:
        ok = (lengths >= IPFIX_HEADER_LEN) & (w2 >= IPFIX_HEADER_LEN) & (w2 <= lengths)
        h = PacketHeaders(ok, version, np.zeros(n, np.int64), w4, w8, w12, w2, offsets + w2, w16, 10)
    else:
        is9 = version == 9
        ok = np.where(is9, lengths >= V9_HEADER_LEN,
                      (lengths >= IPFIX_HEADER_LEN) & (w2 >= IPFIX_HEADER_LEN) & (w2 <= lengths))
        h = PacketHeaders(ok, version, np.where(is9, w4, 0), np.where(is9, w8, w4), np.where(is9, w12, w8),
                          np.where(is9, w16, w12), w2, offsets + np.where(is9, lengths, w2), np.where(is9, w20, w16))
    h.all_ok = bool(ok.all())
    if not h.all_ok:
        for name in ("uptime", "secs", "seq", "domain", "count", "end"):
            setattr(h, name, np.where(ok, getattr(h, name), 0))
    return h


def walk_sets(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
              h: PacketHeaders) -> tuple[SetRows, np.ndarray]:
    """(sets of the regular packets, regular mask per packet)."""
    # round 1: the set header read with the packet header
    set_id, set_len = h.first_set >> 16, h.first_set & 0xFFFF
    if h.all_ok and h.only:     # the usual batch: every packet is one set that ends where the packet ends
        hlen = V9_HEADER_LEN if h.only == 9 else IPFIX_HEADER_LEN
        one_set = set_len == (lengths if h.only == 9 else h.count) - hlen
        if one_set.all() and int(set_len.min()) >= 4:
            return SetRows(np.arange(len(offsets)), offsets + (hlen + 4), set_len - 4, set_id, True), one_set
    pos = offsets + (V9_HEADER_LEN if h.only == 9 else IPFIX_HEADER_LEN if h.only == 10 else
                     np.where(h.version == 9, V9_HEADER_LEN, IPFIX_HEADER_LEN))
    end = h.end
    after = pos + set_len
    regular = h.ok.copy()
    walking = regular & (end - pos >= 4)
    bad = walking & ((set_len < 4) | (after > end))
    good = walking & ~bad
    sets_limit = (np.maximum(h.count, 1) if h.only == 9 else NO_LIMIT if h.only == 10 else
                  np.where(h.version == 9, np.maximum(h.count, 1), NO_LIMIT))
    more = good & (end - after >= 4) & (sets_limit != 1)
    if not more.any():
        if bad.any():
            regular &= ~bad
        if good.all():
            return SetRows(np.arange(len(pos)), pos + 4, set_len - 4, set_id, True), regular
        sel = good.nonzero()[0]
        return SetRows(sel, pos[sel] + 4, set_len[sel] - 4, set_id[sel]), regular
    regular &= ~bad
    act = good.nonzero()[0]
    parts = [(act, pos[act] + 4, set_len[act] - 4, set_id[act])]
    pos = np.where(good, after, pos)
    left = (sets_limit - 1) + np.zeros(len(pos), np.int64)
    act = more.nonzero()[0]
    for _ in range(MAX_ROUNDS - 1):
        if not len(act):
            break
        p = pos[act]
        word = be32_at(buf, p)
        set_id, set_len = word >> 16, word & 0xFFFF
        bad = (set_len < 4) | (p + set_len > end[act])
        if bad.any():
            regular[act[bad]] = False
            good = ~bad
            act, p, set_id, set_len = act[good], p[good], set_id[good], set_len[good]
        parts.append((act, p + 4, set_len - 4, set_id))
        pos[act] = p + set_len
        left[act] -= 1
        act = act[(end[act] - pos[act] >= 4) & (left[act] != 0)]
    regular[act] = False                                     # still walking: the Python walk takes it
    cols = [np.concatenate([part[k] for part in parts]) for k in range(4)]
    keep = regular[cols[0]]
    cols = [c[keep] for c in cols]
    order = np.argsort(cols[0], kind="stable")              # rounds → packet order, position within
    return SetRows(*(c[order] for c in cols)), regular

