"""Generated NetFlow v9 traffic and a networks file of overlapping IPv4/IPv6 prefixes, for the networks tests.

Deterministic (seeded): flows whose addresses fall inside, across and outside the file's prefixes, with
masks that are shorter, equal and longer than the file's, some without BGP next hop (for use_ip_next_hop)
and some with a zero mask.  Used by tests/test_networks_*.py and perf/enrich_overhead.py.
"""
from __future__ import annotations

import ipaddress
import random

from engine.pcap import UdpPacket, write_pcap
from engine.schema import IPV4_MAPPED_PREFIX
from netflow_encoder import Field, Template, data_set, template_set, v9_packet

# IPv4: src, dst, src mask, dst mask, src AS, dst AS, BGP next hop, IP next hop, peer dst AS, peer src AS,
# bytes, packets, proto, first, last
T4 = Template(256, [Field(8, 4), Field(12, 4), Field(9, 1), Field(13, 1), Field(16, 4), Field(17, 4), Field(18, 4),
                    Field(15, 4), Field(128, 4), Field(129, 4), Field(1, 4), Field(2, 4), Field(4, 1),
                    Field(22, 4), Field(21, 4)])
T6 = Template(257, [Field(27, 16), Field(28, 16), Field(29, 1), Field(30, 1), Field(16, 4), Field(17, 4),
                    Field(63, 16), Field(62, 16), Field(128, 4), Field(129, 4), Field(1, 4), Field(2, 4),
                    Field(4, 1), Field(22, 4), Field(21, 4)])

NETWORKS_FILE = """\
! overlapping IPv4 and IPv6 prefixes, every syntax form
10.0.0.0/8
65001,10.1.0.0/16
64512_65002,10.1.2.0/24
192.0.2.1,65003,10.1.2.128/25
192.0.2.2,64513_65004,10.1.2.192/26
198.51.100.0/24
65005,172.16.0.0/12
64514_65006,172.16.5.0/24
2001:db8::/32
65010,2001:db8:1::/48
64520_65011,2001:db8:1:2::/64
2001:db8::1,65012,2001:db8:1:2:8000::/65
2001:db8::2,64521_65013,2001:db8:1:2:c000::/66
65014,2001:db8:ff00::/40
"""

# the same without the BGP next hop field (IE 18 / 63): use_ip_next_hop takes the IP next hop then
T4_NO_BGP = Template(258, [f for f in T4.fields if f.ie != 18])
T6_NO_BGP = Template(259, [f for f in T6.fields if f.ie != 63])

_POOL4 = ["10.1.2.130", "10.1.2.200", "10.1.2.5", "10.1.9.9", "10.200.0.1", "198.51.100.7", "172.16.5.77",
          "172.17.0.1", "203.0.113.9", "8.8.8.8", "10.1.2.129"]
_POOL6 = ["2001:db8:1:2:8000::5", "2001:db8:1:2:c000::9", "2001:db8:1:2::7", "2001:db8:1:3::1",
          "2001:db8:2::1", "2001:db8:ff01::1", "2001:db9::1", "2001:db8:1:2:ffff::1"]
EXPORTERS = ["192.0.2.10", "192.0.2.11"]


def _flows(rng: random.Random, family: int, n: int) -> list[list]:
    pool = _POOL4 if family == 4 else _POOL6
    width = 32 if family == 4 else 128
    rows = []
    for _ in range(n):
        src, dst = rng.choice(pool), rng.choice(pool)
        # flow masks: absent, short, equal-ish, long
        smask = rng.choice([0, 8, 16, 24, 25, 26, 30, width] if family == 4 else [0, 32, 48, 64, 65, 66, 70, width])
        dmask = rng.choice([0, 8, 16, 24, 25, 26, 30, width] if family == 4 else [0, 32, 48, 64, 65, 66, 70, width])
        bgp_nh = rng.choice(["0.0.0.0", "192.0.2.77"] if family == 4 else ["::", "2001:db8::77"])
        ip_nh = rng.choice(["0.0.0.0", "192.0.2.99"] if family == 4 else ["::", "2001:db8::99"])
        rows.append([src, dst, smask, dmask, rng.choice([0, 100, 200]), rng.choice([0, 300, 400]), bgp_nh, ip_nh,
                     rng.choice([0, 500]), rng.choice([0, 600]), rng.randint(40, 1500), rng.randint(1, 5), 6,
                     3_500_000, 3_590_000])
    return rows


def generate(seed: int = 7, count: int = 60, per_packet: int = 20, exporters=EXPORTERS):
    """(packets, flows): count v9 packets per exporter alternating IPv4/IPv6 data (templates in every packet),
    and every flow as (exporter, family, row) with row in the template's field order."""
    rng = random.Random(seed)
    out, flows = [], []
    ts = 1_700_000_000_000_000
    for e, exporter in enumerate(exporters):
        src = IPV4_MAPPED_PREFIX + ipaddress.ip_address(exporter).packed
        dst = IPV4_MAPPED_PREFIX + ipaddress.ip_address("127.0.0.1").packed
        for i in range(count):
            family = 4 if i % 2 == 0 else 6
            no_bgp = i % 4 >= 2
            tpl = {(4, False): T4, (6, False): T6, (4, True): T4_NO_BGP, (6, True): T6_NO_BGP}[family, no_bgp]
            rows = _flows(rng, family, per_packet)
            if no_bgp:
                for r in rows:
                    r[6] = None         # no BGP next hop field
            flows += [(exporter, family, r) for r in rows]
            wire = [[v for j, v in enumerate(r) if not (no_bgp and j == 6)] for r in rows]
            sets = [template_set(9, [T4, T6, T4_NO_BGP, T6_NO_BGP]), data_set(tpl, wire)]
            pkt = v9_packet(sets, sys_uptime_ms=3_600_000, unix_secs=1_700_000_000, sequence=i, source_id=e)
            out.append(UdpPacket(ts + i * 1000, src, 2055, dst, 2100, pkt))
    return out, flows


def packets(**kw) -> list[UdpPacket]:
    return generate(**kw)[0]


def write_traffic(path: str, **kw) -> None:
    write_pcap(path, packets(**kw))
