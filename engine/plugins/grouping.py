"""Exact grouping of rows of key words by their 64-bit hashes, vectorised.

sorted_groups() orders rows so equal keys are adjacent: one in-place sort of the
hashes with the row number packed into their low bits (numpy's SIMD sort; no
argsort), then a check that rows with equal hash bits hold identical keys (else
those runs are regrouped exactly by their words).  fold() keeps one row per
group in first-arrival order (a boolean compress, no random gather of keys);
fold_in_place() does the same inside the arrays it is given (the aggregator's
spill buffer), with no copy of them.  Counters are exact uint64:
rows 0-2 (packets, bytes, flows) are summed, a 4th (tcp flags) is OR-ed.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


SUMMED_COUNTERS = 3          # counter rows 0-2 (packets, bytes, flows) are summed; row 3 (tcp flags) is OR-ed


def counter_ufunc(row: int) -> np.ufunc:
    """How counter row `row` of a group combines: np.add for packets, bytes, flows; np.bitwise_or for tcp flags."""
    return np.add if row < SUMMED_COUNTERS else np.bitwise_or


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
    keep, into, src, collided = _merges(words, h)
    if keep is None:                                # all keys distinct
        return words, counts, h, collided
    target = (np.cumsum(keep) - 1).take(into)       # the output row of each merged row's group
    out_counts = np.empty((counts.shape[0], int(np.count_nonzero(keep))), dtype=np.uint64)
    for i in range(counts.shape[0]):
        out_counts[i] = counts[i].compress(keep)
        counter_ufunc(i).at(out_counts[i], target, counts[i].take(src))
    out_words = words.view(f"V{words.shape[1] * 8}").reshape(n).compress(keep)   # one item per row: faster
    return out_words.view(np.uint64).reshape(len(out_words), words.shape[1]), out_counts, h.compress(keep), collided


def fold_in_place(words: np.ndarray, counts: np.ndarray, h: np.ndarray) -> tuple[int, bool]:
    """fold() without the copies: each group's other rows are added into its first row, then the first
    rows are moved to the front of words (n, w), counts (k, n) and h (n,), in arrival order.  Returns
    (groups, collided); the arrays' first `groups` rows are the result.  Extra memory: the sort's ~17
    bytes a row and one chunk of rows."""
    n = len(h)
    if n <= 1:
        return n, False
    keep, into, src, collided = _merges(words, h)
    if keep is None:                                # all keys distinct
        return n, collided
    for i in range(counts.shape[0]):
        counter_ufunc(i).at(counts[i], into, counts[i].take(src))
    del into, src
    width = words.shape[1]
    groups = compress_in_place(words.view(f"V{width * 8}").reshape(n), keep)
    for i in range(counts.shape[0]):
        compress_in_place(counts[i], keep)
    compress_in_place(h, keep)
    return groups, collided


def _merges(words: np.ndarray, h: np.ndarray
            ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray], bool]:
    """(keep, into, src, collided): True at each group's first row (arrival order); the groups' other rows
    `src` and the first row `into` of each one's group.  keep is None when every key is distinct."""
    order, brk, collided = sorted_groups(words, h)
    if brk.all():
        return None, None, None, collided
    starts = np.flatnonzero(brk)
    rest = np.flatnonzero(~brk)                     # sorted positions of the groups' other rows
    into = order.take(starts.take(np.cumsum(brk).take(rest) - 1))
    keep = np.zeros(len(h), dtype=bool)
    keep[order.take(starts)] = True
    return keep, into, order.take(rest), collided


COMPRESS_CHUNK = 1 << 16


def compress_in_place(a: np.ndarray, keep: np.ndarray) -> int:
    """Move the kept items of a 1-D array to its front, in order, one chunk's copy at a time (a kept
    item never moves past an unread one); returns how many were kept."""
    out = 0
    for start in range(0, len(a), COMPRESS_CHUNK):
        kept = a[start:start + COMPRESS_CHUNK].compress(keep[start:start + COMPRESS_CHUNK])
        a[out:out + len(kept)] = kept
        out += len(kept)
    return out
