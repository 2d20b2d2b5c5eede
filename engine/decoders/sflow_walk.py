"""Walk sFlow v5 structures of many datagrams at once, in lock-step, with numpy cursor arrays.

sFlow is a list of length-prefixed items inside length-prefixed items: a datagram
holds samples (type, length, body), a flow or counter sample holds records (type,
length, body).  Instead of one Python call per item, every datagram (or sample)
keeps a cursor; one iteration reads the item at every cursor still having items,
vectorised, and moves all cursors on.  Iterations = the largest item count, not
the number of items.

All reads are big-endian and bounds-checked: an item that does not fit in its
parent marks the parent as broken (the caller counts it) and stops its walk.
"""
from __future__ import annotations

import numpy as np

MAX_ITEMS = 4096        # more samples / records than this in one parent: treated as broken


def be32(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Big-endian uint32 at each position (positions must leave 4 bytes in buf; others give garbage)."""
    pos = np.minimum(pos, len(buf) - 4)
    if len(buf) < 4 or not buf.flags.c_contiguous:
        u = np.uint32
        return ((buf[pos].astype(u) << 24) | (buf[pos + 1].astype(u) << 16) | (buf[pos + 2].astype(u) << 8)
                | buf[pos + 3])
    if len(pos) and not (pos & 3).any():               # XDR fields of 4-aligned datagrams: aligned loads
        return buf[:len(buf) & ~3].view(np.uint32).take(pos >> 2).byteswap()
    return be_words(buf, ">u4")[pos].astype(np.uint32)


def be_words(buf: np.ndarray, dtype: str) -> np.ndarray:
    """A view of buf as big-endian words starting at every byte (element i: the word at offset i)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray((len(buf) - size + 1,), dtype=dtype, buffer=buf, strides=(1,))


def be64(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (be32(buf, pos).astype(np.uint64) << np.uint64(32)) | be32(buf, pos + 4).astype(np.uint64)


def gather_bytes(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """(n, width) bytes starting at each position (clipped at the end of buf)."""
    idx = np.minimum(pos[:, None] + np.arange(width), len(buf) - 1)
    return buf[idx]


def walk_items(buf: np.ndarray, start: np.ndarray, end: np.ndarray, count: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk `count` (type, length, body) items from `start` up to `end`, for every parent at once.

    Returns (parent index, body offset, type, body length) per item found, in parent order then
    item order, and a bool array per parent: True where an item overran its parent (broken).
    Items before the overrun are kept.
    """
    cur = start.astype(np.int64).copy()
    left = np.where(count <= MAX_ITEMS, count, 0).astype(np.int64)
    broken = count > MAX_ITEMS
    parents, bodies, types, lens, order = [], [], [], [], []
    step = 0
    active = np.flatnonzero(left > 0)
    while len(active):
        c = cur[active]
        fits = c + 8 <= end[active]
        typ = be32(buf, c)
        ln = be32(buf, c + 4).astype(np.int64)
        fits &= c + 8 + ln <= end[active]
        bad = active[~fits]
        broken[bad] = True
        left[bad] = 0
        ok = active[fits]
        parents.append(ok)
        bodies.append(c[fits] + 8)
        types.append(typ[fits])
        lens.append(ln[fits])
        order.append(np.full(len(ok), step, np.int64))
        cur[ok] = c[fits] + 8 + ln[fits]
        left[ok] -= 1
        step += 1
        active = ok[left[ok] > 0]
    if not parents:
        z = np.zeros(0, np.int64)
        return z, z, z.astype(np.uint32), z, broken
    p = np.concatenate(parents)
    o = np.concatenate(order)
    sort = np.lexsort((o, p))
    return p[sort], np.concatenate(bodies)[sort], np.concatenate(types)[sort], np.concatenate(lens)[sort], broken
