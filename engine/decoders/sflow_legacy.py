"""sFlow v2 / v4 datagrams, rewritten as the equivalent sFlow v5 datagram (slow path, Python per sample).

v2 and v4 (sFlow's pre-2004 versions) have no length fields: a structure's size follows from its type,
so they cannot be walked with the vectorised v5 cursors.  They are rare (legacy agents), so each one is
parsed here with struct and re-encoded as v5 (same agent, sequence, samples), then decoded with the v5
decoder like any other datagram.  What sfacctd 1.7.7 reads from them, and so what is kept:

- flow samples: sampled header (packet data type 1) → raw packet header record; sampled IPv4 / IPv6
  (types 2 / 3, the layout of v5's IPv4 / IPv6 data) → IPv4 / IPv6 data records;
- extended switch / router → v5 records 1001 / 1002; extended gateway (no next hop before v5: written
  with an "unknown" next-hop address, so peer_dst_ip stays empty) → 1003 with the v4 AS path segments;
  a v2 gateway's flat AS list is not an AS path for sfacctd (dst_as 0): written with an empty path;
  extended URL is skipped; after an extended user item sfacctd 1.7.7 reads nothing more of the datagram
  (observed: the sample holding it is kept, later ones lost): the same here, counted as a decode error;
- counter samples: generic, FDDI, WAN → the generic interface record; Ethernet → one record holding
  both (sfacctd writes one sflow_cnt_ethernet line with generic and dot3 counters); VLAN → record 5;
  token ring and 100BaseVG → no record (sfacctd writes no line).  FDDI / WAN: not checked against sfacctd.
Anything that does not parse makes the datagram undecodable (None): the caller counts a decode error.
"""
from __future__ import annotations

import struct
from typing import Optional

IF_COUNTERS = 88                     # generic interface counters, bytes
SPECIFIC = {1: 0, 2: 52, 3: 72, 4: 0, 5: 80, 6: 0}      # counters type -> bytes after the generic block
VLAN_COUNTERS = 28
LEGACY_ETHERNET = (0xFFFFF << 12) | 2   # a record type private to pmengine: v2/v4 generic + Ethernet counters
MAX_ITEMS = 4096


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def address(self) -> bytes:
        kind = self.u32()
        if kind not in (1, 2):
            raise ValueError("address type")
        return struct.pack(">I", kind) + self.take(4 if kind == 1 else 16)

    def opaque(self) -> bytes:
        n = self.u32()
        data = self.take(n)
        self.take(-n % 4)
        return data

    def count(self) -> int:
        n = self.u32()
        if n > MAX_ITEMS:
            raise ValueError("count")
        return n


def _record(rtype: int, body: bytes) -> bytes:
    return struct.pack(">II", rtype, len(body)) + body


def _flow_sample(r: _Reader, version: int) -> bytes:
    seq, source_id, rate, pool, drops, in_if, out_if = struct.unpack(">7I", r.take(28))
    records = []
    kind = r.u32()
    if kind == 1:                                   # sampled header
        protocol, frame_length = struct.unpack(">II", r.take(8))
        header = r.opaque()
        records.append(_record(1, struct.pack(">IIII", protocol, frame_length, 0, len(header))
                               + header + bytes(-len(header) % 4)))
    elif kind in (2, 3):                            # sampled IPv4 / IPv6: v5's IPv4 / IPv6 data layout
        records.append(_record(kind + 1, r.take(32 if kind == 2 else 56)))
    else:
        raise ValueError("packet data type")
    for _ in range(r.count()):
        ext = r.u32()
        if ext == 1:
            records.append(_record(1001, r.take(16)))
        elif ext == 2:
            records.append(_record(1002, r.address() + r.take(8)))
        elif ext == 3:
            records.append(_record(1003, _gateway(r, version)))
        elif ext == 4:                              # user: sfacctd 1.7.7 loses the rest of the datagram
            raise _Truncated(_flow_sample_bytes(seq, source_id, rate, pool, drops, in_if, out_if, records))
        elif ext == 5:
            r.take(4)
            r.opaque()                              # URL: direction, URL
        else:
            raise ValueError("extended type")
    return _flow_sample_bytes(seq, source_id, rate, pool, drops, in_if, out_if, records)


def _flow_sample_bytes(seq, source_id, rate, pool, drops, in_if, out_if, records) -> bytes:
    body = struct.pack(">8I", seq, source_id, rate, pool, drops, in_if, out_if, len(records)) + b"".join(records)
    return struct.pack(">II", 1, len(body)) + body


class _Truncated(Exception):
    """Parsing stops after this (v5-encoded) sample; the samples before it and it are kept."""

    def __init__(self, sample: bytes) -> None:
        super().__init__("truncated")
        self.sample = sample


def _gateway(r: _Reader, version: int) -> bytes:
    my_as, src_as, src_peer_as = struct.unpack(">III", r.take(12))
    segments = b""
    nseg = 0
    if version >= 4:
        for _ in range(r.count()):
            seg_type, n = r.u32(), r.count()
            segments += struct.pack(">II", seg_type, n) + r.take(4 * n)
            nseg += 1
        communities = r.count()
        r.take(4 * communities)
        r.take(4)                                   # localpref
    else:
        r.take(4 * r.count())                       # v2: flat AS list, not read as a path (sfacctd: dst_as 0)
    return (struct.pack(">I", 0) + struct.pack(">IIII", my_as, src_as, src_peer_as, nseg) + segments
            + struct.pack(">II", 0, 0))


def _counter_sample(r: _Reader) -> bytes:
    seq, source_id, _interval, ctype = struct.unpack(">4I", r.take(16))
    records = []
    if ctype in SPECIFIC:
        generic = r.take(IF_COUNTERS)
        specific = r.take(SPECIFIC[ctype])
        if ctype == 2:              # one line with generic and Ethernet counters, as sfacctd writes it
            records.append(_record(LEGACY_ETHERNET, generic + specific))
        elif ctype not in (3, 5):   # token ring / 100BaseVG: sfacctd 1.7.7 writes no line
            records.append(_record(1, generic))
    elif ctype == 7:
        records.append(_record(5, r.take(VLAN_COUNTERS)))
    else:
        raise ValueError("counters type")
    body = struct.pack(">III", seq, source_id, len(records)) + b"".join(records)
    return struct.pack(">II", 2, len(body)) + body


def legacy_to_v5(data: bytes) -> Optional[bytes]:
    """A v2 / v4 datagram as a v5 datagram (sub-agent 0), or None when it does not parse."""
    try:
        r = _Reader(data, 0)
        version = r.u32()
        if version not in (2, 4):
            return None
        agent = r.address()
        seq, uptime = r.u32(), r.u32()
        samples = []
        announced = 0
        try:
            for _ in range(r.count()):
                kind = r.u32()
                if kind == 1:
                    samples.append(_flow_sample(r, version))
                elif kind == 2:
                    samples.append(_counter_sample(r))
                else:
                    raise ValueError("sample type")
        except _Truncated as stop:
            samples.append(stop.sample)
            announced = 1           # one sample more than present: the v5 walker counts the decode error
        return (struct.pack(">I", 5) + agent + struct.pack(">IIII", 0, seq, uptime, len(samples) + announced)
                + b"".join(samples))
    except (ValueError, struct.error):
        return None
