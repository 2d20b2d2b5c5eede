"""NetFlow v5 (and v1) decoding: fields, times as nfacctd computes them, sequence gaps, malformed packets."""
from __future__ import annotations

import ipaddress

import numpy as np

from engine.decoders import DecoderState, decode_batch
from engine.decoders.batch import PacketBatch, exporter_bytes
from netflow_encoder import V5Record, v1_packet, v5_packet

EXP = exporter_bytes("192.0.2.1")
EXP2 = exporter_bytes("2001:db8::7")
UNIX = 1_700_000_000
UPTIME = 3_600_123


def mapped(ip: str) -> bytes:
    return bytes(10) + b"\xff\xff" + ipaddress.IPv4Address(ip).packed


def decode(packets, state=None):
    state = state or DecoderState()
    return decode_batch(PacketBatch.from_packets(packets), state), state


def test_v5_every_field():
    recs = [V5Record("10.1.2.3", "192.168.7.8", "10.0.0.254", input=11, output=22, packets=33, octets=44000,
                     first=3_500_500, last=3_600_000, src_port=1234, dst_port=443, tcp_flags=0x1B, proto=6,
                     tos=0x28, src_as=65001, dst_as=65002, src_mask=24, dst_mask=16),
            V5Record("10.9.9.9", "10.8.8.8", proto=17, packets=1, octets=60, first=UPTIME, last=UPTIME)]
    pkt = v5_packet(recs, sys_uptime_ms=UPTIME, unix_secs=UNIX, unix_nsecs=456_789_000, flow_sequence=77,
                    engine_type=1, engine_id=3, sampling_interval=100, sampling_mode=1)
    res, _ = decode([(pkt, EXP, 1_700_000_100_000_001)])
    r = res.records
    assert len(r) == 2
    a = r[0]
    assert bytes(a["src_host"]) == mapped("10.1.2.3")
    assert bytes(a["dst_host"]) == mapped("192.168.7.8")
    assert bytes(a["ip_next_hop"]) == mapped("10.0.0.254")
    assert bytes(a["peer_src_ip"]) == EXP
    assert (a["in_iface"], a["out_iface"], a["packets"], a["bytes"], a["flows"]) == (11, 22, 33, 44000, 1)
    assert (a["src_port"], a["dst_port"], a["tcp_flags"], a["proto"], a["tos"]) == (1234, 443, 0x1B, 6, 0x28)
    assert (a["src_as"], a["dst_as"], a["src_mask"], a["dst_mask"]) == (65001, 65002, 24, 16)
    assert (a["family"], a["etype"], a["export_proto_version"]) == (4, 0x0800, 5)
    assert a["domain_id"] == (1 << 8) | 3
    assert a["sampling_rate"] == 100
    assert a["ts_arrival"] == 1_700_000_100_000_001
    # nfacctd: unix_secs - (uptime - first) // 1000, whole seconds (nsecs ignored)
    assert a["ts_start"] == 1_699_999_901 * 1_000_000
    assert a["ts_end"] == 1_700_000_000 * 1_000_000
    assert r[1]["ts_start"] == r[1]["ts_end"] == UNIX * 1_000_000
    c = res.counters[EXP]
    assert (c.packets, c.flows, c.bytes, c.decode_errors) == (1, 2, len(pkt), 0)


def test_v5_sampling_interval_ignores_mode_bits():
    for mode in (0, 1, 2, 3):
        pkt = v5_packet([V5Record("10.0.0.1", "10.0.0.2")], sampling_interval=0x3FFF, sampling_mode=mode)
        res, _ = decode([(pkt, EXP, 0)])
        assert res.records["sampling_rate"][0] == 0x3FFF


def test_v5_uptime_difference_wraps_at_32_bits():
    # First after sysUptime: nfacctd's unsigned 32-bit arithmetic gives a time 2^32 ms in the past
    pkt = v5_packet([V5Record(first=3_600_500, last=3_600_900)], sys_uptime_ms=UPTIME, unix_secs=UNIX)
    res, _ = decode([(pkt, EXP, 0)])
    assert res.records["ts_start"][0] == 1_695_705_034 * 1_000_000


def test_v5_time_secs_takes_uptime_fields_as_seconds():
    pkt = v5_packet([V5Record(first=3_500, last=3_600)], sys_uptime_ms=3_650, unix_secs=UNIX)
    res, _ = decode([(pkt, EXP, 0)], DecoderState(time_secs=True))
    assert res.records["ts_start"][0] == (UNIX - 150) * 1_000_000
    assert res.records["ts_end"][0] == (UNIX - 50) * 1_000_000


def test_v5_whole_batch_many_packets_and_exporters():
    packets = []
    for i in range(40):
        n = 1 + i % 30
        recs = [V5Record(f"10.0.{i}.{j}", "10.1.0.1", packets=1, octets=100 * i + j, first=UPTIME, last=UPTIME)
                for j in range(n)]
        packets.append((v5_packet(recs, sys_uptime_ms=UPTIME, unix_secs=UNIX), EXP if i % 2 else EXP2, i))
    res, _ = decode(packets)
    expected_bytes = [100 * i + j for i in range(40) for j in range(1 + i % 30)]
    assert res.records["bytes"].tolist() == expected_bytes
    exporters = [EXP if i % 2 else EXP2 for i in range(40) for _ in range(1 + i % 30)]
    assert [bytes(x) for x in res.records["peer_src_ip"]] == exporters
    assert res.records["ts_arrival"].tolist() == [i for i in range(40) for _ in range(1 + i % 30)]
    assert res.counters[EXP].packets == 20 and res.counters[EXP2].packets == 20
    assert res.counters[EXP].flows + res.counters[EXP2].flows == len(expected_bytes)


def test_v5_sequence_gaps_per_exporter_and_engine():
    def pkt(seq, n, engine_id=0):
        return v5_packet([V5Record()] * n, flow_sequence=seq, engine_id=engine_id)
    state = DecoderState()
    res, _ = decode([(pkt(100, 2), EXP, 0), (pkt(102, 3), EXP, 1), (pkt(105, 1), EXP, 2),   # gap-free
                     (pkt(0, 5, engine_id=9), EXP, 3),                                      # another engine
                     (pkt(110, 1), EXP, 4),                                                 # 106 expected: gap
                     (pkt(7, 1), EXP2, 5)], state)                                         # another exporter
    assert res.counters[EXP].seq_gaps == 1
    assert res.counters[EXP2].seq_gaps == 0
    res, _ = decode([(pkt(111, 1), EXP, 6), (pkt(5, 1, engine_id=9), EXP, 7)], state)     # across batches
    assert res.counters[EXP].seq_gaps == 0


def test_v5_malformed_packets_are_counted_and_later_ones_decoded():
    good = v5_packet([V5Record("10.0.0.1", "10.0.0.2", octets=5)])
    lying_count = v5_packet([V5Record()] * 2, count=30)             # header says 30 records, 2 present
    truncated = good[:30]                                           # header + part of a record
    short = good[:10]                                               # not even a header
    res, _ = decode([(lying_count, EXP, 0), (truncated, EXP, 1), (short, EXP, 2), (good, EXP, 3)])
    assert res.records["bytes"].tolist() == [5]
    c = res.counters[EXP]
    assert (c.packets, c.decode_errors, c.flows) == (4, 3, 1)


def test_unknown_version_is_a_decode_error():
    res, _ = decode([(b"\x00\x07" + bytes(40), EXP, 0), (b"\x01", EXP, 1), (b"", EXP, 2)])
    assert len(res.records) == 0
    assert res.counters[EXP].decode_errors == 3 and res.counters[EXP].packets == 3


def test_v1_records_decode():
    recs = [V5Record("10.0.0.1", "10.0.0.2", "10.0.0.3", 1, 2, 3, 400, 3_500_500, 3_600_000, 1000, 2000, 0x12, 6, 4)]
    res, _ = decode([(v1_packet(recs, sys_uptime_ms=UPTIME, unix_secs=UNIX), EXP, 0)])
    a = res.records[0]
    assert a["export_proto_version"] == 1
    assert bytes(a["src_host"]) == mapped("10.0.0.1") and bytes(a["ip_next_hop"]) == mapped("10.0.0.3")
    assert (a["packets"], a["bytes"], a["src_port"], a["dst_port"], a["tcp_flags"], a["proto"], a["tos"]) == \
        (3, 400, 1000, 2000, 0x12, 6, 4)
    assert a["ts_start"] == 1_699_999_901 * 1_000_000
    assert (a["src_as"], a["sampling_rate"], a["domain_id"]) == (0, 0, 0)


def test_v5_and_v9_in_one_batch_keep_all_records():
    from netflow_encoder import Field, Template, data_set, template_set, v9_packet
    t = Template(256, [Field(8, 4), Field(12, 4), Field(1, 4)])
    v9 = v9_packet([template_set(9, [t]), data_set(t, [["10.0.0.9", "10.0.0.8", 999]])])
    v5 = v5_packet([V5Record("10.0.0.1", "10.0.0.2", octets=5)])
    res, _ = decode([(v5, EXP, 0), (v9, EXP, 1), (v5, EXP2, 2)])
    assert sorted(res.records["bytes"].tolist()) == [5, 5, 999]
    assert np.array_equal(np.sort(res.records["export_proto_version"]), [5, 5, 9])
