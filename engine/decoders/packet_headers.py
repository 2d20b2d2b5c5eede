"""Sampled packet headers (sFlow raw packet header records) parsed at per-row offsets, vectorised.

Each layer is read through a window: the same few bytes of every header, gathered at once (one opaque
copy per row) at that header's offset of the layer, so a field is a strided column of the window.
Ethernet → up to three 802.1Q / 802.1ad tags → up to eight MPLS labels → IPv4 / IPv6 (skipping IPv6
extension headers) → TCP / UDP ports and TCP flags.  Tags, labels and IPv6 extensions are walked only
for the rows that have them.  A row whose header is too short for a layer has that layer's fields
left at zero (truncated headers are normal in sFlow); every field is read only where the header's
length covers it.  No Python code runs per header.

Header protocols (sFlow v5): 1 Ethernet, 11 IPv4, 12 IPv6; others give no L2/L3 fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .sflow_walk import column, gather_bytes as window

HEADER_ETHERNET, HEADER_IPV4, HEADER_IPV6 = 1, 11, 12
ETH_IPV4, ETH_IPV6, ETH_MPLS, ETH_MPLS_MC = 0x0800, 0x86DD, 0x8847, 0x8848
VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
IPV6_EXTENSIONS = (0, 43, 60)           # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
PORT_PROTOCOLS = (6, 17, 132)           # TCP, UDP, SCTP: ports at the start of the L4 header
MAX_TAGS, MAX_LABELS, MAX_V6_EXTENSIONS = 3, 8, 4
HEADER_WIDTH_MAX = 256                  # bytes of a header that are parsed (sFlow agents send 128 by default)

L2_WIDTH, L3_WIDTH, L4_WIDTH = 16, 40, 14
# the ParsedHeaders fields that come from the IP and transport headers: the record field each fills, its dtype
_IP_FIELDS = (("src", "src_host", np.uint8), ("dst", "dst_host", np.uint8), ("proto", "proto", np.uint8),
              ("tos", "tos", np.uint8), ("src_port", "src_port", np.uint16), ("dst_port", "dst_port", np.uint16),
              ("tcp_flags", "tcp_flags", np.uint8))


@dataclass
class ParsedHeaders:
    """Per header; a field the caller did not ask for is None."""
    etype: np.ndarray                   # after tags (0 for raw IP headers, as sfacctd)
    family: np.ndarray                  # uint8: 4, 6 or 0
    dst_mac: Optional[np.ndarray]       # (n, 6) uint8
    src_mac: Optional[np.ndarray]
    vlan: Optional[np.ndarray]          # first (outer) non-zero 802.1Q VLAN id, 0 if none
    src: Optional[np.ndarray]           # (n, 16) uint8, IPv4-mapped for IPv4
    dst: Optional[np.ndarray]
    proto: Optional[np.ndarray]
    tos: Optional[np.ndarray]           # IPv4 ToS, IPv6 traffic class
    src_port: Optional[np.ndarray]
    dst_port: Optional[np.ndarray]
    tcp_flags: Optional[np.ndarray]


def _u8(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return buf[np.minimum(pos, len(buf) - 1)]


def _be16(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (_u8(buf, pos).astype(np.int64) << 8) | _u8(buf, pos + 1)


def _one_of(values: np.ndarray, options: tuple) -> np.ndarray:
    """values ∈ options (a few comparisons: np.isin costs far more on small option sets)."""
    hit = values == options[0]
    for option in options[1:]:
        hit |= values == option
    return hit


def parse_headers(buf: np.ndarray, start: np.ndarray, length: np.ndarray, protocol: np.ndarray,
                  wanted=None, l2: Optional[np.ndarray] = None) -> ParsedHeaders:
    """Parse the headers at buf[start : start + length] (length <= HEADER_WIDTH_MAX).  `wanted` (record
    field names, None: all) skips the fields nobody reads; etype and family are always parsed.  l2: the
    first L2_WIDTH bytes of every header when the caller already has them (rows of a window)."""
    def want(*names: str) -> bool:
        return wanted is None or any(n in wanted for n in names)

    n = len(start)
    length = length.astype(np.int64)
    eth = (protocol == HEADER_ETHERNET) & (length >= 14)
    etype = np.zeros(n, np.int64)
    l3 = np.zeros(n, np.int64)
    vlan = np.zeros(n, np.int64) if want("vlan") else None
    dst_mac = src_mac = None
    mpls = np.zeros(n, bool)
    if eth.any():
        if l2 is None:
            l2 = window(buf, start, L2_WIDTH)
        etype = np.where(eth, column(l2, 12, ">u2"), 0)
        l3 = eth * 14
        if want("src_mac", "dst_mac"):
            dst_mac = np.where(eth[:, None], l2[:, 0:6], 0).astype(np.uint8)
            src_mac = np.where(eth[:, None], l2[:, 6:12], 0).astype(np.uint8)
        tagged = np.flatnonzero(eth & _one_of(etype, VLAN_TAGS))
        if len(tagged):
            _skip_tags(buf, start, length, tagged, etype, l3, vlan)
        mpls = eth & ((etype == ETH_MPLS) | (etype == ETH_MPLS_MC))
        labelled = np.flatnonzero(mpls)
        if len(labelled):
            _skip_labels(buf, start, length, labelled, l3)

    ip = (eth & ((etype == ETH_IPV4) | (etype == ETH_IPV6) | mpls)) | (protocol == HEADER_IPV4) | (
        protocol == HEADER_IPV6)
    fields = dict.fromkeys(name for name, _, _ in _IP_FIELDS)
    family = np.zeros(n, np.uint8)
    if ip.any():
        l3win = window(buf, start + l3, L3_WIDTH)
        first = column(l3win, 0, "u1")
        nibble = first >> 4
        v4 = ((eth & (etype == ETH_IPV4)) | mpls | (protocol == HEADER_IPV4)) & (nibble == 4) & (l3 + 20 <= length)
        v6 = ((eth & (etype == ETH_IPV6)) | mpls | (protocol == HEADER_IPV6)) & (nibble == 6) & (l3 + 40 <= length)
        family = (v4 * np.uint8(4)) | (v6 * np.uint8(6))
        _parse_ip(buf, start, length, l3, l3win, first, v4, v6, want, fields)
    if want("src_mac", "dst_mac") and dst_mac is None:
        dst_mac = src_mac = np.zeros((n, 6), np.uint8)
    for name, record_field, dtype in _IP_FIELDS:          # no IP header (or no ports): zeros, when wanted
        if fields[name] is None and want(record_field):
            fields[name] = np.zeros((n, 16) if name in ("src", "dst") else n, dtype)
    return ParsedHeaders(etype, family, dst_mac, src_mac, vlan, **fields)


def _skip_tags(buf, start, length, rows, etype, l3, vlan) -> None:
    """802.1Q / 802.1ad tags of the rows that have them: etype and l3 move past them; vlan = the first
    non-zero VLAN id (updated in place)."""
    at, et, off, ln = start[rows], etype[rows], l3[rows], length[rows]
    vid = np.zeros(len(rows), np.int64)
    for _ in range(MAX_TAGS):
        tag = _one_of(et, VLAN_TAGS) & (off + 4 <= ln)
        if not tag.any():
            break
        p = at + off
        vid = np.where(tag & (vid == 0), _be16(buf, p) & 0x0FFF, vid)
        et = np.where(tag, _be16(buf, p + 2), et)
        off = off + 4 * tag
    etype[rows], l3[rows] = et, off
    if vlan is not None:
        vlan[rows] = vid


def _skip_labels(buf, start, length, rows, l3) -> None:
    """MPLS labels up to the bottom of the stack (at most MAX_LABELS): l3 moves past them (in place)."""
    at, off, ln = start[rows], l3[rows], length[rows]
    live = np.ones(len(rows), bool)
    for _ in range(MAX_LABELS):
        more = live & (off + 4 <= ln)
        if not more.any():
            break
        bottom = (_u8(buf, at + off + 2) & 1) == 1
        off = off + 4 * more
        live = more & ~bottom
    l3[rows] = off


def _parse_ip(buf, start, length, l3, l3win, first, v4, v6, want, fields: dict) -> None:
    """IPv4 / IPv6 fields of the rows v4 / v6 (the L3 header at l3, its first L3_WIDTH bytes in l3win),
    then the transport ports and TCP flags; fills `fields`."""
    any4, any6 = v4.any(), v6.any()
    if want("src_host", "dst_host"):
        for side, at4, at6 in (("src", 12, 8), ("dst", 16, 24)):
            words = np.zeros((len(v4), 2), "<u8")           # the 16 address bytes as two words
            if any4:
                mapped = (column(l3win, at4, "<u4").astype("<u8") << np.uint64(32)) | np.uint64(0xFFFF0000)
                words[:, 1] = np.where(v4, mapped, 0)
            if any6:
                words[:, 0] = np.where(v6, column(l3win, at6, "<u8"), 0)
                words[:, 1] = np.where(v6, column(l3win, at6 + 8, "<u8"), words[:, 1])
            fields[side] = words.view(np.uint8)
    second = column(l3win, 1, "u1")
    if want("tos"):
        tos = np.where(v4, second, 0)
        if any6:
            tos = np.where(v6, ((first & 0x0F) << 4) | (second >> 4), tos)
        fields["tos"] = tos.astype(np.uint8)
    need_l4 = want("src_port", "dst_port", "tcp_flags")
    if not (need_l4 or want("proto")):
        return
    proto = np.where(v4, column(l3win, 9, "u1"), 0) if any4 else np.zeros(len(v4), np.int64)
    if any6:
        proto = np.where(v6, column(l3win, 6, "u1"), proto)
    later_fragment = v4 & ((column(l3win, 6, ">u2") & 0x1FFF) != 0)
    l4 = l3 + np.where(v4, (first & 0x0F).astype(np.int64) * 4, 40)
    if any6:
        chained = np.flatnonzero(v6 & _one_of(proto, IPV6_EXTENSIONS + (IPV6_FRAGMENT,)))
        if len(chained):
            proto = proto.astype(np.int64)
            _skip_extensions(buf, start, length, chained, proto, l4, later_fragment)
    fields["proto"] = proto.astype(np.uint8)
    if not need_l4:
        return
    has_ports = (v4 | v6) & _one_of(proto, PORT_PROTOCOLS) & ~later_fragment & (l4 + 4 <= length)
    if not has_ports.any():
        return
    l4win = window(buf, start + np.minimum(l4, HEADER_WIDTH_MAX), L4_WIDTH)
    fields["src_port"] = np.where(has_ports, column(l4win, 0, ">u2"), 0).astype(np.uint16)
    fields["dst_port"] = np.where(has_ports, column(l4win, 2, ">u2"), 0).astype(np.uint16)
    has_flags = has_ports & (proto == 6) & (l4 + 14 <= length)
    fields["tcp_flags"] = np.where(has_flags, column(l4win, 13, "u1"), 0).astype(np.uint8)


def _skip_extensions(buf, start, length, rows, proto, l4, later_fragment) -> None:
    """IPv6 extension headers (hop-by-hop, routing, destination options, fragment) of the rows that have
    them: proto becomes the next header after them, l4 moves past them, a non-first fragment is flagged
    (all in place)."""
    at, pr, off, ln = start[rows], proto[rows], l4[rows], length[rows]
    later = later_fragment[rows]
    for _ in range(MAX_V6_EXTENSIONS):
        fits = off + 8 <= ln
        ext = _one_of(pr, IPV6_EXTENSIONS) & fits
        frag = (pr == IPV6_FRAGMENT) & fits
        if not (ext.any() or frag.any()):
            break
        p = at + np.minimum(off, HEADER_WIDTH_MAX)
        later |= frag & ((_be16(buf, p + 2) & 0xFFF8) != 0)
        step = np.where(ext, (_u8(buf, p + 1).astype(np.int64) + 1) * 8, np.where(frag, 8, 0))
        pr = np.where(ext | frag, _u8(buf, p), pr)
        off = off + step
    proto[rows], l4[rows], later_fragment[rows] = pr, off, later
