"""sflow_walk.walk_items against a plain Python walker, on random chains of (type, length, body) items:
good ones, overruns, lengths past the buffer, counts of zero or over MAX_ITEMS, parents at the buffer's end."""
from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings, strategies as st

from engine.decoders.sflow_walk import MAX_ITEMS, walk_items


def reference_walk(buf: bytes, start, end, count):
    """(parent, body, type, length) per item, parent order then item order; broken per parent."""
    items, broken = [], []
    for q, (c, e, n) in enumerate(zip(start, end, count)):
        bad = n > MAX_ITEMS
        for _ in range(0 if bad else n):
            if c + 8 > e:
                bad = True
                break
            kind, length = struct.unpack_from(">II", buf, c)
            if c + 8 + length > e:
                bad = True
                break
            items.append((q, c + 8, kind, length))
            c += 8 + length
        broken.append(bad)
    return items, broken


def walk(raw: bytes, start, end, count):
    """walk_items on plain lists, as (items, broken) in reference_walk's form."""
    p, body, types, lens, broken = walk_items(np.frombuffer(raw, np.uint8), np.array(start, np.int64),
                                              np.array(end, np.int64), np.array(count, np.int64))
    return list(zip(p.tolist(), body.tolist(), types.tolist(), lens.tolist())), broken.tolist()


@st.composite
def parents(draw):
    """A buffer of parents, each a chain of items (some lying about their length) and a claimed count."""
    chunks, start, end, count = [], [], [], []
    at = 0
    for _ in range(draw(st.integers(0, 40))):
        body = b""
        real = draw(st.integers(0, 6))
        for _ in range(real):
            size = draw(st.sampled_from([0, 4, 8, 12, 44]))
            length = size if draw(st.integers(0, 9)) else draw(st.sampled_from([size + 4, 1 << 20, 2**32 - 1]))
            body += struct.pack(">II", draw(st.integers(0, 5)), length) + bytes(size)
        claimed = draw(st.sampled_from([real, real, real, 0, real + 1, real + 3, MAX_ITEMS + 1]))
        cut = draw(st.sampled_from([0, 0, 0, 3, 9]))
        body = body[:max(0, len(body) - cut)]
        chunks.append(body)
        start.append(at)
        end.append(at + len(body))
        count.append(claimed)
        at += len(body)
    tail = draw(st.sampled_from([b"", b"\x00" * 3, b"\x00" * 64]))
    return b"".join(chunks) + tail, start, end, count


@settings(max_examples=300, deadline=None)
@given(parents())
def test_walk_items_finds_what_a_python_walker_finds(case):
    raw, start, end, count = case
    raw += b"\x00" * max(0, 8 - len(raw))
    assert walk(raw, start, end, count) == reference_walk(raw, start, end, count)


def test_walk_items_many_parents_of_many_items_in_lock_step():
    """Enough parents to walk in numpy steps (not the few-parent Python path), with uneven counts."""
    rng = np.random.default_rng(7)
    chunks, start, end, count, at = [], [], [], [], 0
    for q in range(300):
        n = int(rng.integers(0, 40))
        body = b"".join(struct.pack(">II", q, s) + bytes(s) for s in rng.integers(0, 20, n).tolist())
        if q % 50 == 7:                             # one item overruns its parent
            body = body[:-2] if body else body
        chunks.append(body)
        start.append(at)
        end.append(at + len(body))
        count.append(n)
        at += len(body)
    raw = b"".join(chunks) + bytes(16)
    assert walk(raw, start, end, count) == reference_walk(raw, start, end, count)
