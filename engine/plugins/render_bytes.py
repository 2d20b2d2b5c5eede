"""Aggregated rows -> output lines as one text block, built as byte matrices (no Python per row).

Every column becomes an (n, w) uint8 matrix holding its text, padded with NUL
bytes anywhere (numbers right-aligned with leading NULs, lookup-table texts
NUL-padded on the right).  A line is the columns and the constant pieces
between them (separators, JSON keys) concatenated side by side; the block is
the matrix's bytes with the NULs dropped (bytes.translate, in C).  Texts are the
ones render.py produces (same decisions, same tables); a column whose text
could itself hold a NUL byte (labels) makes the caller fall back to render.py.

Columns are uint64 word matrices (8 text bytes per word): copies move words,
not bytes.  Measured on 250k "five" rows (loaded 2-core box): CSV 0.7 µs/row
instead of 1.7-2.3 µs with per-row %-templates, JSON 1.4 instead of 2.2-2.9.
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


def _octet_table(suffix: bytes) -> np.ndarray:
    """0..255 as decimal text + suffix, NUL-padded to 4 bytes, as uint32."""
    raw = b"".join(str(i).encode().ljust(3, b"\0") + suffix.ljust(1, b"\0") for i in range(256))
    return np.frombuffer(raw, np.uint32).copy()


_OCTET_DOT = _octet_table(b".")
_OCTET_END = _octet_table(b"")
_HEX_COLON = np.frombuffer(b"".join(f"{i:02x}:".encode() for i in range(256)), np.uint8).reshape(256, 3)
_DEC_M = text_matrix(_DEC.tolist())              # 0..255 decimal, (256, 1) words
_PROTO_M = text_matrix(_PROTO_TEXT.tolist())
_DEC16_M: Optional[np.ndarray] = None            # 0..65535 decimal, built on first use
_POW10 = [np.uint64(10 ** k) for k in range(20)]


def by_unique(values: np.ndarray, texts_for) -> np.ndarray:
    """Words of texts, one conversion per distinct value (values 1-D, or rows of bytes)."""
    if len(values) == 0:
        return np.zeros((0, 1), np.uint64)
    if values.ndim > 1:
        values = np.ascontiguousarray(values).view(f"V{values.shape[1]}").ravel()
    uniq, inverse = np.unique(values, return_inverse=True)
    return text_matrix(list(texts_for(uniq))).take(inverse.ravel(), axis=0)


def decimal(values: np.ndarray) -> np.ndarray:
    """Unsigned integers -> decimal text words (8 digits per word, leading NULs)."""
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
            _DEC16_M = _digit_words(np.arange(65536, dtype=np.uint64), 1)
        return _DEC16_M.take(values, axis=0)
    values = values.astype(np.uint64, copy=False)
    digits = len(str(int(values.max()))) if len(values) else 1
    return _digit_words(values, -(-digits // 8))


def _digit_words(v: np.ndarray, nwords: int, leading_zeros: bool = False, width: int = 8) -> np.ndarray:
    """Decimal digits of v in nwords words of `width` digits each (the last word the lowest digits)."""
    out = np.zeros((len(v), nwords), np.uint64)
    ten = np.uint64(10)
    for w in range(nwords - 1, -1, -1):
        part = v % _POW10[width] if w else v
        v = v // _POW10[width]
        word = np.zeros(len(part), np.uint64)
        for k in range(width):                 # k-th lowest digit goes to byte width-1-k
            q = part // ten
            digit = part - q * ten + np.uint64(48)
            if not leading_zeros and (k or w != nwords - 1):
                digit[(part == 0) & (v == 0)] = 0  # no more digits: NUL
            word |= digit << np.uint64(8 * (width - 1 - k))
            part = q
        out[:, w] = word
    if not leading_zeros:
        out[:, -1] |= np.where(out[:, -1] == 0, np.uint64(48) << np.uint64(8 * (width - 1)), np.uint64(0))
    return out


def dotted(addr4: np.ndarray) -> np.ndarray:
    """(n, 4) uint8 -> dotted quads, (n, 2) words."""
    out = np.empty((len(addr4), 4), np.uint32)
    for i in range(3):
        out[:, i] = _OCTET_DOT.take(addr4[:, i])
    out[:, 3] = _OCTET_END.take(addr4[:, 3])
    return out.view(np.uint64)


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
    frac7 = _digit_words(frac.astype(np.uint64), 1, leading_zeros=True, width=6)
    frac7 = (frac7 << np.uint64(8)) | np.uint64(ord("."))      # ".uuuuuu"
    return np.concatenate([head, frac7], axis=1)


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
    if n == 0:
        return ""
    mats = []
    for p in pieces + [b"\n"]:
        if isinstance(p, bytes):
            if p:
                const = np.frombuffer(p.ljust(-(-len(p) // 8) * 8, b"\0"), np.uint64)
                mats.append(np.broadcast_to(const, (n, len(const))))
        elif p.shape[1]:
            mats.append(p)
    return np.concatenate(mats, axis=1).tobytes().translate(None, b"\0").decode("utf-8")


def padded(column: np.ndarray, width: int) -> np.ndarray:
    """printf %-<width>s: the text, then spaces up to width."""
    length = np.count_nonzero(column.view(np.uint8), axis=1)
    nw = -(-width // 8)
    pad = np.arange(nw * 8)[None, :] < (width - length)[:, None]
    spaces = np.where(pad, np.uint8(32), np.uint8(0)).view(np.uint64)
    return np.concatenate([column, spaces], axis=1)
