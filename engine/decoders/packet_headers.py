"""Sampled packet headers (sFlow raw packet header records) parsed at fixed offsets, vectorised.

The headers of a batch are laid out as one zero-padded (n, W) byte matrix.  Each
layer is read at a per-row offset with fancy indexing: Ethernet → up to three
802.1Q / 802.1ad tags → up to eight MPLS labels → IPv4 / IPv6 (skipping IPv6
extension headers) → TCP / UDP ports and TCP flags.  A row whose header is too
short for a layer simply has that layer's fields left at zero (truncated headers
are normal in sFlow).  No Python code runs per header.

Header protocols (sFlow v5): 1 Ethernet, 11 IPv4, 12 IPv6; others give no L2/L3 fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sflow_walk import be_words

HEADER_ETHERNET, HEADER_IPV4, HEADER_IPV6 = 1, 11, 12
ETH_IPV4, ETH_IPV6, ETH_MPLS, ETH_MPLS_MC = 0x0800, 0x86DD, 0x8847, 0x8848
VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
IPV6_EXTENSIONS = (0, 43, 60)           # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
PORT_PROTOCOLS = (6, 17, 132)           # TCP, UDP, SCTP: ports at the start of the L4 header
MAX_TAGS, MAX_LABELS, MAX_V6_EXTENSIONS = 3, 8, 4


@dataclass
class ParsedHeaders:
    dst_mac: np.ndarray     # (n, 6) uint8
    src_mac: np.ndarray
    vlan: np.ndarray        # uint16, first (outer) 802.1Q tag, 0 if none
    etype: np.ndarray       # uint16, after tags (0 for raw IP headers, as sfacctd)
    family: np.ndarray      # uint8: 4, 6 or 0
    src: np.ndarray         # (n, 16) uint8, IPv4-mapped for IPv4
    dst: np.ndarray
    proto: np.ndarray       # uint8
    tos: np.ndarray         # uint8 (IPv4 ToS, IPv6 traffic class)
    src_port: np.ndarray    # uint16
    dst_port: np.ndarray
    tcp_flags: np.ndarray   # uint8


class _Reader:
    """Bounds-checked big-endian reads at per-row offsets of a header matrix."""

    def __init__(self, matrix: np.ndarray, length: np.ndarray) -> None:
        self.m = matrix
        self.length = length
        self.rows = np.arange(len(matrix))
        self.width = matrix.shape[1]
        self.flat = np.ascontiguousarray(matrix).reshape(-1)      # offsets are never negative
        self.base = self.rows * self.width

    def u8(self, off: np.ndarray) -> np.ndarray:
        v = self.flat[self.base + np.minimum(off, self.width - 1)].astype(np.int64)
        return np.where(off < self.length, v, 0)

    def u16(self, off: np.ndarray) -> np.ndarray:
        return self._word(off, ">u2", lambda: (self.u8(off) << 8) | self.u8(off + 1))

    def u32(self, off: np.ndarray) -> np.ndarray:
        return self._word(off, ">u4", lambda: (self.u16(off) << 16) | self.u16(off + 2))

    def _word(self, off: np.ndarray, dtype: str, bytewise) -> np.ndarray:
        """A big-endian word per row: one unaligned load where the whole word lies inside the header
        (the common case), else byte by byte (bytes past the header's end read as 0)."""
        size = int(dtype[-1])
        if self.width < size or not len(off):
            return bytewise()
        inside = (off + size <= self.length) & (off + size <= self.width)
        words = be_words(self.flat, dtype)[self.base + np.minimum(off, self.width - size)].astype(np.int64)
        return words if inside.all() else np.where(inside, words, bytewise())

    def span(self, off: np.ndarray, width: int) -> np.ndarray:
        if len(off) and width <= self.width:
            lo, hi = int(off.min()), int(off.max())
            if lo == hi and lo + width <= self.width:           # one offset for all rows: a slice
                return self.m[:, lo:lo + width]
        idx = np.minimum(off[:, None] + np.arange(width), self.width - 1)
        return self.flat[self.base[:, None] + idx]


def header_matrix(buf: np.ndarray, start: np.ndarray, length: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8: the first `width` bytes at each header start (one row gather over a strided view).

    Bytes beyond a header's length are whatever follows it in the buffer: every read of parse_headers is
    bounds-checked against the header's length (_Reader), so they are never used."""
    tail = start + width > len(buf)             # rows running past the buffer: clipped index gather
    if len(buf) < width or tail.all():
        return buf[np.minimum(start[:, None] + np.arange(width), len(buf) - 1)]
    m = np.lib.stride_tricks.sliding_window_view(buf, width)[np.where(tail, 0, start)]
    if tail.any():
        m[tail] = buf[np.minimum(start[tail][:, None] + np.arange(width), len(buf) - 1)]
    return m


def parse_headers(matrix: np.ndarray, length: np.ndarray, protocol: np.ndarray) -> ParsedHeaders:
    n = len(matrix)
    r = _Reader(matrix, length.astype(np.int64))
    eth = (protocol == HEADER_ETHERNET) & (r.length >= 14)
    zero = np.zeros(n, np.int64)
    dst_mac = np.where(eth[:, None], r.span(zero, 6), 0).astype(np.uint8)
    src_mac = np.where(eth[:, None], r.span(zero + 6, 6), 0).astype(np.uint8)
    etype = np.where(eth, r.u16(zero + 12), 0)
    l3 = np.where(eth, 14, 0).astype(np.int64)
    vlan = np.zeros(n, np.int64)
    for _ in range(MAX_TAGS):
        tagged = eth & np.isin(etype, VLAN_TAGS) & (l3 + 4 <= r.length)
        vlan = np.where(tagged & (vlan == 0), r.u16(l3) & 0x0FFF, vlan)
        etype = np.where(tagged, r.u16(l3 + 2), etype)
        l3 = l3 + 4 * tagged
    # MPLS: skip labels up to the bottom of stack, then guess the payload from the IP version nibble
    in_mpls = eth & np.isin(etype, (ETH_MPLS, ETH_MPLS_MC))
    for _ in range(MAX_LABELS):
        more = in_mpls & (l3 + 4 <= r.length)
        bottom = (r.u8(l3 + 2) & 1) == 1
        l3 = l3 + 4 * more
        in_mpls = more & ~bottom
    mpls = eth & np.isin(etype, (ETH_MPLS, ETH_MPLS_MC))
    nibble = r.u8(l3) >> 4
    v4 = ((eth & (etype == ETH_IPV4)) | (protocol == HEADER_IPV4) | (mpls & (nibble == 4))) & (nibble == 4)
    v6 = ((eth & (etype == ETH_IPV6)) | (protocol == HEADER_IPV6) | (mpls & (nibble == 6))) & (nibble == 6)
    v4 &= l3 + 20 <= r.length
    v6 &= l3 + 40 <= r.length

    family = np.where(v4, 4, np.where(v6, 6, 0)).astype(np.uint8)
    src = np.zeros((n, 16), np.uint8)
    dst = np.zeros((n, 16), np.uint8)
    src[v4, 10:12] = dst[v4, 10:12] = 0xFF
    if v4.any():
        src[v4, 12:] = r.span(l3 + 12, 4)[v4]
        dst[v4, 12:] = r.span(l3 + 16, 4)[v4]
    if v6.any():
        src[v6] = r.span(l3 + 8, 16)[v6]
        dst[v6] = r.span(l3 + 24, 16)[v6]
    proto = np.where(v4, r.u8(l3 + 9), np.where(v6, r.u8(l3 + 6), 0))
    tos = np.where(v4, r.u8(l3 + 1), np.where(v6, ((r.u8(l3) & 0x0F) << 4) | (r.u8(l3 + 1) >> 4), 0))
    later_fragment = v4 & ((r.u16(l3 + 6) & 0x1FFF) != 0)
    l4 = np.where(v4, l3 + (r.u8(l3) & 0x0F) * 4, l3 + 40)
    for _ in range(MAX_V6_EXTENSIONS):
        ext = v6 & np.isin(proto, IPV6_EXTENSIONS) & (l4 + 8 <= r.length)
        frag = v6 & (proto == IPV6_FRAGMENT) & (l4 + 8 <= r.length)
        later_fragment |= frag & ((r.u16(l4 + 2) & 0xFFF8) != 0)
        step = np.where(ext, (r.u8(l4 + 1) + 1) * 8, np.where(frag, 8, 0))
        proto = np.where(ext | frag, r.u8(l4), proto)
        l4 = l4 + step
    has_ports = (v4 | v6) & np.isin(proto, PORT_PROTOCOLS) & ~later_fragment & (l4 + 4 <= r.length)
    src_port = np.where(has_ports, r.u16(l4), 0)
    dst_port = np.where(has_ports, r.u16(l4 + 2), 0)
    has_flags = has_ports & (proto == 6) & (l4 + 14 <= r.length)
    tcp_flags = np.where(has_flags, r.u8(l4 + 13), 0)
    return ParsedHeaders(dst_mac, src_mac, vlan.astype(np.uint16), etype.astype(np.uint16), family, src, dst,
                         proto.astype(np.uint8), tos.astype(np.uint8), src_port.astype(np.uint16),
                         dst_port.astype(np.uint16), tcp_flags.astype(np.uint8))
