"""The query protocol between `pmengine client` and the memory plugin, over the imt_path UNIX stream socket.

One request per connection:

    client -> plugin   one JSON object, then "\\n"
                       {"op": "query", "primitives": [...], "queries": [...], "counters_only": bool,
                        "reset": bool}  |  {"op": "erase"}  |  {"op": "since"}  |  {"op": "status"}
    plugin -> client   one JSON header, then "\\n", then header["payload"] bytes:
                       {"ok": true, "aggregate": [...], "itemsize": k, "counters": c, "rows": n,
                        "per_query": [rows matched by each query] | "sums": [[packets, bytes, flows, entries]...],
                        "payload": n*k + c*n*8}
                       payload: the matched rows' packed keys (the aggregate's KeySpec dtype), then the
                       counters as a (c, n) native uint64 array (packets, bytes, flows [, tcp flags]).
                       Errors: {"ok": false, "error": "..."}.

Why this and not pmacct's own wire format: pmacct's client and plugin exchange
C structs whose layout depends on the build; here the plugin only matches
(vectorised) and sends raw numpy columns, and all text formatting happens in
the client process, so a query of a 1M-row table costs the collector a few
array operations, not the formatting.
"""
from __future__ import annotations

import json
import socket

MAX_REQUEST = 1 << 24       # bytes: a request holds the query text (file: lists can be long)
MAX_HEADER = 1 << 26


class ProtocolError(Exception):
    pass


def send_json(sock: socket.socket, obj: dict, payload: bytes | memoryview | list = b"") -> None:
    """A JSON line, then the payload (bytes, or a list of buffers sent in order)."""
    sock.sendall(json.dumps(obj).encode() + b"\n")
    for part in payload if isinstance(payload, list) else [payload]:
        if len(part):
            sock.sendall(part)


def recv_line(sock: socket.socket, limit: int) -> tuple[bytes, bytearray]:
    """Bytes up to the first newline, and whatever came after it."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ProtocolError("connection closed before a complete message")
        buf += chunk
        if len(buf) > limit:
            raise ProtocolError("message too long")
    line, _, rest = bytes(buf).partition(b"\n")
    return line, bytearray(rest)


def recv_json(sock: socket.socket, limit: int = MAX_HEADER) -> tuple[dict, bytearray]:
    line, rest = recv_line(sock, limit)
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"bad message: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad message: not an object")
    return obj, rest


def recv_exact(sock: socket.socket, size: int, head: bytearray) -> bytearray:
    """size bytes: head (already received) then the rest from the socket."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = min(len(head), size)
    view[:got] = head[:got]
    while got < size:
        n = sock.recv_into(view[got:], min(size - got, 1 << 22))
        if n == 0:
            raise ProtocolError(f"connection closed after {got} of {size} bytes")
        got += n
    return buf
