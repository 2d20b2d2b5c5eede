"""Match queries of the pmacct client (-c primitives, -M/-N values): parsing and vectorised matching.

A query is one value per -c primitive, comma-separated; several queries are
separated by ';' or listed one per line in a `file:PATH`.  `*` matches any
value.  Values parse as pmacct's client reads them: addresses (v4 or v6),
MACs, protocol names or numbers, etype in hex, other integers in decimal;
a label is its text (pmacct's client refuses -M/-N on label, and its memory
plugin does not keep labels; a stacked label "a,b" cannot be matched, ','
separating the values).
Unlike pmacct (C atoi/inet_aton: "abc" is port 0, "1.2.3" is 1.2.0.3), a value
that does not parse for its primitive is an error.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

import numpy as np

from ..plugins.aggregate import AggregatedRows
from ..plugins.render import PROTO_NAMES
from ..schema import FIELD_BY_NAME, LABEL_BYTES, PRIMITIVES

WILDCARD = "*"
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}
# Primitives that -c accepts (pmacct's -c list, the ones pmengine keeps); tcpflags and flows are not among them.
MATCH_PRIMITIVES = tuple(p for p in PRIMITIVES if p != "tcpflags")


class QueryError(ValueError):
    """A query the client refuses (printed as "ERROR: ..." by the client)."""


def parse_primitives(text: str) -> list[str]:
    """-c "src_host,dst_port" -> names; QueryError naming the first unknown one."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        if name not in MATCH_PRIMITIVES:
            raise QueryError(f"unknown primitive '{name}'")
    if not names:
        raise QueryError("-N or -M selected but -c has not been specified or is invalid.")
    return names


def split_queries(text: str) -> list[str]:
    """-M/-N argument -> query strings (';'-separated, or `file:PATH` with one query per line)."""
    if text.startswith("file:"):
        path = text[5:]
        try:
            with open(path) as f:
                lines = [line.strip() for line in f]
        except OSError as e:
            raise QueryError(f"cannot read '{path}': {e.strerror}") from None
        return [line for line in lines if line and not line.startswith("#")]
    return [q for q in text.split(";") if q != ""]


def _address(primitive: str, text: str) -> bytes:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise QueryError(f"{primitive}: Invalid IP address: '{text}'") from None
    if addr.version == 4:
        return bytes(10) + b"\xff\xff" + addr.packed
    return addr.packed


def _mac(primitive: str, text: str) -> bytes:
    parts = text.split(":")
    try:
        if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
            raise ValueError
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise QueryError(f"{primitive}: Invalid MAC address: '{text}'") from None


def _integer(primitive: str, text: str, base: int, high: int) -> int:
    try:
        value = int(text, base)
    except ValueError:
        value = -1
    if not 0 <= value <= high:
        raise QueryError(f"{primitive}: Invalid value: '{text}'")
    return value


def _label(primitive: str, text: str) -> bytes:
    """A label as the table keeps it: UTF-8, NUL-padded to LABEL_BYTES ("" matches unlabelled rows)."""
    raw = text.encode("utf-8")
    if len(raw) > LABEL_BYTES or b"\0" in raw:
        raise QueryError(f"{primitive}: Invalid label: '{text}' (at most {LABEL_BYTES} bytes)")
    return raw.ljust(LABEL_BYTES, b"\0")


def parse_value(primitive: str, text: str):
    """One -M/-N value of a primitive -> what its key column holds (bytes for addresses/MACs, else int)."""
    prim = PRIMITIVES[primitive]
    if prim.derived == "net":
        return _address(primitive, text)
    field = FIELD_BY_NAME[prim.columns[0]]
    if field.kind == "addr":
        return _address(primitive, text)
    if field.kind == "mac":
        return _mac(primitive, text)
    if field.kind == "proto":
        if text.lower() in PROTO_NUMBERS:
            return PROTO_NUMBERS[text.lower()]
        return _integer(primitive, text, 10, 255)
    if field.kind == "etype":
        return _integer(primitive, text, 16, 0xFFFF)
    if field.kind == "label":
        return _label(primitive, text)
    if field.kind == "time":
        raise QueryError(f"{primitive}: matching on timestamps is not supported")
    high = (1 << (8 * np.dtype(field.dtype).itemsize)) - 1
    return _integer(primitive, text, 10, high)


def parse_query(primitives: list[str], text: str) -> list[Optional[object]]:
    """One query -> a value per primitive (None: wildcard, or no value given: matches nothing in pmacct)."""
    texts = [t.strip() for t in text.split(",")]
    values: list[Optional[object]] = []
    for i, primitive in enumerate(primitives):
        if i >= len(texts):
            values.append(("missing",))
        elif texts[i] == WILDCARD:
            values.append(None)
        else:
            values.append(parse_value(primitive, texts[i]))
    return values


def match(rows: AggregatedRows, aggregate: tuple[str, ...], primitives: list[str], query_text: str) -> np.ndarray:
    """Boolean mask of the rows a query matches (a primitive outside the table's aggregate matches nothing)."""
    mask = np.ones(len(rows), dtype=bool)
    for primitive, value in zip(primitives, parse_query(primitives, query_text)):
        if value is None:
            continue
        if isinstance(value, tuple) or primitive not in aggregate:
            return np.zeros(len(rows), dtype=bool)
        column = rows.column(primitive)
        if isinstance(value, bytes):
            want = np.frombuffer(value, dtype=np.uint8)
            mask &= np.all(column == want, axis=1)
        else:
            mask &= column == value
    return mask
