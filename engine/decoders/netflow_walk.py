"""The structural walk of NetFlow v9 / IPFIX packets, vectorised over a whole batch.

Headers of every packet are read at once (numpy gathers at offset + k); the
sets are then walked in rounds: round k reads the set header of every packet
still walking, at its cursor, and advances the cursors by the set lengths.
The walk depends on the bytes only (never on templates), so it can run before
anything is looked up.

A packet is *regular* when its header is well-formed and its walk ended
cleanly (out of bytes, or v9's flowset count reached) within MAX_ROUNDS sets.
Everything else (a malformed set, zero padding, a lying length, very many
sets) is left to the per-packet Python walk, which counts it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ie import gather_records

V9_HEADER_LEN, IPFIX_HEADER_LEN = 20, 16
MAX_ROUNDS = 8              # packets with more sets take the Python walk (bounded work per round)
NO_LIMIT = 1 << 40


def be16(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (buf[pos].astype(np.int64) << 8) | buf[pos + 1]


def be32(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (be16(buf, pos) << 16) | be16(buf, pos + 2)


@dataclass
class PacketHeaders:
    """Per packet of the batch (arrays of len n); fields are 0 where `ok` is False."""
    ok: np.ndarray          # bool: header well-formed
    version: np.ndarray     # 9 or 10
    uptime: np.ndarray      # v9 sysUptime ms (0 for IPFIX)
    secs: np.ndarray        # v9 unix secs / IPFIX export time
    seq: np.ndarray
    domain: np.ndarray      # v9 source id / IPFIX observation domain
    sets_limit: np.ndarray  # v9: max(count, 1) flowsets are walked (as nfacctd); IPFIX: no limit
    end: np.ndarray         # absolute end of the sets (v9: the packet; IPFIX: the message length)


@dataclass
class SetRows:
    """Every set of the regular packets, in packet order then position."""
    packet: np.ndarray      # int64 index of the packet in the batch
    start: np.ndarray       # int64 absolute offset of the set body in the buffer
    length: np.ndarray      # int64 body length (set length - 4)
    set_id: np.ndarray      # int64


_HEADER16 = np.dtype([("version", ">u2"), ("w2", ">u2"), ("w4", ">u4"), ("w8", ">u4"), ("w12", ">u4")])


def read_headers(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, version: np.ndarray) -> PacketHeaders:
    is9 = version == 9
    ok = np.where(is9, lengths >= V9_HEADER_LEN, lengths >= IPFIX_HEADER_LEN)
    z = np.zeros(len(offsets), np.int64)
    if not ok.any():
        return PacketHeaders(ok, version, z, z, z, z, z, z)
    o = np.where(ok, offsets, offsets[ok][0])              # every gathered position holds a whole header
    raw = gather_records(buf, o, np.ones(len(o), np.int64), _HEADER16)
    w2, w4, w8, w12 = (raw[f].astype(np.int64) for f in ("w2", "w4", "w8", "w12"))
    w16 = np.zeros(len(o), np.int64)
    v9 = np.flatnonzero(is9 & ok)                           # only v9 headers have 20 bytes
    if len(v9):
        w16[v9] = be32(buf, o[v9] + 16)
    ok &= is9 | ((w2 >= IPFIX_HEADER_LEN) & (w2 <= lengths))            # IPFIX message length
    h = PacketHeaders(ok, version, np.where(is9, w4, 0), np.where(is9, w8, w4), np.where(is9, w12, w8),
                      np.where(is9, w16, w12), np.where(is9, np.maximum(w2, 1), NO_LIMIT),
                      offsets + np.where(is9, lengths, w2))
    for name in ("uptime", "secs", "seq", "domain", "sets_limit", "end"):
        setattr(h, name, np.where(ok, getattr(h, name), 0))
    return h


def walk_sets(buf: np.ndarray, offsets: np.ndarray, h: PacketHeaders) -> tuple[SetRows, np.ndarray]:
    """(sets of the regular packets, regular mask per packet)."""
    pos = offsets + np.where(h.version == 9, V9_HEADER_LEN, IPFIX_HEADER_LEN)
    end, left = h.end, h.sets_limit.copy()
    regular = h.ok.copy()
    act = np.flatnonzero(regular & (end - pos >= 4))
    parts = []
    for _ in range(MAX_ROUNDS):
        if not len(act):
            break
        p = pos[act]
        set_id, set_len = be16(buf, p), be16(buf, p + 2)
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
    if not parts:
        e = np.zeros(0, np.int64)
        return SetRows(e, e, e, e), regular
    cols = [np.concatenate([part[k] for part in parts]) for k in range(4)]
    keep = regular[cols[0]]
    cols = [c[keep] for c in cols]
    order = np.argsort(cols[0], kind="stable")              # rounds → packet order, position within
    return SetRows(*(c[order] for c in cols)), regular


def unique_exporters(exporters: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """(distinct exporter addresses, index of each packet's exporter among them)."""
    exporters = np.ascontiguousarray(exporters, dtype=np.uint8)
    n = len(exporters)
    if n == 0:
        return [], np.zeros(0, np.int64)
    words = exporters.view("<u8").reshape(n, 2)
    if (words == words[0]).all():
        return [exporters[0].tobytes()], np.zeros(n, np.int64)
    mixed = (words[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ words[:, 1]       # one uint64 per address
    _, first, inv = np.unique(mixed, return_index=True, return_inverse=True)
    inv = inv.ravel().astype(np.int64)
    if (words[first][inv] == words).all():                                    # no two addresses collided
        return [exporters[i].tobytes() for i in first.tolist()], inv
    uniq, inv = np.unique(exporters.view(np.dtype((np.void, 16))).ravel(), return_inverse=True)
    return [bytes(u) for u in uniq.tolist()], inv.ravel().astype(np.int64)
