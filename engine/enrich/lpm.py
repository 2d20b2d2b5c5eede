"""Vectorised longest-prefix match over 16-byte addresses (IPv4 stored IPv4-mapped).

A prefix set is flattened once, at load, into disjoint address intervals: the sorted interval
starts plus, per interval, the index of the longest prefix covering it (-1: none).  A lookup is then
one np.searchsorted per family over a whole batch: IPv4 as uint32, IPv6 as 16-byte strings (numpy
compares fixed-width bytes lexicographically, i.e. as 128-bit big-endian numbers).  No Python per
record or per address.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IntervalTable:
    """One family's flattened prefix set: starts[i] begins an interval owned by prefix owner[i] (-1: none)."""
    starts: np.ndarray          # uint32 (IPv4) or S16 (IPv6), sorted, starts[0] == 0
    owner: np.ndarray           # int64

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Index of the longest prefix containing each key, -1 where none does."""
        if len(self.starts) == 1 or len(keys) == 0:
            return np.full(len(keys), self.owner[0], dtype=np.int64)
        return self.owner[np.searchsorted(self.starts, keys, side="right") - 1]


def build_table(prefixes: list[tuple[int, int]], width: int) -> IntervalTable:
    """prefixes: (network as int, length) in a `width`-bit space; a later duplicate wins over an earlier one."""
    top = 1 << width
    spans = [(net, net + (1 << (width - plen)), plen) for net, plen in prefixes]
    points = sorted({0, *(s for s, _, _ in spans), *(e for _, e, _ in spans if e < top)})
    owner = np.full(len(points), -1, dtype=np.int64)
    starts = _encode(points, width)
    order = sorted(range(len(spans)), key=lambda i: (spans[i][2], i))      # shorter first: longer overwrite
    for i in order:
        s, e, _ = spans[i]
        lo = int(np.searchsorted(starts, _encode([s], width)[0]))
        hi = len(points) if e >= top else int(np.searchsorted(starts, _encode([e], width)[0]))
        owner[lo:hi] = i
    return IntervalTable(starts, owner)


def _encode(values: list[int], width: int) -> np.ndarray:
    if width == 32:
        return np.array(values, dtype=np.uint32)
    return np.array([v.to_bytes(16, "big") for v in values], dtype="S16")


def ipv4_keys(addr16: np.ndarray) -> np.ndarray:
    """(n, 16) IPv4-mapped addresses -> uint32 host order values of the IPv4 part."""
    return np.ascontiguousarray(addr16[:, 12:16]).view(">u4").ravel().astype(np.uint32)


def ipv6_keys(addr16: np.ndarray) -> np.ndarray:
    """(n, 16) addresses -> S16 keys comparing as 128-bit big-endian numbers."""
    return np.ascontiguousarray(addr16).view("S16").ravel()
