"""pre_tag_filter / pre_tag2_filter / pre_tag_label_filter: which tagged records a plugin receives.

    tf = parse_tag_filter("0,10-20,-15")      # raises ValueError
    mask = tag_filter_mask(tf, records["tag"])

A tag filter is a comma list of values `N`, ranges `A-B`, and negations `-N` / `-A-B`: a record passes
when it matches no negation and, if the list has positive items, at least one of them (0 is untagged).
A label filter is a comma list of labels, `null` for unlabelled records, `-label` for negation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..schema import LABEL_BYTES

_ITEM = re.compile(r"(-?)([0-9]{1,20})(?:-([0-9]{1,20}))?")


@dataclass(frozen=True)
class TagFilter:
    include: tuple[tuple[int, int], ...]      # ranges [low, high]
    exclude: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class LabelFilter:
    include: tuple[bytes, ...]                # b"" is `null` (unlabelled)
    exclude: tuple[bytes, ...]


def parse_tag_filter(text: str) -> TagFilter:
    include, exclude = [], []
    for raw in text.split(","):
        item = raw.strip()
        m = _ITEM.fullmatch(item)
        if not m:
            raise ValueError(f"bad tag filter item {item!r} in {text!r} (expected N, A-B, -N or -A-B)")
        low = int(m.group(2))
        high = int(m.group(3)) if m.group(3) else low
        if high >= 1 << 64 or low > high:
            raise ValueError(f"bad tag filter item {item!r} in {text!r}")
        (exclude if m.group(1) else include).append((low, high))
    return TagFilter(tuple(include), tuple(exclude))


def parse_label_filter(text: str) -> LabelFilter:
    include, exclude = [], []
    for raw in text.split(","):
        item = raw.strip()
        negated = item.startswith("-")
        name = item[1:] if negated else item
        if not name:
            raise ValueError(f"bad label filter item {item!r} in {text!r}")
        value = b"" if name == "null" else name.encode("utf-8")
        if len(value) > LABEL_BYTES:
            raise ValueError(f"label {name!r} is longer than {LABEL_BYTES} bytes")
        (exclude if negated else include).append(value)
    return LabelFilter(tuple(include), tuple(exclude))


def _in_ranges(values: np.ndarray, ranges) -> np.ndarray:
    out = np.zeros(len(values), dtype=bool)
    for low, high in ranges:
        out |= (values >= np.uint64(low)) & (values <= np.uint64(high))
    return out


def tag_filter_mask(tf: TagFilter, tags: np.ndarray) -> np.ndarray:
    ok = _in_ranges(tags, tf.include) if tf.include else np.ones(len(tags), dtype=bool)
    return ok & ~_in_ranges(tags, tf.exclude)


def label_filter_mask(lf: LabelFilter, labels: np.ndarray) -> np.ndarray:
    def hits(names) -> np.ndarray:
        out = np.zeros(len(labels), dtype=bool)
        for name in names:
            out |= np.all(labels == np.frombuffer(name.ljust(LABEL_BYTES, b"\0"), np.uint8), axis=1)
        return out
    ok = hits(lf.include) if lf.include else np.ones(len(labels), dtype=bool)
    return ok & ~hits(lf.exclude)
