"""sFlow v5 flow records → per-sample columns, one vectorised pass per record type.

Each function takes the record table of a batch (sample index, body offset, body
length of every record of one type) and writes its fields into the per-sample
columns (a dict of arrays indexed by flow-sample number).  When a sample holds two
records of one type, the later one wins, as sfacctd overwrites.
"""
from __future__ import annotations

import numpy as np

from .packet_headers import header_matrix, parse_headers
from .sflow_walk import be32, gather_bytes

HEADER_WIDTH_MAX = 256       # bytes of a sampled header that are parsed (sFlow agents send 128 by default)

RAW_HEADER, ETHERNET_FRAME, IPV4_DATA, IPV6_DATA = 1, 2, 3, 4
EXT_SWITCH, EXT_ROUTER, EXT_GATEWAY = 1001, 1002, 1003
MAX_AS_SEGMENTS = 16


def sample_columns(n: int) -> dict[str, np.ndarray]:
    z = lambda dt: np.zeros(n, dt)  # noqa: E731
    return {
        "has_flow": z(bool), "bytes": z(np.uint64), "frame_length": z(np.uint64), "src_mac": np.zeros((n, 6), np.uint8),
        "dst_mac": np.zeros((n, 6), np.uint8), "vlan": z(np.uint16), "etype": z(np.uint16), "family": z(np.uint8),
        "src_host": np.zeros((n, 16), np.uint8), "dst_host": np.zeros((n, 16), np.uint8), "proto": z(np.uint8),
        "tos": z(np.uint8), "src_port": z(np.uint16), "dst_port": z(np.uint16), "tcp_flags": z(np.uint8),
        "switch_vlan": z(np.uint16), "has_switch": z(bool), "ip_next_hop": np.zeros((n, 16), np.uint8),
        "src_mask": z(np.uint8), "dst_mask": z(np.uint8), "peer_dst_ip": np.zeros((n, 16), np.uint8),
        "has_gateway": z(bool), "src_as": z(np.uint32),
        "dst_as": z(np.uint32), "peer_src_as": z(np.uint32), "peer_dst_as": z(np.uint32),
    }


def _address(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sFlow address (type, then 4 or 16 bytes; type 0 "unknown" has none) → (16-byte addresses, bytes used,
    valid, known)."""
    kind = be32(buf, pos)
    v4, v6 = kind == 1, kind == 2
    out = np.zeros((len(pos), 16), np.uint8)
    raw = gather_bytes(buf, pos + 4, 16)
    out[v4, 10:12] = 0xFF
    out[v4, 12:] = raw[v4, :4]
    out[v6] = raw[v6]
    used = np.where(v4, 8, np.where(v6, 20, 4))
    return out, used, v4 | v6 | (kind == 0), v4 | v6


def raw_header(cols: dict, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray) -> np.ndarray:
    """Raw packet header records; returns the mask of those too short (broken)."""
    ok = blen >= 16
    sample, body, blen = sample[ok], body[ok], blen[ok]
    if len(sample) == 0:
        return ~ok
    protocol = be32(buf, body)
    frame_length = be32(buf, body + 4)
    hlen = np.minimum(be32(buf, body + 12).astype(np.int64), blen - 16)
    width = int(min(HEADER_WIDTH_MAX, max(1, hlen.max())))
    h = parse_headers(header_matrix(buf, body + 16, hlen, width), np.minimum(hlen, width), protocol)
    cols["has_flow"][sample] = True
    cols["bytes"][sample] = frame_length
    cols["frame_length"][sample] = frame_length
    for name in ("src_mac", "dst_mac", "vlan", "etype", "family", "proto", "tos", "src_port", "dst_port",
                 "tcp_flags"):
        cols[name][sample] = getattr(h, name)
    cols["src_host"][sample] = h.src
    cols["dst_host"][sample] = h.dst
    return ~ok


def ethernet_frame(cols: dict, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray) -> np.ndarray:
    ok = blen >= 24
    sample, body = sample[ok], body[ok]
    cols["src_mac"][sample] = gather_bytes(buf, body + 4, 6)
    cols["dst_mac"][sample] = gather_bytes(buf, body + 12, 6)
    cols["etype"][sample] = be32(buf, body + 20).astype(np.uint16)
    return ~ok


def ip_data(cols: dict, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray,
            family: int) -> np.ndarray:
    """IPv4 data (3) / IPv6 data (4): a flow even without a raw header; overrides its L3/L4 fields."""
    alen = 4 if family == 4 else 16
    ok = blen >= 8 + 2 * alen + 16
    sample, body = sample[ok], body[ok]
    a = body + 8
    src = np.zeros((len(sample), 16), np.uint8)
    dst = np.zeros((len(sample), 16), np.uint8)
    if family == 4:
        src[:, 10:12] = dst[:, 10:12] = 0xFF
    src[:, 16 - alen:] = gather_bytes(buf, a, alen)
    dst[:, 16 - alen:] = gather_bytes(buf, a + alen, alen)
    p = a + 2 * alen
    cols["has_flow"][sample] = True
    cols["bytes"][sample] = be32(buf, body)
    cols["proto"][sample] = be32(buf, body + 4).astype(np.uint8)
    cols["family"][sample] = family
    cols["src_host"][sample] = src
    cols["dst_host"][sample] = dst
    cols["src_port"][sample] = be32(buf, p).astype(np.uint16)
    cols["dst_port"][sample] = be32(buf, p + 4).astype(np.uint16)
    cols["tcp_flags"][sample] = be32(buf, p + 8).astype(np.uint8)
    cols["tos"][sample] = be32(buf, p + 12).astype(np.uint8)
    return ~ok


def extended_switch(cols: dict, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray) -> np.ndarray:
    """sfacctd's vlan: the incoming VLAN, else the outgoing one (16 bits of the 32-bit field)."""
    ok = blen >= 16
    sample, body = sample[ok], body[ok]
    src_vlan, dst_vlan = be32(buf, body), be32(buf, body + 8)
    cols["switch_vlan"][sample] = np.where(src_vlan != 0, src_vlan, dst_vlan).astype(np.uint16)
    cols["has_switch"][sample] = True
    return ~ok


def extended_router(cols: dict, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray) -> np.ndarray:
    addr, used, valid, _ = _address(buf, body)
    ok = valid & (blen >= used + 8)
    sample, body, addr, used = sample[ok], body[ok], addr[ok], used[ok]
    cols["ip_next_hop"][sample] = addr
    cols["src_mask"][sample] = be32(buf, body + used).astype(np.uint8)
    cols["dst_mask"][sample] = be32(buf, body + used + 4).astype(np.uint8)
    return ~ok


def extended_gateway(cols: dict, buf: np.ndarray, sample: np.ndarray, body: np.ndarray, blen: np.ndarray) -> np.ndarray:
    """BGP next hop → peer_dst_ip; src_as, peer_src_as; AS path: first AS → peer_dst_as, last → dst_as."""
    addr, used, valid, known = _address(buf, body)
    ok = valid & (blen >= used + 16)
    sample, body, blen, addr, used, known = sample[ok], body[ok], blen[ok], addr[ok], used[ok], known[ok]
    end = body + blen
    p = body + used
    cols["peer_dst_ip"][sample] = addr
    cols["has_gateway"][sample] = known         # next hop of type 0 (unknown, e.g. sFlow v2/v4): none printed
    cols["src_as"][sample] = be32(buf, p + 4)
    cols["peer_src_as"][sample] = be32(buf, p + 8)
    segments = be32(buf, p + 12).astype(np.int64)
    pos = p + 16
    first = np.zeros(len(sample), np.uint32)
    last = np.zeros(len(sample), np.uint32)
    left = np.minimum(segments, MAX_AS_SEGMENTS)
    for _ in range(int(left.max()) if len(left) else 0):
        live = (left > 0) & (pos + 8 <= end)
        count = np.where(live, be32(buf, pos + 4).astype(np.int64), 0)
        live &= (count > 0) & (pos + 8 + 4 * count <= end)
        first = np.where(live & (first == 0), be32(buf, pos + 8), first)
        last = np.where(live, be32(buf, pos + 8 + 4 * np.maximum(count - 1, 0)), last)
        pos = pos + 8 + 4 * count
        left = np.where(live, left - 1, 0)
    cols["dst_as"][sample] = last
    cols["peer_dst_as"][sample] = first
    return ~ok


RECORD_PARSERS = {
    RAW_HEADER: raw_header,
    ETHERNET_FRAME: ethernet_frame,
    IPV4_DATA: lambda c, b, s, o, l: ip_data(c, b, s, o, l, 4),   # noqa: E741
    IPV6_DATA: lambda c, b, s, o, l: ip_data(c, b, s, o, l, 6),   # noqa: E741
    EXT_SWITCH: extended_switch,
    EXT_ROUTER: extended_router,
    EXT_GATEWAY: extended_gateway,
}
# application order: the raw header first, then the records that refine or override it
PARSE_ORDER = (RAW_HEADER, ETHERNET_FRAME, IPV4_DATA, IPV6_DATA, EXT_SWITCH, EXT_ROUTER, EXT_GATEWAY)
