"""pre_tag_map, tag/tag2/label, pre_tag filters and aggregate_filter against nfacctd 1.7.7.

One generated capture (NetFlow v5 from three IPv4 exporters, IPFIX with IPv4/IPv6 flows, VLANs, MACs,
directions and next hops from an IPv6 exporter), one map, many print plugins with different filters:
both daemons run once (module scope) and every plugin's JSON rows must be identical.
"""
from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest

from conftest import nfacctd_reference, run_pmengine_pcap
from netflow_encoder import Field, Template, V5Record, data_set, ipfix_message, template_set, v5_packet
from test_differential_nfacctd import json_rows

from engine.pcap import UdpPacket, write_pcap
from engine.schema import IPV4_MAPPED_PREFIX

T0 = 1_700_000_000
V4_EXPORTERS = ("192.0.2.1", "192.0.2.2", "198.51.100.9")
V6_EXPORTER = "2001:db8::1"
COLLECTOR = "192.0.2.254"

IPFIX_TEMPLATE = Template(300, [
    Field(8, 4), Field(12, 4), Field(27, 16), Field(28, 16), Field(4, 1), Field(7, 2), Field(11, 2),
    Field(10, 4), Field(14, 4), Field(16, 4), Field(17, 4), Field(58, 2), Field(56, 6), Field(80, 6),
    Field(61, 1), Field(15, 4), Field(18, 4), Field(2, 8), Field(1, 8), Field(150, 4), Field(151, 4),
    Field(60, 1), Field(59, 2)])

PRETAG_MAP = """\
! generated traffic: see v5_records / ipfix_records
set_tag=1 ip=192.0.2.1 in=1
set_tag=2 ip=192.0.2.0/24 filter='udp and dst port 53'
set_tag=3 ip=192.0.2.0/24 engine_id=2 engine_type=1
set_tag=4 ip=198.51.100.9 src_as=65001 jeq=second
set_tag=5 ip=198.51.100.9 dst_as=64502
set_label=blue ip=0.0.0.0/0 nexthop=172.16.0.1 out=2
set_tag2=7 ip=2001:db8::1 vlan=100
set_label=red ip=2001:db8::/32 src_mac=00:11:22:33:44:01
set_tag=6 ip=2001:db8::1 direction=1 jeq=third
set_tag=8 ip=2001:db8::1 bgp_nexthop=203.0.113.7
set_tag=9 label=second ip=0.0.0.0/0 dst_as=64501 stack=sum
set_label=green label=third ip=::/0 filter='ip6 and tcp'
set_label=violet ip=::/0 filter='icmp'
"""

# plugin name -> (aggregate, extra keys)
BASE = "tag, tag2, label, peer_src_ip, vlan, src_mac, src_host, dst_host, src_port, dst_port, proto"
PLUGINS = {
    "all": (BASE, {}),
    "netnot53": ("src_host, dst_host, dst_port, proto", {"aggregate_filter": "src net 10.1.0.0/16 and not port 53"}),
    "udp_or_range": ("src_host, dst_port, proto", {"aggregate_filter": "udp or (tcp and dst portrange 1000-2000)"}),
    "v6_or_icmp": ("src_host, dst_host, proto", {"aggregate_filter": "ip6 or icmp"}),
    "vlan": ("vlan, src_host, tag2", {"aggregate_filter": "vlan 100"}),
    "hosts": ("src_host, dst_host", {"aggregate_filter": "host 10.1.2.3 or dst host 2001:db8:1::5"}),
    "shorthand": ("src_port, proto", {"aggregate_filter": "src port 53 or 80 or 443"}),
    "proto_net": ("src_host, dst_host", {"aggregate_filter": "ip proto 17 and src or dst net 192.168.0.0/16"}),
    "tags_in": ("tag, src_host", {"pre_tag_filter": "1,3-5"}),
    "tags_not2": ("tag, tag2", {"pre_tag_filter": "-2"}),
    "tag2_untagged": ("tag, tag2, label", {"pre_tag2_filter": "0"}),
    "labels": ("label, src_host", {"pre_tag_label_filter": "red,null"}),
    "label_not": ("tag, label", {"pre_tag_label_filter": "-blue"}),
    "combined": ("tag, label, dst_port", {"pre_tag_filter": "0-8", "aggregate_filter": "tcp"}),
}


def _addr(text: str) -> bytes:
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return IPV4_MAPPED_PREFIX + socket.inet_aton(text)


def v5_records(rng: random.Random, k: int) -> V5Record:
    rec = V5Record(
        src_addr=rng.choice(["10.1.2.3", f"10.1.{rng.randrange(4)}.{rng.randrange(9)}", "192.168.1.5",
                             f"10.2.0.{rng.randrange(5)}"]),
        dst_addr=rng.choice(["192.168.7.1", f"10.9.{rng.randrange(3)}.1", "8.8.8.8", "10.1.2.3"]),
        next_hop=rng.choice(["172.16.0.1", "172.16.0.2"]), input=rng.randrange(4), output=rng.randrange(4),
        packets=1 + k, octets=100 * (1 + k) + rng.randrange(40), first=3_590_000, last=3_595_000,
        src_port=rng.choice([53, 80, 443, 1500, 40000 + rng.randrange(3)]),
        dst_port=rng.choice([53, 80, 1000, 2000, 2001, 443]), proto=rng.choice([6, 6, 17, 17, 1, 47]),
        src_as=rng.choice([65000, 65001]), dst_as=rng.choice([64500, 64501, 64502]))
    if rec.proto == 47:             # nfacctd zeroes the ports of flows other than tcp/udp (icmp: the source
        rec.src_port = rec.dst_port = 0     # port): send none, that is the decoder's business, not this test's
    if rec.proto == 1:
        rec.src_port = 0
    return rec


def ipfix_values(rng: random.Random, k: int) -> list:
    v6 = rng.random() < 0.5
    proto = rng.choice([6, 17, 58 if v6 else 1])
    src4, dst4 = ("0.0.0.0", "0.0.0.0") if v6 else (rng.choice(["10.1.2.3", "192.168.3.3"]), "10.5.5.5")
    src6, dst6 = (rng.choice(["2001:db8:1::1", "2001:db8:2::9"]), rng.choice(["2001:db8:1::5", "2001:db8:3::3"])) \
        if v6 else ("::", "::")
    values = [src4, dst4, src6, dst6, proto, 0 if proto in (1, 58) else rng.choice([53, 80, 3000]), rng.choice([53, 443, 1200, 0]),
            rng.randrange(3), rng.randrange(3), rng.choice([65000, 65001]), rng.choice([64500, 64501]),
            rng.choice([100, 200]), rng.choice(["00:11:22:33:44:01", "00:11:22:33:44:02"]),
            "00:aa:bb:cc:dd:ee", rng.randrange(2), rng.choice(["172.16.0.1", "0.0.0.0"]),
            rng.choice(["203.0.113.7", "203.0.113.8"]), 2 + k, 64 * (2 + k), T0 - 30, T0 - 20, 6 if v6 else 4]
    values.append(values[11])       # postVlanId = vlanId: egress flows print IE 59, nfacctd's map matches IE 58
    return values


def make_capture(path: Path, seed: int = 6) -> None:
    rng = random.Random(seed)
    pkts = []
    for k in range(300):
        exporter = V4_EXPORTERS[k % 3]
        recs = [v5_records(rng, k * 3 + j) for j in range(3)]
        pkts.append(UdpPacket((T0 + k // 10) * 1_000_000, _addr(exporter), 50000, _addr(COLLECTOR), 2055,
                              v5_packet(recs, sys_uptime_ms=3_600_000, unix_secs=T0, flow_sequence=k * 3,
                                        engine_type=rng.randrange(2), engine_id=rng.randrange(3))))
    seq = 0
    for k in range(100):
        values = [ipfix_values(rng, k * 4 + j) for j in range(4)]
        sets = ([template_set(10, [IPFIX_TEMPLATE])] if k == 0 else []) + [data_set(IPFIX_TEMPLATE, values)]
        pkts.append(UdpPacket((T0 + 30 + k // 10) * 1_000_000, _addr(V6_EXPORTER), 50001, _addr("2001:db8::fe"),
                              2055, ipfix_message(sets, export_time=T0, sequence=seq)))
        seq += 4
    write_pcap(str(path), pkts)


def config(pcap: Path, mapfile: Path, outdir: Path) -> str:
    lines = [f"pcap_savefile: {pcap}", f"pre_tag_map: {mapfile}", "plugins: " +
             ", ".join(f"print[{n}]" for n in PLUGINS), "print_output_file_append: true",
             "print_refresh_time: 86400", "print_output: json"]
    for name, (agg, extra) in PLUGINS.items():
        lines += [f"aggregate[{name}]: {agg}", f"print_output_file[{name}]: {outdir}/{name}.json"]
        lines += [f"{key}[{name}]: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pretag_diff")
    pcap, mapfile = base / "traffic.pcap", base / "pretag.map"
    make_capture(pcap)
    mapfile.write_text(PRETAG_MAP)
    out = {"nfacctd": nfacctd_reference(lambda folder: config(pcap, mapfile, folder), base, PLUGINS)}
    folder = base / "pmengine"
    folder.mkdir()
    run_pmengine_pcap(config(pcap, mapfile, folder), folder)
    out["pmengine"] = folder
    return out


DIFFERENT = {"vlan"}     # asserted differences, see their own tests


@pytest.mark.parametrize("plugin", [p for p in PLUGINS if p not in DIFFERENT])
def test_same_rows_as_nfacctd(plugin: str, runs: dict[str, Path]) -> None:
    expected = json_rows(runs["nfacctd"] / f"{plugin}.json")
    got = json_rows(runs["pmengine"] / f"{plugin}.json")
    assert expected, f"{plugin}: nfacctd printed nothing (the traffic does not exercise this plugin)"
    assert got == expected


def test_tags_are_exercised(runs: dict[str, Path]) -> None:
    """The map really tags: every set_tag / set_tag2 / set_label value of the map shows up in nfacctd's rows."""
    rows = [json.loads(r) for r in json_rows(runs["nfacctd"] / "all.json")]
    tags = {r["tag"] for r in rows}
    assert {0, 1, 2, 3, 5, 6, 8} <= tags and 4 + 9 in tags
    assert {r["tag2"] for r in rows} >= {0, 7}
    labels = {r["label"] for r in rows}
    assert {"", "blue", "red", "green"} <= labels


def test_vlan_filter_difference(runs: dict[str, Path]) -> None:
    """Named difference: nfacctd's aggregate_filter `vlan 100` never matches a NetFlow/IPFIX record (its
    libpcap program runs on a packet rebuilt from the flow, without an 802.1Q tag), so it prints nothing;
    pmengine matches the flow's VLAN id.  Expected rows: nfacctd's unfiltered rows with vlan 100, summed."""
    assert json_rows(runs["nfacctd"] / "vlan.json") == []
    expected: dict[tuple, list[int]] = {}
    for row in json_rows(runs["nfacctd"] / "all.json"):
        r = json.loads(row)
        if r["vlan"] == 100:
            acc = expected.setdefault((r["vlan"], r["ip_src"], r["tag2"]), [0, 0])
            acc[0] += r["packets"]
            acc[1] += r["bytes"]
    got = {(r["vlan"], r["ip_src"], r["tag2"]): [r["packets"], r["bytes"]]
           for r in map(json.loads, json_rows(runs["pmengine"] / "vlan.json"))}
    assert expected and got == expected
