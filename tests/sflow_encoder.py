"""Build sFlow v5 datagrams for tests (independent of the decoder: struct.pack from RFC-style layouts)."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Optional


def _addr(ip: str) -> bytes:
    a = ipaddress.ip_address(ip)
    return struct.pack(">I", 1 if a.version == 4 else 2) + a.packed


def _pad(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def record(rtype: int, body: bytes) -> bytes:
    body = _pad(body)
    return struct.pack(">II", rtype, len(body)) + body


def ethernet_header(src_mac: bytes, dst_mac: bytes, vlans: tuple[int, ...], payload: bytes, ipv6: bool,
                    qinq: bool = False) -> bytes:
    h = dst_mac + src_mac
    for i, v in enumerate(vlans):
        tpid = 0x88A8 if (qinq and i == 0 and len(vlans) > 1) else 0x8100
        h += struct.pack(">HH", tpid, v)
    return h + struct.pack(">H", 0x86DD if ipv6 else 0x0800) + payload


def ip_packet(src: str, dst: str, proto: int, sport: int = 0, dport: int = 0, tos: int = 0, flags: int = 0,
              payload_len: int = 0) -> bytes:
    if proto == 6:
        l4 = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 1024, 0, 0)
    elif proto == 17:
        l4 = struct.pack(">HHHH", sport, dport, 8 + payload_len, 0)
    else:
        l4 = struct.pack(">BBHI", 128 if proto == 58 else 8, 0, 0, 0)     # echo request
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        return struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + len(l4) + payload_len, 0, 0, 64, proto, 0,
                           a.packed, b.packed) + l4
    return struct.pack(">IHBB16s16s", (6 << 28) | (tos << 20), len(l4) + payload_len, proto, 64,
                       a.packed, b.packed) + l4


def raw_header_record(header: bytes, frame_length: int, protocol: int = 1, stripped: int = 4) -> bytes:
    return record(1, struct.pack(">IIII", protocol, frame_length, stripped, len(header)) + header)


def switch_record(src_vlan: int, dst_vlan: int) -> bytes:
    return record(1001, struct.pack(">IIII", src_vlan, 0, dst_vlan, 0))


def router_record(next_hop: str, src_mask: int, dst_mask: int) -> bytes:
    return record(1002, _addr(next_hop) + struct.pack(">II", src_mask, dst_mask))


def gateway_record(next_hop: str, my_as: int, src_as: int, src_peer_as: int, path: tuple[int, ...]) -> bytes:
    segs = struct.pack(">I", 1 if path else 0)
    if path:
        segs += struct.pack(">II", 2, len(path)) + b"".join(struct.pack(">I", a) for a in path)
    return record(1003, _addr(next_hop) + struct.pack(">III", my_as, src_as, src_peer_as) + segs
                  + struct.pack(">II", 0, 100))


def flow_sample(seq: int, rate: int, in_if: int, out_if: int, records: list[bytes], expanded: bool = False,
                pool: int = 0) -> bytes:
    if expanded:
        body = struct.pack(">IIIIIIIIIII", seq, 0, in_if, rate, pool, 0, 0, in_if, 0, out_if, len(records))
        return struct.pack(">II", 3, len(body) + sum(map(len, records))) + body + b"".join(records)
    body = struct.pack(">IIIIIIII", seq, in_if, rate, pool, 0, in_if, out_if, len(records))
    return struct.pack(">II", 1, len(body) + sum(map(len, records))) + body + b"".join(records)


GENERIC_FIELDS = ">IIQIIQIIIIIIQIIIIII"


def counter_sample(seq: int, if_index: int, generic: tuple, ethernet: Optional[tuple] = None,
                   expanded: bool = False) -> bytes:
    recs = [record(1, struct.pack(GENERIC_FIELDS, *generic))]
    if ethernet is not None:
        recs.append(record(2, struct.pack(">13I", *ethernet)))
    if expanded:
        body = struct.pack(">IIII", seq, 0, if_index, len(recs))
        return struct.pack(">II", 4, len(body) + sum(map(len, recs))) + body + b"".join(recs)
    body = struct.pack(">III", seq, if_index, len(recs))
    return struct.pack(">II", 2, len(body) + sum(map(len, recs))) + body + b"".join(recs)


def datagram(agent: str, seq: int, samples: list[bytes], sub_agent: int = 0, uptime: int = 1000) -> bytes:
    return (struct.pack(">I", 5) + _addr(agent) + struct.pack(">IIII", sub_agent, seq, uptime, len(samples))
            + b"".join(samples))


@dataclass
class GeneratedSample:
    """What a generated flow sample says, for independent expectations."""
    agent: str
    rate: int
    frame_length: int
    ipv6: bool
    proto: int
    vlans: tuple = field(default_factory=tuple)


STACKED_SOURCES = ("10.9.", "2001:db8:9::")    # source addresses of the samples with two VLAN tags


def generated_traffic(n_datagrams: int, seed: int = 1, samples_per_datagram: int = 6
                      ) -> tuple[list[bytes], list[GeneratedSample]]:
    """Datagrams from IPv4 and IPv6 agents: IPv4/IPv6 inner packets, one VLAN tag or two (802.1Q-in-802.1Q or
    802.1ad outer; sources in STACKED_SOURCES), TCP/UDP/ICMP, several rates, extended switch/router/gateway
    records, and a counter sample every tenth datagram."""
    import random
    rnd = random.Random(seed)
    agents = ("192.0.2.10", "192.0.2.11", "2001:db8::a")
    rates = (1, 256, 1000, 2048)
    out, truth = [], []
    seqs: dict = {}
    for d in range(n_datagrams):
        agent = agents[d % len(agents)]
        samples = []
        for s in range(samples_per_datagram):
            ipv6 = rnd.random() < 0.4
            proto = rnd.choice((6, 17, 1 if not ipv6 else 58))
            vlans = rnd.choice(((), (100,), (200, 300)))
            stacked = len(vlans) > 1        # stacked tags: sources in their own range (STACKED_SOURCES)
            if ipv6:
                net = "2001:db8:9::" if stacked else "2001:db8:1::"
                src, dst = f"{net}{rnd.randint(1, 20):x}", f"2001:db8:2::{rnd.randint(1, 20):x}"
            else:
                net = "10.9" if stacked else "10.0"
                src, dst = f"{net}.{rnd.randint(0, 3)}.{rnd.randint(1, 20)}", f"10.1.0.{rnd.randint(1, 20)}"
            pkt = ip_packet(src, dst, proto, rnd.choice((80, 443, 53)), rnd.randint(1024, 1100),
                            tos=rnd.choice((0, 0x20)), flags=0x18 if proto == 6 else 0)
            header = ethernet_header(bytes([2, 0, 0, 0, 0, rnd.randint(1, 5)]), bytes([2, 0, 0, 0, 1, 1]), vlans,
                                     pkt, ipv6, qinq=stacked and rnd.random() < 0.5)
            frame_length = rnd.randint(64, 1518)
            rate = rnd.choice(rates)
            recs = [raw_header_record(header[:128], frame_length)]
            if rnd.random() < 0.5:
                recs.append(switch_record(rnd.choice((0, 10, 20)), rnd.choice((0, 30))))
            if rnd.random() < 0.5:
                recs.append(router_record("2001:db8:ff::1" if ipv6 else "10.255.0.1", rnd.choice((16, 24)),
                                          rnd.choice((8, 24))))
            if rnd.random() < 0.3:
                next_hop = rnd.choice(("2001:db8:ff::2", "10.255.0.2")) if ipv6 else "10.255.0.2"
                recs.append(gateway_record(next_hop, 65000, rnd.choice((0, 64500)), 64501,
                                           rnd.choice(((), (64502,), (64502, 64503)))))
            samples.append(flow_sample(d * 100 + s, rate, rnd.randint(1, 4), rnd.randint(1, 4), recs,
                                       expanded=rnd.random() < 0.3))
            truth.append(GeneratedSample(agent, rate, frame_length, ipv6, proto, vlans))
        if d % 10 == 0:
            generic = (7, 6, 10**9, 1, 3, 10**6 + d, 100, 5, 1, 0, 0, 0, 2 * 10**6, 200, 6, 2, 0, 0, 0)
            samples.append(counter_sample(d, 7, generic, tuple(range(13)), expanded=d % 20 == 0))
        seqs[agent] = seqs.get(agent, 0) + 1
        out.append(datagram(agent, seqs[agent], samples))
    return out, truth


# -- sFlow v2 / v4 (no length fields: every structure's size follows from its type) ---------------------

def v4_flow_sample(seq: int, rate: int, in_if: int, out_if: int, header: bytes, frame_length: int,
                   extended: list[bytes] = (), protocol: int = 1) -> bytes:
    """Flow sample (type 1) carrying a sampled header (packet data type 1) and extended data items."""
    body = struct.pack(">IIIIIII", seq, in_if, rate, 0, 0, in_if, out_if)
    body += struct.pack(">IIII", 1, protocol, frame_length, len(header)) + _pad(header)
    body += struct.pack(">I", len(extended)) + b"".join(extended)
    return struct.pack(">I", 1) + body


def v4_switch(src_vlan: int, dst_vlan: int) -> bytes:
    return struct.pack(">IIIII", 1, src_vlan, 0, dst_vlan, 0)


def v4_router(next_hop: str, src_mask: int, dst_mask: int) -> bytes:
    return struct.pack(">I", 2) + _addr(next_hop) + struct.pack(">II", src_mask, dst_mask)


def v4_gateway(my_as: int, src_as: int, src_peer_as: int, path: tuple[int, ...], version: int = 4) -> bytes:
    """v4: AS path segments, communities, localpref; v2: a flat AS list."""
    body = struct.pack(">IIII", 3, my_as, src_as, src_peer_as)
    if version == 4:
        segs = [struct.pack(">II", 2, len(path)) + b"".join(struct.pack(">I", a) for a in path)] if path else []
        body += struct.pack(">I", len(segs)) + b"".join(segs) + struct.pack(">I", 0) + struct.pack(">I", 100)
    else:
        body += struct.pack(">I", len(path)) + b"".join(struct.pack(">I", a) for a in path)
    return body


def v4_generic_counters(seq: int, if_index: int, generic: tuple) -> bytes:
    return struct.pack(">IIIII", 2, seq, if_index, 0, 1) + struct.pack(GENERIC_FIELDS, *generic)


def v4_datagram(agent: str, seq: int, samples: list[bytes], version: int = 4, uptime: int = 1000) -> bytes:
    header = struct.pack(">I", version) + _addr(agent) + struct.pack(">III", seq, uptime, len(samples))
    return header + b"".join(samples)


def v4_sampled_ip(seq: int, rate: int, in_if: int, out_if: int, src: str, dst: str, proto: int, sport: int,
                  dport: int, length: int, tos: int = 0, extended: list[bytes] = ()) -> bytes:
    """Flow sample with sampled IPv4 / IPv6 (packet data types 2 / 3) instead of a header."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    kind = 2 if a.version == 4 else 3
    data = struct.pack(">II", length, proto) + a.packed + b.packed + struct.pack(">IIII", sport, dport, 0, tos)
    body = struct.pack(">IIIIIII", seq, in_if, rate, 0, 0, in_if, out_if) + struct.pack(">I", kind) + data
    return struct.pack(">I", 1) + body + struct.pack(">I", len(extended)) + b"".join(extended)


def v4_user(user: bytes) -> bytes:
    return struct.pack(">II", 4, len(user)) + _pad(user)


def v4_url(url: bytes) -> bytes:
    return struct.pack(">III", 5, 1, len(url)) + _pad(url)


def v4_counters(seq: int, if_index: int, ctype: int, generic: tuple, specific: bytes = b"") -> bytes:
    """Counter sample of counters type ctype (1 generic, 2 Ethernet, 3 token ring, 4 FDDI, 5 VG, 6 WAN):
    the generic block then the type's own counters; ctype 7 (VLAN): `specific` only."""
    block = specific if ctype == 7 else struct.pack(GENERIC_FIELDS, *generic) + specific
    return struct.pack(">IIIII", 2, seq, if_index, 0, ctype) + block


def legacy_traffic(seed: int = 3) -> list[bytes]:
    """sFlow v2 and v4 datagrams: sampled headers (IPv4 / IPv6, VLAN), sampled IPv4 / IPv6, extended switch /
    router / gateway / user / URL, and generic, Ethernet, token ring, VG and VLAN counter samples."""
    import random
    rnd = random.Random(seed)
    out = []
    generic = (3, 6, 10**8, 1, 3, 5000, 50, 5, 1, 0, 0, 0, 7000, 70, 6, 2, 0, 0, 0)
    for d in range(12):
        version = (2, 4)[d % 2]
        agent = ("198.51.100.2", "198.51.100.4", "3fff::4")[d % 3]
        samples = []
        for s in range(4):
            ipv6 = s == 3
            src = f"2001:db8:4::{s + 1}" if ipv6 else f"10.4.{d}.{s + 1}"
            dst = "2001:db8:5::1" if ipv6 else "10.5.0.1"
            ext = [v4_switch(rnd.choice((0, 40)), 0), v4_router("10.255.4.1", 24, 16),
                   v4_gateway(65000, 64600 + d, 64601, (64602, 64603 + s), version), v4_url(b"http://example.net/")]
            ext = rnd.sample(ext, rnd.randint(0, len(ext)))
            rate = rnd.choice((1, 100, 512))
            if s == 2:
                samples.append(v4_sampled_ip(d * 10 + s, rate, 1, 2, src, dst, 17, 53, 1000 + d, 300 + d,
                                             tos=0x10, extended=ext))
            else:
                pkt = ip_packet(src, dst, 6, 443, 2000 + d, tos=0x20, flags=0x12)
                hdr = ethernet_header(b"\x02\x00\x00\x00\x04\x01", b"\x02\x00\x00\x00\x05\x01",
                                      (rnd.choice((0, 300)),) if s == 0 else (), pkt, ipv6)
                samples.append(v4_flow_sample(d * 10 + s, rate, 3, 4, hdr, 700 + 10 * d + s, ext))
        ctype = (1, 2, 3, 5, 7)[d % 5]
        specific = {1: b"", 2: struct.pack(">13I", *range(13)), 3: bytes(72), 5: bytes(80),
                    7: struct.pack(">IQIIII", 40, 12345, 10, 2, 1, 0)}[ctype]
        samples.insert(1, v4_counters(d, 9, ctype, generic, specific))
        out.append(v4_datagram(agent, d // 3 + 1, samples, version=version))
    return out
