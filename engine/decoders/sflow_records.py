"""sFlow v5 flow records → the canonical record of their flow sample, one vectorised pass per record type.

Each parser takes the record table of a batch (sample index, body offset, body length of
every record of one type) and writes its fields straight into the RECORD_DTYPE row of
each record's sample (sflow_rows.FlowRows).  When a sample holds two records of one type,
the later one wins, as sfacctd overwrites: only the last valid record of each sample is
decoded.  A field nobody reads (FlowRows.wanted) is not written; what the counters need
(which samples are flows, their frame lengths, short records) always is.
"""
from __future__ import annotations

import numpy as np

from .packet_headers import HEADER_WIDTH_MAX, L2_WIDTH, parse_headers
from .sflow_rows import FlowRows
from .sflow_walk import be32, column, gather_bytes, last_per_parent

RAW_HEADER, ETHERNET_FRAME, IPV4_DATA, IPV6_DATA = 1, 2, 3, 4
EXT_SWITCH, EXT_ROUTER, EXT_GATEWAY = 1001, 1002, 1003
MAX_AS_SEGMENTS = 16


def _last_valid(sample: np.ndarray, body: np.ndarray, blen: np.ndarray, ok: np.ndarray, n: int):
    """The records that count (valid, and the last of their sample), as (rows for FlowRows.put, body,
    blen, the mask of them among the valid ones)."""
    if not ok.all():
        sample, body, blen = sample[ok], body[ok], blen[ok]
    last = last_per_parent(sample)
    if not last.all():
        sample, body, blen = sample[last], body[last], blen[last]
    return (None if len(sample) == n else sample), body, blen, last


def _every(rows):
    """rows as an index: None (every sample, in order) → a full slice."""
    return slice(None) if rows is None else rows


def raw_header(f: FlowRows, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray
               ) -> np.ndarray:
    """Raw packet header records; returns the mask of those too short (broken)."""
    ok = blen >= 16
    rows, body, blen, _ = _last_valid(sample, body, blen, ok, f.n)
    if len(body) == 0:
        return ~ok
    head = gather_bytes(buf, body, 16 + L2_WIDTH)       # protocol, frame length, stripped, header length, header
    frame_length = column(head, 4, ">u4").astype(np.uint32)
    hlen = np.minimum(np.minimum(column(head, 12, ">u4").astype(np.int64), blen - 16), HEADER_WIDTH_MAX)
    h = parse_headers(buf, body + 16, hlen, column(head, 0, ">u4"), f.wanted, head[:, 16:])
    f.has_flow[_every(rows)] = True
    f.frame_length[_every(rows)] = frame_length
    f.put("bytes", rows, frame_length)
    f.put("etype", rows, h.etype, always=True)
    f.put("family", rows, h.family, always=True)
    for name in ("vlan", "proto", "tos", "src_port", "dst_port", "tcp_flags", "src_mac", "dst_mac"):
        f.put(name, rows, getattr(h, name))
    f.put("src_host", rows, h.src)
    f.put("dst_host", rows, h.dst)
    return ~ok


def ethernet_frame(f: FlowRows, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray
                   ) -> np.ndarray:
    ok = blen >= 24
    rows, body, _, _ = _last_valid(sample, body, blen, ok, f.n)
    f.put("src_mac", rows, gather_bytes(buf, body + 4, 6))
    f.put("dst_mac", rows, gather_bytes(buf, body + 12, 6))
    f.put("etype", rows, be32(buf, body + 20).astype(np.uint16), always=True)
    return ~ok


def ip_data(f: FlowRows, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray,
            family: int) -> np.ndarray:
    """IPv4 data (3) / IPv6 data (4): a flow even without a raw header; overrides its L3/L4 fields."""
    alen = 4 if family == 4 else 16
    ok = blen >= 8 + 2 * alen + 16
    rows, body, _, _ = _last_valid(sample, body, blen, ok, f.n)
    a = body + 8
    for name, at in (("src_host", a), ("dst_host", a + alen)):
        if f.want(name):
            addr = np.zeros((len(body), 16), np.uint8)
            if family == 4:
                addr[:, 10:12] = 0xFF
            addr[:, 16 - alen:] = gather_bytes(buf, at, alen)
            f.put(name, rows, addr)
    p = a + 2 * alen
    f.has_flow[_every(rows)] = True
    f.put("bytes", rows, be32(buf, body))
    f.put("proto", rows, be32(buf, body + 4).astype(np.uint8))
    f.put("family", rows, family, always=True)
    f.put("src_port", rows, be32(buf, p).astype(np.uint16))
    f.put("dst_port", rows, be32(buf, p + 4).astype(np.uint16))
    f.put("tcp_flags", rows, be32(buf, p + 8).astype(np.uint8))
    f.put("tos", rows, be32(buf, p + 12).astype(np.uint8))
    return ~ok


def extended_switch(f: FlowRows, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray
                    ) -> np.ndarray:
    """sfacctd's vlan: the incoming VLAN, else the outgoing one (16 bits of the 32-bit field); it overrides
    the raw header's tag, even with 0 (sfacctd reads the switch record after the header)."""
    ok = blen >= 16
    rows, body, _, _ = _last_valid(sample, body, blen, ok, f.n)
    if f.want("vlan"):
        src_vlan, dst_vlan = be32(buf, body), be32(buf, body + 8)
        f.put("vlan", rows, np.where(src_vlan != 0, src_vlan, dst_vlan).astype(np.uint16))
    return ~ok


def _address(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sFlow address (type, then 4 or 16 bytes; type 0 "unknown" has none) → (bytes used, valid, known)."""
    kind = be32(buf, pos)
    v4, v6 = kind == 1, kind == 2
    used = np.where(v4, 8, np.where(v6, 20, 4))
    return used, v4 | v6 | (kind == 0), v4 | v6


def _address_bytes(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The 16-byte form (IPv4-mapped for IPv4, zeros for type 0) of the sFlow address at each position."""
    kind = be32(buf, pos)
    v4, v6 = kind == 1, kind == 2
    out = np.zeros((len(pos), 16), np.uint8)
    raw = gather_bytes(buf, pos + 4, 16)
    out[v4, 10:12] = 0xFF
    out[v4, 12:] = raw[v4, :4]
    out[v6] = raw[v6]
    return out


def extended_router(f: FlowRows, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray
                    ) -> np.ndarray:
    used, valid, _ = _address(buf, body)
    ok = valid & (blen >= used + 8)
    rows, body, _, last = _last_valid(sample, body, blen, ok, f.n)
    used = used[ok][last]
    if f.want("ip_next_hop"):
        f.put("ip_next_hop", rows, _address_bytes(buf, body))
    if f.want("src_mask", "dst_mask"):
        f.put("src_mask", rows, be32(buf, body + used).astype(np.uint8))
        f.put("dst_mask", rows, be32(buf, body + used + 4).astype(np.uint8))
    return ~ok


def extended_gateway(f: FlowRows, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray
                     ) -> np.ndarray:
    """BGP next hop → peer_dst_ip; src_as, peer_src_as; AS path: first AS → peer_dst_as, last → dst_as."""
    used, valid, known = _address(buf, body)
    ok = valid & (blen >= used + 16)
    rows, body, blen, last = _last_valid(sample, body, blen, ok, f.n)
    used, known = used[ok][last], known[ok][last]
    f.put("peer_dst_missing", rows, ~known, always=True)     # a next hop of type 0 (unknown, sFlow v2/v4)

    f.put("peer_dst_ip", rows, _address_bytes(buf, body))
    p = body + used
    f.put("src_as", rows, be32(buf, p + 4))
    f.put("peer_src_as", rows, be32(buf, p + 8))
    if not f.want("dst_as", "peer_dst_as"):
        return ~ok
    end = body + blen
    segments = be32(buf, p + 12).astype(np.int64)
    pos = p + 16
    first = np.zeros(len(body), np.uint32)
    last_as = np.zeros(len(body), np.uint32)
    left = np.minimum(segments, MAX_AS_SEGMENTS)
    for _ in range(int(left.max()) if len(left) else 0):
        live = (left > 0) & (pos + 8 <= end)
        count = np.where(live, be32(buf, pos + 4).astype(np.int64), 0)
        live &= (count > 0) & (pos + 8 + 4 * count <= end)
        first = np.where(live & (first == 0), be32(buf, pos + 8), first)
        last_as = np.where(live, be32(buf, pos + 8 + 4 * np.maximum(count - 1, 0)), last_as)
        pos = pos + 8 + 4 * count
        left = np.where(live, left - 1, 0)
    f.put("dst_as", rows, last_as)
    f.put("peer_dst_as", rows, first)
    return ~ok


RECORD_PARSERS = {
    RAW_HEADER: raw_header,
    ETHERNET_FRAME: ethernet_frame,
    IPV4_DATA: lambda f, b, s, o, l: ip_data(f, b, s, o, l, 4),   # noqa: E741
    IPV6_DATA: lambda f, b, s, o, l: ip_data(f, b, s, o, l, 6),   # noqa: E741
    EXT_SWITCH: extended_switch,
    EXT_ROUTER: extended_router,
    EXT_GATEWAY: extended_gateway,
}
# application order: the raw header first, then the records that refine or override it
PARSE_ORDER = (RAW_HEADER, ETHERNET_FRAME, IPV4_DATA, IPV6_DATA, EXT_SWITCH, EXT_ROUTER, EXT_GATEWAY)
