"""sFlow decoder on every sFlow capture of the corpus: the counts MANIFEST.md lists (tshark), and robustness."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from conftest import CAPTURES, captures_or_skip
from sflow_encoder import generated_traffic
from engine.decoders import DecoderState, PacketBatch, decode_sflow_batch
from engine.decoders.batch import exporter_bytes
from engine.pcap import iter_udp

# files MANIFEST.md flags as broken on purpose or holding non-sFlow datagrams: decode errors expected
BROKEN = {
    "sflow/tcpdump/sflow_print-segv.pcap": "fuzzed datagram (tcpdump crash regression)",
    "sflow/tcpdump/sflow_multiple_counter_30_pdus.pcap": "5 NetFlow v5 datagrams sent to UDP/6343",
    "sflow/gopacket/gopacket_sflow_payloads.wrapped.pcap": "samples whose records overrun them / a truncated sample",
}


def manifest_rows() -> dict[str, dict]:
    path = CAPTURES / "MANIFEST.md"
    if not path.exists():
        return {}
    rows, in_sflow = {}, False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            in_sflow = line.startswith("## sFlow")
        if in_sflow and line.startswith("| sflow/") and ".pcap" in line.split("|")[1]:
            cells = [c.strip() for c in line.split("|")]
            v4, v6 = (int(x) for x in cells[11].split("/"))
            rows[cells[1]] = {"samples": int(cells[6]), "frame_length": int(cells[12]), "v4": v4, "v6": v6}
    return rows


def decode_file(path) -> tuple:
    packets = [(p.payload, p.src, p.ts_us) for p in iter_udp(str(path))]
    res = decode_sflow_batch(PacketBatch.from_packets(packets), DecoderState())
    total = Counter()
    for c in res.counters.values():
        total.update({k: v for k, v in vars(c).items() if v})
    return res, total


@pytest.mark.parametrize("capture", sorted(manifest_rows()))
def test_counts_match_manifest(capture):
    captures_or_skip()
    expected = manifest_rows()[capture]
    res, total = decode_file(CAPTURES / capture)
    assert total["samples"] == expected["samples"]
    assert total["frame_bytes"] == expected["frame_length"]
    families = Counter(res.records["family"].tolist())
    if "qinq" not in capture:
        # tshark dissects the inner IP headers it can; pmengine's families per sample must agree
        assert (families[4], families[6]) == (expected["v4"], expected["v6"])
    assert (total["decode_errors"] > 0) == (capture in BROKEN), total


def test_manifest_lists_every_sflow_pcap():
    captures_or_skip()
    on_disk = {str(p.relative_to(CAPTURES)) for p in (CAPTURES / "sflow").rglob("*.pcap")}
    assert on_disk == set(manifest_rows())


def test_truncated_and_mutated_datagrams_never_raise():
    """Every corpus datagram cut at many lengths and with random bytes flipped: counted, never raised."""
    captures_or_skip()
    rnd = random.Random(7)
    packets = []
    for path in sorted((CAPTURES / "sflow").rglob("*.pcap")):
        for p in iter_udp(str(path)):
            for cut in range(0, len(p.payload), max(1, len(p.payload) // 23)):
                packets.append((p.payload[:cut], p.src, 0))
            for _ in range(5):
                b = bytearray(p.payload)
                for _ in range(4):
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
                packets.append((bytes(b), p.src, 0))
    res = decode_sflow_batch(PacketBatch.from_packets(packets), DecoderState())
    assert sum(c.packets for c in res.counters.values()) == len(packets)
    assert sum(c.decode_errors for c in res.counters.values()) > 0


def test_generated_traffic_decodes_to_what_was_encoded():
    datagrams, truth = generated_traffic(60, seed=3)
    batch = PacketBatch.from_packets([(d, exporter_bytes("192.0.2.1"), 0) for d in datagrams])
    res = decode_sflow_batch(batch, DecoderState())
    recs = res.records
    assert len(recs) == len(truth)
    assert recs["bytes"].tolist() == [t.frame_length for t in truth]
    assert recs["sampling_rate"].tolist() == [t.rate for t in truth]
    assert recs["proto"].tolist() == [t.proto for t in truth]
    assert recs["family"].tolist() == [6 if t.ipv6 else 4 for t in truth]
    assert recs["etype"].tolist() == [0x86DD if t.ipv6 else 0x0800 for t in truth]
    assert sum(c.counter_samples for c in res.counters.values()) == 6
    from engine.decoders.sflow_counters import AgentSeen, CounterEvent
    events = [e for e in res.counter_events if isinstance(e, CounterEvent)]
    assert len(events) == 12      # generic + Ethernet record per counter sample
    seen = [(e.agent, e.sub_agent) for e in res.counter_events if isinstance(e, AgentSeen)]
    assert sorted(seen) == sorted({(exporter_bytes(t.agent), 0) for t in truth})
    assert all(c.seq_gaps == 0 for c in res.counters.values())


def test_sequence_gap_counted_per_agent_and_sub_agent():
    from sflow_encoder import datagram
    src = exporter_bytes("192.0.2.1")
    dgs = [datagram("192.0.2.10", 1, []), datagram("192.0.2.10", 2, []), datagram("192.0.2.10", 5, []),
           datagram("192.0.2.10", 1, [], sub_agent=1), datagram("192.0.2.10", 2, [], sub_agent=1)]
    state = DecoderState()
    res = decode_sflow_batch(PacketBatch.from_packets([(d, src, 0) for d in dgs]), state)
    assert res.counters[exporter_bytes("192.0.2.10")].seq_gaps == 1


def test_unknown_sample_and_record_types_are_skipped_and_counted():
    from sflow_encoder import datagram, flow_sample, raw_header_record, record, ethernet_header, ip_packet
    import struct
    hdr = ethernet_header(b"\x02" * 6, b"\x04" * 6, (), ip_packet("10.0.0.1", "10.0.0.2", 17, 1, 2), False)
    unknown_sample = struct.pack(">II", 77, 8) + bytes(8)
    fs = flow_sample(1, 10, 1, 2, [record(9999, b"abcd"), raw_header_record(hdr, 100)])
    res = decode_sflow_batch(PacketBatch.from_packets(
        [(datagram("192.0.2.9", 1, [unknown_sample, fs]), exporter_bytes("192.0.2.1"), 0)]), DecoderState())
    c = res.counters[exporter_bytes("192.0.2.9")]
    assert (c.unknown_samples, c.unknown_records, c.decode_errors, len(res.records)) == (1, 1, 0, 1)
    assert np.asarray(res.records["dst_port"]).tolist() == [2]


def test_sflow_v2_v4_datagrams_decode_as_pmacct_reads_them():
    """v2 / v4 (no length fields) go through sflow_legacy; sizes and fields from the encoder's own values
    (and tests/test_sflow_differential.py compares them with sfacctd)."""
    from sflow_encoder import legacy_traffic
    from engine.decoders.sflow_counters import CounterEvent
    res = decode_sflow_batch(PacketBatch.from_packets([(d, exporter_bytes("192.0.2.1"), 0)
                                                       for d in legacy_traffic()]), DecoderState())
    expected = sorted([700 + 10 * d + s for d in range(12) for s in (0, 1, 3)] + [300 + d for d in range(12)])
    assert sorted(res.records["bytes"].tolist()) == expected
    assert sorted(res.records["family"].tolist()) == sorted([4] * 36 + [6] * 12)
    assert sum(c.decode_errors for c in res.counters.values()) == 0
    kinds = [e.cnt_type for e in res.counter_events if isinstance(e, CounterEvent)]
    # counters types cycle 1, 2, 3, 5, 7 over 12 datagrams: generic ×3, Ethernet ×3 (one line each: generic +
    # dot3), token ring / VG none, VLAN ×2
    assert sorted(kinds) == sorted(["sflow_cnt_generic"] * 3 + ["sflow_cnt_ethernet"] * 3 + ["sflow_cnt_vlan"] * 2)


def test_sflow_v4_extended_user_ends_the_datagram_as_in_sfacctd():
    from sflow_encoder import ethernet_header, ip_packet, v4_datagram, v4_flow_sample, v4_user
    hdr = ethernet_header(b"\x02" * 6, b"\x04" * 6, (), ip_packet("10.0.0.1", "10.0.1.1", 6, 80, 1234), False)
    dg = v4_datagram("192.0.2.9", 1, [v4_flow_sample(1, 1, 1, 2, hdr, 100, [v4_user(b"alice")]),
                                      v4_flow_sample(2, 1, 1, 2, hdr, 200, [])])
    res = decode_sflow_batch(PacketBatch.from_packets([(dg, exporter_bytes("192.0.2.1"), 0)]), DecoderState())
    assert res.records["bytes"].tolist() == [100]
    assert res.counters[exporter_bytes("192.0.2.9")].decode_errors == 1
