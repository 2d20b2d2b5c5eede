"""perf/traffic.py: the expected totals it writes equal what tshark (an independent dissector) reads in its pcaps."""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "perf"))
from traffic import TrafficSpec, exporter_ip, generate  # noqa: E402

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

SPECS = {
    "v5": TrafficSpec("v5", flows=1500, exporters=3, cardinality=400, sampling_rate=10, unix_secs=1_700_000_000),
    "v9": TrafficSpec("v9", flows=1500, exporters=5, flows_per_packet=17, cardinality=300, counter_width=4,
                      ipv6_share=0.3, field_order_seed=7, sampling_rate=100, template_refresh=10,
                      unix_secs=1_700_000_000),
    "ipfix": TrafficSpec("ipfix", flows=1500, exporters=2, cardinality=5000, ipv6_share=0.5, varlen=True,
                         unix_secs=1_700_000_000),
    "sflow": TrafficSpec("sflow", flows=600, exporters=3, flows_per_packet=7, cardinality=200, sampling_rate=512,
                         ipv6_share=0.2, unix_secs=1_700_000_000),
}


def tshark(pcap: Path, decode_as: str, fields: list[str]) -> list[list[str]]:
    cmd = [TSHARK, "-r", str(pcap), "-d", decode_as, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("protocol", ["v5", "v9", "ipfix"])
def test_netflow_totals_equal_tshark(tmp_path, protocol):
    spec = SPECS[protocol]
    expected = generate(spec, tmp_path / "t.pcap", tmp_path / "t.json")
    rows = tshark(tmp_path / "t.pcap", "udp.port==2100,cflow",
                  ["ip.src", "cflow.octets", "cflow.packets", "cflow.srcaddr", "cflow.srcaddrv6", "cflow.dstaddr",
                   "cflow.dstaddrv6", "cflow.srcport", "cflow.dstport", "cflow.protocol", "cflow.sampling_interval", "cflow.samplerate"])
    per = defaultdict(lambda: [0, 0, 0, 0])             # datagrams, flows, bytes, packets
    five, sampling = set(), set()
    for exporter, octets, packets, s4, s6, d4, d6, sport, dport, proto, interval, v5_rate in rows:
        octets, packets = [int(x) for x in octets.split(",") if x], [int(x) for x in packets.split(",") if x]
        p = per[exporter]
        p[0] += 1
        p[1] += len(octets)
        p[2] += sum(octets)
        p[3] += sum(packets)
        srcs = [a for a in (s4.split(",") + s6.split(",")) if a]
        dsts = [a for a in (d4.split(",") + d6.split(",")) if a]
        five |= {(exporter, s, d, sp, dp, pr)
                 for s, d, sp, dp, pr in zip(srcs, dsts, sport.split(","), dport.split(","), proto.split(","))}
        sampling |= {int(x) for x in (interval + "," + v5_rate).split(",") if x and x != "0"}
    assert set(per) == {exporter_ip(e) for e in range(spec.exporters)}
    for ip, p in per.items():
        e = expected["per_exporter"][ip]
        assert p == [e["datagrams"], e["flows"], e["bytes"], e["packets"]], ip
        assert e["bytes_renormalized"] == e["bytes"] * spec.sampling_rate
    assert sum(p[1] for p in per.values()) == spec.flows == expected["flows"]
    if spec.ipv6_share == 0:     # v4 and v6 columns of a mixed packet do not pair up row by row
        assert len(five) == expected["distinct"]["five"]
    assert sampling == ({spec.sampling_rate} if spec.sampling_rate > 1 else set())


def test_sflow_totals_equal_tshark(tmp_path):
    spec = SPECS["sflow"]
    expected = generate(spec, tmp_path / "s.pcap", tmp_path / "s.json")
    rows = tshark(tmp_path / "s.pcap", "udp.port==6343,sflow",
                  ["ip.src", "sflow_245.header.frame_length", "sflow.flow_sample.sampling_rate"])
    per = defaultdict(lambda: [0, 0, 0])               # datagrams, samples, Σ frame length
    rates = set()
    for srcs, lengths, rate in rows:
        exporter = srcs.split(",")[0]                  # the outer header; the sampled headers follow
        lengths = [int(x) for x in lengths.split(",") if x]
        p = per[exporter]
        p[0] += 1
        p[1] += len(lengths)
        p[2] += sum(lengths)
        rates |= {int(x) for x in rate.split(",") if x}
    for ip, p in per.items():
        e = expected["per_exporter"][ip]
        assert p == [e["datagrams"], e["flows"], e["bytes"]], ip
        assert e["packets"] == e["flows"]              # a flow sample stands for one sampled packet
    assert rates == {spec.sampling_rate}
    assert expected["bytes_renormalized"] == expected["bytes"] * spec.sampling_rate
