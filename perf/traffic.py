"""Benchmark traffic: NetFlow v5, v9, IPFIX and sFlow v5 pcaps plus the exact totals a collector must report.

    spec = TrafficSpec("v9", flows=600_000, exporters=4, cardinality=200_000, ipv6_share=0.2)
    expected = generate(spec, "flows.pcap", "flows.json")

    python3 perf/traffic.py v9 flows.pcap [--flows N] [--exporters 4] [--flows-per-packet 30] [--cardinality N]
        [--sampling-rate 1] [--counter-width 8] [--ipv6-share 0] [--varlen] [--shuffle-fields SEED]

Every flow gets a key k drawn from range(cardinality); everything an aggregation sees derives from k: the
five-tuple (src 10.x.y.z / 2001:db8::k, dst, ports, proto) is injective in k, the traffic matrix (in/out
interface, src/dst AS) has at most 200 values per exporter.  Exporter e sends from 127.0.(1 + e // 254).(1 + e % 254)
port 40000 + e; packets go round-robin over exporters.  Headers, template and options sets come from
tests/netflow_encoder.py and tests/sflow_encoder.py; NetFlow data set bodies are big-endian numpy structured
arrays (one tobytes per packet), so a million flows take seconds, not minutes.

The JSON holds: flows, datagrams, packets and bytes (raw: as exported; renormalized: × sampling rate), the same
per exporter, and the distinct keys of the five-tuple and the matrix aggregations (AGGREGATES).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from engine.decoders.batch import exporter_bytes  # noqa: E402
from engine.pcap import UdpPacket, write_pcap  # noqa: E402
from netflow_encoder import (VARLEN, Exporter, Field, Template, data_set, options_template_set,  # noqa: E402
                             raw_set, template_set, v5_packet)
import sflow_encoder as sfe  # noqa: E402

PROTOCOLS = ("v5", "v9", "ipfix", "sflow")
AGGREGATES = {
    "five": "peer_src_ip, src_host, dst_host, src_port, dst_port, proto",
    "matrix": "peer_src_ip, in_iface, out_iface, src_as, dst_as",
}
COLLECTOR_PORT = {"v5": 2100, "v9": 2100, "ipfix": 2100, "sflow": 6343}
FLOW_TEMPLATE_V4, FLOW_TEMPLATE_V6, SAMPLING_TEMPLATE = 256, 257, 300
UPTIME_MS = 3_600_000


@dataclass
class TrafficSpec:
    protocol: str                   # one of PROTOCOLS
    flows: int = 100_000            # total flows (flow samples for sFlow)
    exporters: int = 4
    flows_per_packet: int = 30
    cardinality: int = 200_000      # distinct keys drawn from (≤ 2**24)
    sampling_rate: int = 1          # 1: unsampled; else v5 header / v9-IPFIX options / sFlow sampling_rate
    counter_width: int = 8          # bytes/packets counters of v9/IPFIX: 4 or 8
    ipv6_share: float = 0.0         # share of IPv6 flows (not v5)
    varlen: bool = False            # IPFIX: add a variable-length interfaceName field
    field_order_seed: int = 0       # 0: natural order; else the v9/IPFIX template fields are shuffled with it
    template_refresh: int = 500     # v9/IPFIX: resend templates every N packets of an exporter (0: only first)
    seed: int = 1
    unix_secs: int = 0              # export time; 0: now

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} not in {PROTOCOLS}")
        if not 0 < self.cardinality <= 1 << 24 or self.counter_width not in (4, 8):
            raise ValueError("cardinality must be in 1..2**24 and counter_width 4 or 8")
        if self.protocol == "v5":
            self.flows_per_packet = min(self.flows_per_packet, 30)
            self.ipv6_share = 0.0


def exporter_ip(e: int) -> str:
    return f"127.0.{1 + e // 254}.{1 + e % 254}"


# -- the flows: one numpy column per property -------------------------------------------------------------

def draw_flows(spec: TrafficSpec) -> dict[str, np.ndarray]:
    """Columns of every flow in send order: exporter, packet, key, ipv6, bytes, packets."""
    rng = np.random.default_rng(spec.seed)
    n = spec.flows
    packet = np.arange(n) // spec.flows_per_packet
    return {
        "exporter": (packet % spec.exporters).astype(np.int64),
        "packet": packet,
        "key": rng.integers(0, spec.cardinality, n, dtype=np.int64),
        "ipv6": rng.random(n) < spec.ipv6_share,
        "bytes": rng.integers(64, 1519, n, dtype=np.int64),
        "packets": (rng.integers(1, 4, n, dtype=np.int64) if spec.protocol != "sflow"
                    else np.ones(n, np.int64)),        # a flow sample stands for one sampled packet
    }


def key_columns(key: np.ndarray) -> dict[str, np.ndarray]:
    """What each key means (a pure function of the key, shared by every protocol)."""
    return {"src4": (10 << 24) | key, "dst4": (172 << 24) | (16 << 16) | (key % 4093),
            "src_port": 1024 + key % 50_000, "dst_port": np.array([443, 80, 53])[key % 3],
            "proto": np.where(key % 3 == 2, 17, 6), "in_if": 1 + key % 8, "out_if": 1 + key % 5,
            "src_as": 64512 + key % 100, "dst_as": np.full_like(key, 65000)}


def v6_addresses(prefix: bytes, low: np.ndarray) -> np.ndarray:
    """(n, 16) uint8: prefix followed by zeros and the big-endian 32-bit `low`."""
    out = np.zeros((len(low), 16), np.uint8)
    out[:, :len(prefix)] = np.frombuffer(prefix, np.uint8)
    out[:, 12:] = low.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


def distinct(*columns: np.ndarray) -> int:
    return int(len(np.unique(np.stack([c.astype(np.int64) for c in columns], axis=1), axis=0))) if len(columns[0]) else 0


def expected_totals(spec: TrafficSpec, flows: dict[str, np.ndarray], datagrams: list[int]) -> dict:
    k = key_columns(flows["key"])
    rate = spec.sampling_rate
    out = {"spec": asdict(spec), "flows": spec.flows, "datagrams": int(sum(datagrams)),
           "bytes": int(flows["bytes"].sum()), "packets": int(flows["packets"].sum()),
           "bytes_renormalized": int(flows["bytes"].sum()) * rate,
           "packets_renormalized": int(flows["packets"].sum()) * rate, "per_exporter": {}}
    for e in range(spec.exporters):
        sel = flows["exporter"] == e
        out["per_exporter"][exporter_ip(e)] = {
            "flows": int(sel.sum()), "datagrams": datagrams[e], "bytes": int(flows["bytes"][sel].sum()),
            "packets": int(flows["packets"][sel].sum()), "bytes_renormalized": int(flows["bytes"][sel].sum()) * rate,
            "packets_renormalized": int(flows["packets"][sel].sum()) * rate}
    matrix = (flows["exporter"], k["in_if"], k["out_if"]) + (
        () if spec.protocol == "sflow" else (k["src_as"], k["dst_as"]))
    out["distinct"] = {"five": distinct(flows["exporter"], flows["ipv6"], flows["key"]), "matrix": distinct(*matrix)}
    return out


# -- NetFlow v9 / IPFIX ----------------------------------------------------------------------------------

def flow_fields(spec: TrafficSpec, ipv6: bool) -> list[tuple[str, Field]]:
    w = spec.counter_width
    fields = [("src", Field(27, 16) if ipv6 else Field(8, 4)), ("dst", Field(28, 16) if ipv6 else Field(12, 4)),
              ("src_port", Field(7, 2)), ("dst_port", Field(11, 2)), ("proto", Field(4, 1)), ("tos", Field(5, 1)),
              ("tcp_flags", Field(6, 1)), ("in_if", Field(10, 4)), ("out_if", Field(14, 4)),
              ("src_as", Field(16, 4)), ("dst_as", Field(17, 4)),
              ("src_mask", Field(29 if ipv6 else 9, 1)), ("dst_mask", Field(30 if ipv6 else 13, 1)),
              ("bytes", Field(1, w)), ("packets", Field(2, w)), ("last", Field(21, 4)), ("first", Field(22, 4))]
    if spec.field_order_seed:
        random.Random(spec.field_order_seed).shuffle(fields)
    if spec.varlen and spec.protocol == "ipfix":
        fields.append(("if_name", Field(82, VARLEN)))
    return fields


def record_dtype(fields: list[tuple[str, Field]]) -> np.dtype:
    parts = []
    for name, f in fields:
        if f.length == VARLEN:
            parts += [(name + "_len", "u1"), (name, "S8")]
        elif f.length == 16:
            parts.append((name, "u1", (16,)))
        else:
            parts.append((name, {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}[f.length]))
    return np.dtype(parts)


def data_records(spec: TrafficSpec, flows: dict[str, np.ndarray], sel: np.ndarray, ipv6: bool) -> np.ndarray:
    """The big-endian wire records of the selected flows, for the v4 or v6 template."""
    fields = flow_fields(spec, ipv6)
    k = key_columns(flows["key"][sel])
    rec = np.zeros(int(sel.sum()), record_dtype(fields))
    if ipv6:
        rec["src"] = v6_addresses(b"\x20\x01\x0d\xb8", flows["key"][sel])
        rec["dst"] = v6_addresses(b"\x20\x01\x0d\xb8\x00\x02", k["dst4"] & 0xFFFF)
    else:
        rec["src"], rec["dst"] = k["src4"], k["dst4"]
    for name in ("src_port", "dst_port", "proto", "in_if", "out_if", "src_as", "dst_as"):
        rec[name] = k[name]
    rec["tcp_flags"] = np.where(k["proto"] == 6, 0x18, 0)
    rec["src_mask"], rec["dst_mask"] = (48, 64) if ipv6 else (16, 24)
    rec["bytes"], rec["packets"] = flows["bytes"][sel], flows["packets"][sel]
    rec["first"], rec["last"] = UPTIME_MS - 60_000, UPTIME_MS - 1_000
    if "if_name" in rec.dtype.names:
        rec["if_name_len"] = 8
        rec["if_name"] = np.char.add(b"xe-0/0/", (k["in_if"] % 10).astype("S1"))
    return rec


def sampling_options(spec: TrafficSpec, domain_id: int) -> tuple[Template, list]:
    """Options template + record announcing the exporter-wide sampling interval (IE 34, algorithm IE 35)."""
    scope = Field(1, 4) if spec.protocol == "v9" else Field(149, 4)       # v9 scope "system"; IPFIX domain id
    return (Template(SAMPLING_TEMPLATE, [scope, Field(34, 4), Field(35, 1)], scope_count=1),
            [0 if spec.protocol == "v9" else domain_id, spec.sampling_rate, 2])


def netflow_template_sets(spec: TrafficSpec, version: int, domain_id: int) -> list[bytes]:
    sets = [template_set(version, [Template(FLOW_TEMPLATE_V4, [f for _, f in flow_fields(spec, False)]),
                                   Template(FLOW_TEMPLATE_V6, [f for _, f in flow_fields(spec, True)])])]
    if spec.sampling_rate > 1:
        tpl, rec = sampling_options(spec, domain_id)
        sets += [options_template_set(version, [tpl]), data_set(tpl, [rec], pad_to=4 if version == 9 else 0)]
    return sets


def netflow_datagrams(spec: TrafficSpec, flows: dict[str, np.ndarray]) -> list[tuple[int, bytes]]:
    """[(exporter, payload)] in send order."""
    unix = spec.unix_secs or int(time.time())
    n_packets = int(flows["packet"][-1]) + 1 if spec.flows else 0
    bounds = np.searchsorted(flows["packet"], np.arange(n_packets + 1))
    out = []
    if spec.protocol == "v5":
        k = key_columns(flows["key"])
        rec = np.zeros(spec.flows, np.dtype([("src", ">u4"), ("dst", ">u4"), ("nexthop", ">u4"), ("in_if", ">u2"),
                                             ("out_if", ">u2"), ("packets", ">u4"), ("bytes", ">u4"), ("first", ">u4"),
                                             ("last", ">u4"), ("src_port", ">u2"), ("dst_port", ">u2"), ("pad1", "u1"),
                                             ("tcp_flags", "u1"), ("proto", "u1"), ("tos", "u1"), ("src_as", ">u2"),
                                             ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2")]))
        rec["src"], rec["dst"] = k["src4"], k["dst4"]
        for name in ("src_port", "dst_port", "proto", "in_if", "out_if", "src_as", "dst_as"):
            rec[name] = k[name]
        rec["bytes"], rec["packets"] = flows["bytes"], flows["packets"]
        rec["first"], rec["last"], rec["src_mask"], rec["dst_mask"] = UPTIME_MS - 60_000, UPTIME_MS - 1_000, 16, 24
        sequence = [0] * spec.exporters
        sampling = dict(sampling_interval=spec.sampling_rate, sampling_mode=1) if spec.sampling_rate > 1 else {}
        for p in range(n_packets):
            e, lo, hi = p % spec.exporters, bounds[p], bounds[p + 1]
            head = v5_packet([], sys_uptime_ms=UPTIME_MS, unix_secs=unix, flow_sequence=sequence[e], count=hi - lo,
                             **sampling)
            sequence[e] += hi - lo
            out.append((e, head + rec[lo:hi].tobytes()))
        return out
    version = 9 if spec.protocol == "v9" else 10
    exporters = [Exporter(version=version, domain_id=e, unix_secs=unix, sys_uptime_ms=UPTIME_MS)
                 for e in range(spec.exporters)]
    v6 = flows["ipv6"]
    wire = {False: data_records(spec, flows, ~v6, False), True: data_records(spec, flows, v6, True)}
    start = {False: np.concatenate([[0], np.cumsum(~v6)]), True: np.concatenate([[0], np.cumsum(v6)])}
    sent = [0] * spec.exporters
    for p in range(n_packets):
        e, lo, hi = p % spec.exporters, bounds[p], bounds[p + 1]
        sets = netflow_template_sets(spec, version, e) if (
            sent[e] == 0 or (spec.template_refresh and sent[e] % spec.template_refresh == 0)) else []
        for family, tid in ((False, FLOW_TEMPLATE_V4), (True, FLOW_TEMPLATE_V6)):
            a, b = start[family][lo], start[family][hi]
            if b > a:
                body = wire[family][a:b].tobytes()
                sets.append(raw_set(tid, body + bytes(-len(body) % 4 if version == 9 else 0)))
        sent[e] += 1
        out.append((e, exporters[e].packet(sets, data_records=int(hi - lo))))
    return out


# -- sFlow v5 --------------------------------------------------------------------------------------------

def sflow_datagrams(spec: TrafficSpec, flows: dict[str, np.ndarray]) -> list[tuple[int, bytes]]:
    """One raw-header flow sample per flow (Ethernet + IPv4/IPv6 + TCP/UDP), frame length = the flow's bytes."""
    k = key_columns(flows["key"])
    n_packets = int(flows["packet"][-1]) + 1 if spec.flows else 0
    bounds = np.searchsorted(flows["packet"], np.arange(n_packets + 1))
    seq, sample_seq, out = [0] * spec.exporters, [0] * spec.exporters, []
    src_mac, dst_mac = bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 1, 1])
    for p in range(n_packets):
        e = p % spec.exporters
        samples = []
        for i in range(bounds[p], bounds[p + 1]):
            key, ipv6 = int(flows["key"][i]), bool(flows["ipv6"][i])
            if ipv6:
                src, dst = f"2001:db8::{key >> 16:x}:{key & 0xFFFF:x}", f"2001:db8:2::{int(k['dst4'][i]) & 0xFFFF:x}"
            else:
                s4, d4 = int(k["src4"][i]), int(k["dst4"][i])
                src, dst = ".".join(str(s4 >> s & 255) for s in (24, 16, 8, 0)), ".".join(
                    str(d4 >> s & 255) for s in (24, 16, 8, 0))
            pkt = sfe.ip_packet(src, dst, int(k["proto"][i]), int(k["src_port"][i]), int(k["dst_port"][i]),
                                flags=0x18 if k["proto"][i] == 6 else 0)
            header = sfe.ethernet_header(src_mac, dst_mac, (), pkt, ipv6)
            sample_seq[e] += 1
            samples.append(sfe.flow_sample(sample_seq[e], spec.sampling_rate, int(k["in_if"][i]), int(k["out_if"][i]),
                                           [sfe.raw_header_record(header, int(flows["bytes"][i]))]))
        seq[e] += 1
        out.append((e, sfe.datagram(exporter_ip(e), seq[e], samples)))
    return out


def sflow_mixed_pcap(path: str | Path, samples: int, per_datagram: int) -> tuple[int, int, int]:
    """The encoder's mixed traffic (VLANs, QinQ, IPv6, extended records, counter samples) as a pcap:
    (samples, Σ frame length, Σ frame length of the samples sfacctd keeps: it drops two-tag samples)."""
    datagrams, truth = sfe.generated_traffic(max(1, samples // per_datagram), seed=5, samples_per_datagram=per_datagram)
    src, dst = exporter_bytes("192.0.2.1"), exporter_bytes("192.0.2.254")
    write_pcap(str(path), [UdpPacket(1_600_000_000_000_000 + i * 100, src, 50000, dst, 6343, d)
                           for i, d in enumerate(datagrams)])
    return (len(truth), sum(t.frame_length for t in truth),
            sum(t.frame_length for t in truth if len(t.vlans) < 2))


# -- the pcap --------------------------------------------------------------------------------------------

def generate(spec: TrafficSpec, pcap_path: str | Path, json_path: str | Path | None = None) -> dict:
    """Write the pcap (and the JSON of expected totals when json_path is given); return the expected totals."""
    flows = draw_flows(spec)
    datagrams = (sflow_datagrams if spec.protocol == "sflow" else netflow_datagrams)(spec, flows)
    dst, port = exporter_bytes("127.0.0.1"), COLLECTOR_PORT[spec.protocol]
    ts0 = (spec.unix_secs or int(time.time())) * 1_000_000
    write_pcap(str(pcap_path), [UdpPacket(ts0 + i * 10, exporter_bytes(exporter_ip(e)), 40000 + e, dst, port, payload)
                                for i, (e, payload) in enumerate(datagrams)])
    counts = np.bincount([e for e, _ in datagrams], minlength=spec.exporters).tolist()
    expected = expected_totals(spec, flows, counts)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(expected, indent=1) + "\n")
    return expected


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("protocol", choices=PROTOCOLS)
    ap.add_argument("pcap")
    ap.add_argument("--json", help="expected totals (default: pcap path with .json)")
    for name, default in (("flows", 100_000), ("exporters", 4), ("flows-per-packet", 30), ("cardinality", 200_000),
                          ("sampling-rate", 1), ("counter-width", 8), ("shuffle-fields", 0), ("seed", 1)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--ipv6-share", type=float, default=0.0)
    ap.add_argument("--varlen", action="store_true")
    a = ap.parse_args()
    spec = TrafficSpec(a.protocol, a.flows, a.exporters, a.flows_per_packet, a.cardinality, a.sampling_rate,
                       a.counter_width, a.ipv6_share, a.varlen, a.shuffle_fields, seed=a.seed)
    expected = generate(spec, a.pcap, a.json or str(Path(a.pcap).with_suffix(".json")))
    print(json.dumps({k: v for k, v in expected.items() if k not in ("spec", "per_exporter")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
