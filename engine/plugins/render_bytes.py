"""Aggregated rows -> output lines as one text block, built as byte matrices (no Python per row).

Every column becomes an (n, k) uint64 matrix holding its text, 8 bytes a word,
padded with NUL bytes (numbers right-aligned with leading NULs from 4-digit
tables, dotted quads compact from 16-bit octet-pair tables, lookup-table texts
NUL-padded on the right).  A line is the columns and the constant pieces
between them (separators, JSON keys) side by side: each column is cut to the
bytes some row uses and copied into its place in one (n, width) uint8 matrix
over a template row of the constants, one fixed-width item per row (a "V<w>"
copy, not byte by byte); the block is that matrix's bytes with the NULs
dropped (bytes.translate, or bytes.replace when constants dominate: both in
C) -- bytes, written to files as they are.  Texts are the ones render.py
produces (same decisions, same tables); a column whose text could itself hold
a NUL byte (labels) makes the caller fall back to render.py.

Measured on 885k "five" rows (v9, loaded 2-core box, µs/row): CSV 0.45, JSON
0.72 (were 1.0 and 1.9 with word-wide columns and separators, a str result;
1.7-2.3 and 2.2-2.9 with per-row %-templates).
"""
from __future__ import annotations

import socket
from typing import Optional, Sequence, Union

import numpy as np

from ..schema import FIELD_BY_NAME, PRIMITIVES
from .aggregate import AggregatedRows
from .render import _DEC, _PROTO_TEXT, RenderOptions, _date_text, address_forms
from .timebins import US

Piece = Union[bytes, np.ndarray]


class NotRenderable(Exception):
    """A value this renderer cannot produce exactly (the caller uses render.py's per-row path)."""


def text_matrix(texts: Sequence[str]) -> np.ndarray:
    """Texts -> (k, w) uint64 words of NUL-padded UTF-8 (one encode per text: for distinct values only)."""
    encoded = [t.encode("utf-8") for t in texts]
    if any(b"\0" in e or b"\n" in e for e in encoded):
        raise NotRenderable("NUL or newline in a text")
    width = max([8] + [len(e) for e in encoded])
    arr = np.array(encoded, dtype=f"S{-(-width // 8) * 8}")
    return arr.view(np.uint64).reshape(len(texts), arr.dtype.itemsize // 8)


def words(mat: np.ndarray) -> np.ndarray:
    """(n, w) uint8 -> (n, ceil(w/8)) uint64, NUL-padded."""
    n, w = mat.shape
    out = np.zeros((n, -(-w // 8) * 8), np.uint8)
    out[:, :w] = mat
    return out.view(np.uint64)


_HEX_COLON = np.frombuffer(b"".join(f"{i:02x}:".encode() for i in range(256)), np.uint8).reshape(256, 3)
_DEC_M = text_matrix(_DEC.tolist())              # 0..255 decimal, (256, 1) words
_PROTO_M = text_matrix(_PROTO_TEXT.tolist())
_DEC16_M: Optional[np.ndarray] = None            # 0..65535 decimal, built on first use


def by_unique(values: np.ndarray, texts_for) -> np.ndarray:
    """Words of texts, one conversion per distinct value (values 1-D, or rows of bytes)."""
    if len(values) == 0:
        return np.zeros((0, 1), np.uint64)
    if values.ndim > 1:
        values = np.ascontiguousarray(values).view(f"V{values.shape[1]}").ravel()
    uniq, inverse = np.unique(values, return_inverse=True)
    return text_matrix(list(texts_for(uniq))).take(inverse.ravel(), axis=0)


def _digit_table(lead: bool, zero: bytes) -> np.ndarray:
    """0..9999 as 4 bytes of text, uint32: zero-padded, or (lead) right-aligned with leading NULs and
    `zero` for 0."""
    texts = [str(i).rjust(4, "\0").encode() if lead else f"{i:04d}".encode() for i in range(10000)]
    texts[0] = zero.rjust(4, b"\0") if lead else texts[0]
    return np.frombuffer(b"".join(texts), np.uint32).copy()


_PAD4 = _digit_table(False, b"")
# index g + 10000 * (more digits above this group): the group's text without, then with, leading zeros
_HIGH4 = np.concatenate([_digit_table(True, b""), _PAD4])       # a group above the lowest: 0 is no text
_LOW4 = np.concatenate([_digit_table(True, b"0"), _PAD4])       # the lowest group: 0 is "0"
_TEN4 = np.uint64(10000)


def decimal(values: np.ndarray) -> np.ndarray:
    """Unsigned integers -> decimal text words (leading NULs): groups of 4 digits from tables."""
    global _DEC16_M
    values = np.asarray(values)
    if values.dtype.kind == "i":
        if len(values) and values.min() < 0:
            raise NotRenderable("negative number")
        values = values.astype(np.uint64)
    if values.dtype.itemsize == 1:
        return _DEC_M.take(values, axis=0)
    if values.dtype.itemsize == 2:
        if _DEC16_M is None:
            _DEC16_M = decimal(np.arange(65536, dtype=np.uint32))
        return _DEC16_M.take(values, axis=0)
    rest = values.astype(np.uint64, copy=False)
    groups = -(-len(str(int(rest.max()))) // 4) if len(rest) else 1
    out = np.zeros((len(rest), groups + groups % 2), np.uint32)     # whole words; a spare group stays NUL
    for j in range(groups):                     # j-th lowest group of 4 digits
        if j == groups - 1:
            out[:, -1 - j] = (_LOW4 if j == 0 else _HIGH4).take(rest)
            break
        above = rest // _TEN4
        index = rest - above * _TEN4
        index += (above != 0) * _TEN4
        out[:, -1 - j] = (_LOW4 if j == 0 else _HIGH4).take(index)
        rest = above
    return out.view(np.uint64)


def _pair_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every 16-bit pair of octets (a | b << 8): "a.b." and "a.b" as compact little-endian text words,
    and 8 x the length of "a.b." (built on first use: 1.1 MB)."""
    global _PAIRS
    if _PAIRS is None:
        digits = [str(i).encode() for i in range(256)]
        text = np.array([int.from_bytes(d, "little") for d in digits], np.uint64)
        bits = np.array([8 * len(d) for d in digits], np.uint64)
        a, b = np.arange(65536) & 255, np.arange(65536) >> 8
        dot = np.uint64(ord("."))
        pair = text[a] | (dot << bits[a]) | (text[b] << (bits[a] + np.uint64(8)))        # "a.b"
        head_bits = bits[a] + bits[b] + np.uint64(16)
        _PAIRS = (pair | (dot << (head_bits - np.uint64(8))), pair, head_bits)
    return _PAIRS


_PAIRS: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None


def dotted(addr4: np.ndarray) -> np.ndarray:
    """(n, 4) uint8 -> dotted quads, compact text in (n, 2) words: "a.b." and "c.d" from 16-bit pair
    tables, the second shifted in behind the first (one NUL run per address, cheap to drop)."""
    heads, tails, head_bits = _pair_tables()
    pairs = (addr4 if addr4.strides[-1] == 1 else np.ascontiguousarray(addr4)).view("<u2")
    first = pairs[:, 0].astype(np.intp)
    shift = head_bits.take(first)
    tail = tails.take(pairs[:, 1])
    out = np.empty((len(pairs), 2), np.uint64)
    np.bitwise_or(heads.take(first), np.left_shift(tail, shift), out=out[:, 0])
    np.right_shift(tail, np.uint64(64) - shift, out=out[:, 1])
    return out


def _ipv6(addr16: np.ndarray) -> np.ndarray:
    return by_unique(addr16, lambda uniq: [socket.inet_ntop(socket.AF_INET6, bytes(v)) for v in uniq])


def address(addr16: np.ndarray, as_v4: np.ndarray, as_v6: np.ndarray, absent: str) -> np.ndarray:
    """Addresses as render._address_text prints them: dotted, IPv6 text, or `absent`."""
    if as_v4.all():
        return dotted(addr16[:, 12:])
    six = _ipv6(addr16[as_v6]) if as_v6.any() else np.zeros((0, 1), np.uint64)
    absent_w = text_matrix([absent])
    out = np.zeros((len(addr16), max(2, six.shape[1], absent_w.shape[1])), np.uint64)
    out[:, :absent_w.shape[1]] = absent_w
    if as_v4.any():
        out[as_v4] = 0
        out[as_v4, :2] = dotted(addr16[as_v4, 12:])
    if len(six):
        out[as_v6] = 0
        out[as_v6, :six.shape[1]] = six
    return out


def mac(values: np.ndarray) -> np.ndarray:
    """(n, 6) uint8 -> "aa:bb:cc:dd:ee:ff" (3 words)."""
    out = np.zeros((len(values), 24), np.uint8)
    for i in range(6):
        out[:, 3 * i:3 * i + 3] = _HEX_COLON.take(values[:, i], axis=0)
    out[:, 17] = 0                               # no colon after the last byte
    return out.view(np.uint64)


def timestamp(us: np.ndarray, opts: RenderOptions) -> np.ndarray:
    us = np.asarray(us, dtype=np.int64)
    if opts.secs:
        us = us - us % US
    secs, frac = np.divmod(us, US)
    head = decimal(secs) if opts.since_epoch else by_unique(secs, lambda u: _date_text(u, opts.utc))
    high, low = np.divmod(frac, 10000)
    frac7 = ((_PAD4.take(high) >> np.uint32(16)).astype(np.uint64) << np.uint64(8)) | np.uint64(ord("."))
    frac7 |= _PAD4.take(low).astype(np.uint64) << np.uint64(24)       # ".uuuuuu"
    return np.concatenate([head, frac7[:, None]], axis=1)


def stamp(seconds: np.ndarray, opts: RenderOptions) -> np.ndarray:
    seconds = np.asarray(seconds, dtype=np.int64)
    if opts.since_epoch:
        return decimal(seconds)
    return by_unique(seconds, lambda u: _date_text(u, opts.utc))


def primitive(rows: AggregatedRows, name: str, opts: RenderOptions) -> np.ndarray:
    """One primitive's text words, as render.primitive_values prints it."""
    prim = PRIMITIVES[name]
    values = rows.column(name)
    kind = "addr" if prim.derived == "net" else FIELD_BY_NAME[prim.columns[0]].kind
    if kind == "addr":
        as_v4, as_v6 = address_forms(rows, name)
        return address(values, as_v4, as_v6, opts.absent_addr)
    if kind == "mac":
        return mac(values)
    if kind == "proto":
        return (_DEC_M if opts.num_protos else _PROTO_M).take(np.asarray(values, np.uint8), axis=0)
    if kind == "etype":
        return by_unique(np.asarray(values, np.uint16), lambda u: [format(v, "x") for v in u.tolist()])
    if kind == "time":
        return timestamp(values, opts)
    if kind == "label":
        return by_unique(values, lambda u: [bytes(v).rstrip(b"\0").decode("utf-8", "replace") for v in u])
    return decimal(values)


def block(pieces: list[Piece], n: int) -> str:
    """Lines of n rows from constant pieces and (n, k) word matrices, each line ending in a newline."""
    return block_bytes(pieces, n).decode("utf-8")


def block_bytes(pieces: list[Piece], n: int) -> bytes:
    """block() as UTF-8 bytes: the columns, cut to the bytes some row uses, copied into one
    (n, width) matrix over a template row of the constants; NULs dropped."""
    if n == 0:
        return b""
    template = bytearray()
    columns = []                            # (offset in the line, column bytes as one item per row)
    for p in pieces + [b"\n"]:
        if isinstance(p, bytes):
            template += p
            continue
        if p.strides[-1] != p.itemsize:
            p = np.ascontiguousarray(p)
        lo, hi = used_bytes(p)
        if hi > lo:
            columns.append((len(template), p.view(np.uint8)[:, lo:hi].view(f"V{hi - lo}")[:, 0]))
            template += bytes(hi - lo)
    width = len(template)
    out = np.empty((n, width), np.uint8)
    out[:] = np.frombuffer(bytes(template), np.uint8)
    for offset, column in columns:
        out[:, offset:offset + column.itemsize].view(column.dtype)[:, 0] = column
    if 2 * sum(column.itemsize for _, column in columns) < width:
        # mostly constant text (JSON keys): NULs are rare, and replace() jumps between them with memchr
        return out.tobytes().replace(b"\0", b"")
    return out.tobytes().translate(None, b"\0")        # one pass, whatever the NULs


def used_bytes(column: np.ndarray) -> tuple[int, int]:
    """[lo, hi): the byte range of an (n, k) text matrix (unsigned words) that holds text in some row (OR
    of each word column, strided 1-D reductions: a 2-D reduction over axis 0 is ~20x slower)."""
    if column.shape[1] == 0:
        return 0, 0
    ors = np.array([np.bitwise_or.reduce(column[:, j]) for j in range(column.shape[1])], column.dtype)
    used = np.flatnonzero(ors.view(np.uint8))
    return (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 0)


def padded(column: np.ndarray, width: int) -> np.ndarray:
    """printf %-<width>s: the text, then spaces up to width."""
    length = np.count_nonzero(column.view(np.uint8), axis=1)
    nw = -(-width // 8)
    pad = np.arange(nw * 8)[None, :] < (width - length)[:, None]
    spaces = np.where(pad, np.uint8(32), np.uint8(0)).view(np.uint64)
    return np.concatenate([column, spaces], axis=1)
