"""Walk sFlow v5 structures of many datagrams at once, in lock-step, with numpy cursor arrays.

sFlow is a list of length-prefixed items inside length-prefixed items: a datagram
holds samples (type, length, body), a flow or counter sample holds records (type,
length, body).  Instead of one Python call per item, every datagram (or sample)
keeps a cursor; one iteration reads the item at every cursor still having items,
vectorised, and moves all cursors on.  Iterations = the largest item count, not
the number of items.  Parents are ordered by item count, so the ones still walking
are always a prefix (no compaction per step); the last few parents of a long walk
finish item by item in Python, cheaper than a numpy step each.

All reads are big-endian and bounds-checked: an item that does not fit in its
parent marks the parent as broken (the caller counts it) and stops its walk.
"""
from __future__ import annotations

import struct

import numpy as np

MAX_ITEMS = 4096        # more samples / records than this in one parent: treated as broken
FEW_PARENTS = 12        # parents left walking at or below which a Python loop beats a numpy step


def be32(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Big-endian uint32 at each position (positions must leave 4 bytes in buf; others give garbage)."""
    pos = np.minimum(pos, len(buf) - 4)
    if len(buf) < 4 or not buf.flags.c_contiguous:
        u = np.uint32
        return ((buf[pos].astype(u) << 24) | (buf[pos + 1].astype(u) << 16) | (buf[pos + 2].astype(u) << 8)
                | buf[pos + 3])
    if len(pos) and not (pos & 3).any():               # XDR fields of 4-aligned datagrams: aligned loads
        return buf[:len(buf) & ~3].view(np.uint32).take(pos >> 2).byteswap()
    return byte_words(buf, 4)[pos].view(">u4").astype(np.uint32)


def byte_words(buf: np.ndarray, size: int) -> np.ndarray:
    """A view of buf (len(buf) >= size) as opaque `size`-byte items starting at every byte (item i: the
    bytes at offset i): a fancy index on it copies whole items, where one on a '>u4' view of every byte
    offset would convert element by element, several times slower."""
    dtype = _OPAQUE.get(size)
    if dtype is None:
        dtype = _OPAQUE[size] = np.dtype((np.void, size))
    return np.ndarray((len(buf) - size + 1,), dtype=dtype, buffer=np.ascontiguousarray(buf), strides=(1,))


_OPAQUE: dict[int, np.dtype] = {}


def gather_bytes(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """(n, width) bytes starting at each position (clipped at the end of buf)."""
    if len(buf) >= width and len(pos):
        inside = np.minimum(pos, len(buf) - width)
        out = byte_words(buf, width)[inside].view(np.uint8).reshape(len(pos), width)
        tail = np.flatnonzero(inside != pos)
        if len(tail):                               # rows running past the end: clipped byte by byte
            out[tail] = buf[np.minimum(pos[tail][:, None] + np.arange(width), len(buf) - 1)]
        return out
    return buf[np.minimum(pos[:, None] + np.arange(width), len(buf) - 1)]


def column(rows: np.ndarray, at: int, dtype) -> np.ndarray:
    """The `dtype` value at byte `at` of every row of an (n, w) uint8 array with contiguous rows (a gather_bytes
    window): a strided view, no copy."""
    return rows[:, at:at + np.dtype(dtype).itemsize].view(dtype)[:, 0]


def walk_items(buf: np.ndarray, start: np.ndarray, end: np.ndarray, count: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk `count` (type, length, body) items from `start` up to `end`, for every parent at once.

    Returns (parent index, body offset, type, body length) per item found, in parent order then
    item order, and a bool array per parent: True where an item overran its parent (broken).
    Items before the overrun are kept.
    """
    broken = count > MAX_ITEMS
    walking = np.flatnonzero((count > 0) & ~broken)
    near_end = end[walking] > len(buf) - 8          # an item head read there could pass the end of buf
    by_python = walking[near_end]
    walking = walking[~near_end]
    # the walking parents by item count, most first: at step s the parents still walking are a prefix
    walking = walking[np.argsort(-count[walking], kind="stable")]
    cur, stop, left = start[walking].astype(np.int64), end[walking], count[walking].astype(np.int64)
    walking_at = _walking_per_step(left)
    parents, bodies, heads_read, sizes = [], [], [], []
    step = 0
    k = walking_at[0] if walking_at else 0
    if k > FEW_PARENTS:
        heads = byte_words(buf, 8)
    while k > FEW_PARENTS:
        c = cur[:k]
        head = heads[c].view(">u4")                         # type, length of every item
        body = c + 8
        nxt = head[1::2] + body
        fits = nxt <= stop[:k]                              # lengths are unsigned: body <= nxt
        if np.count_nonzero(fits) < k:                      # overruns: those parents stop here, broken
            broken[walking[:k][~fits]] = True
            keep = np.flatnonzero(fits)                     # (the parents after k are done: dropped too)
            head, nxt, body = head.reshape(k, 2)[keep].ravel(), nxt[keep], body[keep]
            walking, cur, stop, left = walking[keep], cur[keep], stop[keep], left[keep]
            walking_at = [0] * (step + 1) + _walking_per_step(left - step)[1:]
            k = len(keep)
        parents.append(walking[:k])
        bodies.append(body)
        heads_read.append(head)
        sizes.append(k)
        cur[:k] = nxt
        step += 1
        k = walking_at[step] if step < len(walking_at) else 0
    item_index = [np.repeat(np.arange(len(sizes)), sizes)]
    for few in ((walking[:k], cur[:k], stop[:k], left[:k] - step, step),       # the last few: item by item
                (by_python, start[by_python], end[by_python], count[by_python], 0)):
        if len(few[0]):
            p, body, head, index = _walk_few(buf, *few, broken)
            parents.append(p)
            bodies.append(body)
            heads_read.append(head)
            item_index.append(index)
    if not parents:
        z = np.zeros(0, np.int64)
        return z, z, z.astype(np.uint32), z, broken
    p = np.concatenate(parents)
    head = np.concatenate(heads_read)
    types, lens = head[0::2].astype(np.uint32), head[1::2].astype(np.int64)
    body = np.concatenate(bodies)
    item_index = np.concatenate(item_index)
    if not item_index.any() and not (np.diff(p) < 0).any():     # one item per parent, in parent order
        return p, body, types, lens, broken
    # item j of parent q goes to (items of the parents before q) + j
    found = np.bincount(p, minlength=len(count))
    order = np.empty(len(p), np.int64)
    order[(np.cumsum(found) - found)[p] + item_index] = np.arange(len(p))
    return p[order], body[order], types[order], lens[order], broken


def _walk_few(buf, parents, cur, stop, left, first_index: int, broken):
    """The rest of the walk of a few parents (from item first_index on), one item at a time: (parent, body
    offset, type and length as big-endian words, item index) per item found; marks overrunning parents
    broken."""
    found_p, found_body, found_head, found_index = [], [], [], []
    view = memoryview(np.ascontiguousarray(buf))
    for q, c, e, n in zip(parents.tolist(), cur.tolist(), stop.tolist(), left.tolist()):
        for j in range(first_index, first_index + n):
            if c + 8 > e:
                broken[q] = True
                break
            length = _U32.unpack_from(view, c + 4)[0]
            if c + 8 + length > e:
                broken[q] = True
                break
            found_p.append(q)
            found_body.append(c + 8)
            found_head.append(bytes(view[c:c + 8]))
            found_index.append(j)
            c += 8 + length
    head = np.frombuffer(b"".join(found_head), ">u4")
    return (np.array(found_p, np.int64), np.array(found_body, np.int64), head, np.array(found_index, np.int64))


_U32 = struct.Struct(">I")


def _walking_per_step(left: np.ndarray) -> list[int]:
    """How many parents still walk at each step, for item counts sorted most first."""
    if not len(left):
        return []
    return (len(left) - np.cumsum(np.bincount(left))[:-1]).tolist()


def last_per_parent(parent: np.ndarray) -> np.ndarray:
    """Mask of the last item of each parent (items sorted by parent): where a later item of a parent
    overwrites what an earlier one set, only the last needs decoding."""
    last = np.ones(len(parent), bool)
    last[:-1] = parent[1:] != parent[:-1]
    return last
