"""Read UDP datagrams out of pcap and pcapng files (pcap_savefile / -I), and write simple pcaps.

Link types: Ethernet (with 802.1Q/QinQ tags), Linux cooked (SLL, SLL2), raw IP,
BSD loopback (null).  Network: IPv4 (first fragments only: later fragments
carry no UDP header) and IPv6 (skipping hop-by-hop, routing and destination
option headers).  Anything else — TCP, ARP, truncated frames — is skipped and
counted in PcapStats.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from .schema import IPV4_MAPPED_PREFIX

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
IPV6_EXT_HEADERS = {0, 43, 60}     # hop-by-hop, routing, destination options
PROTO_UDP = 17


@dataclass
class UdpPacket:
    ts_us: int          # capture time, µs since epoch
    src: bytes          # 16 bytes, IPv4-mapped for IPv4
    sport: int
    dst: bytes
    dport: int
    payload: bytes


@dataclass
class PcapStats:
    frames: int = 0
    udp: int = 0
    skipped: dict = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


class PcapError(ValueError):
    """The file is not a pcap/pcapng we can read."""


def _frames_pcap(f: BinaryIO, magic: bytes) -> Iterator[tuple[int, int, bytes]]:
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rest = f.read(20)
    if len(rest) < 20:
        raise PcapError("truncated pcap header")
    linktype = struct.unpack(endian + "HHiIII", rest)[5] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    while True:
        hdr = f.read(16)
        if len(hdr) < 16:
            return
        sec, frac, incl, _orig = rec.unpack(hdr)
        data = f.read(incl)
        if len(data) < incl:
            return
        ts_us = sec * 1_000_000 + (frac // 1000 if nanos else frac)
        yield linktype, ts_us, data


def _frames_pcapng(f: BinaryIO, first: bytes) -> Iterator[tuple[int, int, bytes]]:
    buf = first + f.read()
    pos, endian = 0, "<"
    interfaces: list[tuple[int, int]] = []      # (linktype, ticks per second)
    while pos + 12 <= len(buf):
        btype = struct.unpack_from(endian + "I", buf, pos)[0]
        if btype == 0x0A0D0D0A:                 # section header: fix endianness, reset interfaces
            bom = buf[pos + 8:pos + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
        if blen < 12 or pos + blen > len(buf):
            return
        body = buf[pos + 8:pos + blen - 4]
        if btype == 1 and len(body) >= 8:           # interface description
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _if_tsresol(body[8:], endian)))
        elif btype == 6 and len(body) >= 20:        # enhanced packet
            ifid, hi, lo, caplen = struct.unpack_from(endian + "IIII", body, 0)
            if ifid < len(interfaces):
                linktype, tps = interfaces[ifid]
                ticks = (hi << 32) | lo
                yield linktype, ticks * 1_000_000 // tps, body[20:20 + caplen]
        elif btype == 3 and len(body) >= 4 and interfaces:   # simple packet
            yield interfaces[0][0], 0, body[4:]
        pos += blen


def _if_tsresol(options: bytes, endian: str) -> int:
    pos = 0
    while pos + 4 <= len(options):
        code, olen = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and olen >= 1:
            v = options[pos + 4]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
        pos += 4 + ((olen + 3) & ~3)
    return 1_000_000


def _network_layer(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(ethertype-like family, offset of the IP header) or None."""
    if linktype == LINKTYPE_ETHERNET:
        off, etype = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
        while etype in (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD) and len(frame) >= off + 4:
            etype, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
        return etype, off
    if linktype == LINKTYPE_LINUX_SLL:
        return (int.from_bytes(frame[14:16], "big"), 16) if len(frame) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return (int.from_bytes(frame[0:2], "big"), 20) if len(frame) >= 20 else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None
        fam = struct.unpack("<I", frame[:4])[0]
        if fam > 0xFFFF:
            fam = struct.unpack(">I", frame[:4])[0]
        return (ETH_IPV4 if fam == 2 else ETH_IPV6), 4
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not frame:
            return None
        return (ETH_IPV4 if frame[0] >> 4 == 4 else ETH_IPV6), 0
    return None


def _udp(frame: bytes, etype: int, off: int, stats: PcapStats) -> tuple[bytes, bytes, bytes] | None:
    """(src16, dst16, udp segment) or None."""
    if etype == ETH_IPV4:
        if len(frame) < off + 20 or frame[off] >> 4 != 4:
            stats.skip("bad ipv4")
            return None
        ihl = (frame[off] & 0x0F) * 4
        total = int.from_bytes(frame[off + 2:off + 4], "big")
        frag = int.from_bytes(frame[off + 6:off + 8], "big")
        if frame[off + 9] != PROTO_UDP:
            stats.skip("not udp")
            return None
        if frag & 0x1FFF:
            stats.skip("ipv4 non-first fragment")
            return None
        end = off + total if total >= ihl else len(frame)
        src = IPV4_MAPPED_PREFIX + frame[off + 12:off + 16]
        dst = IPV4_MAPPED_PREFIX + frame[off + 16:off + 20]
        return src, dst, frame[off + ihl:min(end, len(frame))]
    if etype == ETH_IPV6:
        if len(frame) < off + 40:
            stats.skip("bad ipv6")
            return None
        nxt, plen = frame[off + 6], int.from_bytes(frame[off + 4:off + 6], "big")
        src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
        end, pos = min(off + 40 + plen, len(frame)), off + 40
        while nxt in IPV6_EXT_HEADERS and pos + 8 <= end:
            nxt, pos = frame[pos], pos + (frame[pos + 1] + 1) * 8
        if nxt != PROTO_UDP:
            stats.skip("not udp")
            return None
        return src, dst, frame[pos:end]
    stats.skip("not ip")
    return None


def iter_udp(path: str, stats: PcapStats | None = None) -> Iterator[UdpPacket]:
    """Yield every UDP datagram of a pcap or pcapng file, in file order."""
    stats = stats if stats is not None else PcapStats()
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            frames = _frames_pcap(f, magic)
        elif magic == b"\x0a\x0d\x0d\x0a":
            frames = _frames_pcapng(f, magic)
        else:
            raise PcapError(f"{path}: not a pcap or pcapng file")
        for linktype, ts_us, frame in frames:
            stats.frames += 1
            net = _network_layer(linktype, frame)
            if net is None:
                stats.skip(f"linktype {linktype}")
                continue
            got = _udp(frame, net[0], net[1], stats)
            if got is None:
                continue
            src, dst, seg = got
            if len(seg) < 8:
                stats.skip("truncated udp")
                continue
            sport, dport, ulen = struct.unpack_from(">HHH", seg, 0)
            end = ulen if 8 <= ulen <= len(seg) else len(seg)
            stats.udp += 1
            yield UdpPacket(ts_us, src, sport, dst, dport, bytes(seg[8:end]))


def write_pcap(path: str, packets: list[UdpPacket]) -> None:
    """Write UDP datagrams as a raw-IPv4/IPv6 pcap (checksums zero), e.g. for generated test traffic."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for p in packets:
            udp = struct.pack(">HHHH", p.sport, p.dport, 8 + len(p.payload), 0) + p.payload
            if p.src[:12] == IPV4_MAPPED_PREFIX and p.dst[:12] == IPV4_MAPPED_PREFIX:
                ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, PROTO_UDP, 0,
                                 p.src[12:], p.dst[12:])
            else:
                ip = struct.pack(">IHBB16s16s", 6 << 28, len(udp), PROTO_UDP, 64, p.src, p.dst)
            frame = ip + udp
            f.write(struct.pack("<IIII", p.ts_us // 1_000_000, p.ts_us % 1_000_000, len(frame), len(frame)))
            f.write(frame)
