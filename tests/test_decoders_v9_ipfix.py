"""NetFlow v9 / IPFIX decoding: templates, sets, pending data, withdrawal, sampling, times, malformed input.

Expected values are written out by hand; where they encode a choice of nfacctd 1.7.7
the comment says so (each was checked by running nfacctd on the same packets).
"""
from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from engine.decoders import BusMessage, DecoderState, decode_batch
from engine.decoders.batch import PacketBatch, exporter_bytes
from netflow_encoder import (VARLEN, Field, Template, Varlen, data_set, ipfix_message, options_template_set, raw_set,
                             template_set, v9_packet, withdrawal_set)

EXP = exporter_bytes("192.0.2.1")
EXP2 = exporter_bytes("192.0.2.2")
UNIX = 1_700_000_000
UPTIME = 3_600_123
BASE = [Field(8, 4), Field(12, 4), Field(1, 4), Field(2, 4)]


def ip16(ip: str) -> bytes:
    a = ipaddress.ip_address(ip)
    return (bytes(10) + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


def v9(sets, **kw):
    kw.setdefault("unix_secs", UNIX)
    kw.setdefault("sys_uptime_ms", UPTIME)
    return v9_packet(sets, **kw)


def ipfix(sets, **kw):
    kw.setdefault("export_time", UNIX)
    return ipfix_message(sets, **kw)


def decode(packets, state=None, exporter=EXP):
    state = state or DecoderState()
    items = [p if isinstance(p, tuple) else (p, exporter, i) for i, p in enumerate(packets)]
    return decode_batch(PacketBatch.from_packets(items), state), state


def rec(i: int, *extra):
    return [f"10.0.0.{i}", "10.0.1.1", 100 + i, 1, *extra]


# -- templates, sets, fields ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [9, 10])
def test_template_and_data_every_mapped_field(version):
    t = Template(300, [Field(8, 4), Field(12, 4), Field(15, 4), Field(18, 4), Field(10, 4), Field(14, 2),
                       Field(1, 8), Field(2, 4), Field(3, 4), Field(4, 1), Field(5, 1), Field(6, 1),
                       Field(7, 2), Field(11, 2), Field(16, 4), Field(17, 2), Field(128, 4), Field(129, 4),
                       Field(9, 1), Field(13, 1), Field(56, 6), Field(80, 6), Field(58, 2), Field(256, 2),
                       Field(152, 8), Field(153, 8)])
    values = ["10.1.1.1", "10.2.2.2", "10.3.3.3", "10.4.4.4", 7, 8, 123456789012, 55, 3, 6, 0x20, 0x1B,
              40000, 443, 65001, 65002, 65003, 65004, 24, 16, "00:11:22:33:44:55", "66:77:88:99:aa:bb", 100,
              0x0800, 1_699_999_000_123, 1_699_999_999_987]
    make = v9 if version == 9 else ipfix
    res, _ = decode([make([template_set(version, [t]), data_set(t, [values], pad_to=4)], source_id=42)
                     if version == 9 else make([template_set(version, [t]), data_set(t, [values])], domain_id=42)])
    assert len(res.records) == 1
    r = res.records[0]
    assert bytes(r["src_host"]) == ip16("10.1.1.1") and bytes(r["dst_host"]) == ip16("10.2.2.2")
    assert bytes(r["ip_next_hop"]) == ip16("10.3.3.3") and bytes(r["peer_dst_ip"]) == ip16("10.4.4.4")
    assert bytes(r["peer_src_ip"]) == EXP
    assert (r["in_iface"], r["out_iface"], r["bytes"], r["packets"], r["flows"]) == (7, 8, 123456789012, 55, 3)
    assert (r["proto"], r["tos"], r["tcp_flags"], r["src_port"], r["dst_port"]) == (6, 0x20, 0x1B, 40000, 443)
    assert (r["src_as"], r["dst_as"], r["peer_dst_as"], r["peer_src_as"]) == (65001, 65002, 65003, 65004)
    assert (r["src_mask"], r["dst_mask"], r["vlan"], r["etype"], r["family"]) == (24, 16, 100, 0x0800, 4)
    assert bytes(r["src_mac"]) == bytes.fromhex("001122334455") and bytes(r["dst_mac"]) == bytes.fromhex("66778899aabb")
    assert (r["ts_start"], r["ts_end"]) == (1_699_999_000_123_000, 1_699_999_999_987_000)
    assert (r["export_proto_version"], r["domain_id"]) == (version, 42)
    c = res.counters[EXP]
    assert (c.packets, c.flows, c.templates, c.decode_errors) == (1, 1, 1, 0)
    assert len(res.learnt) == 1


@pytest.mark.parametrize("version", [9, 10])
def test_several_sets_and_templates_per_packet_with_padding(version):
    t1 = Template(256, BASE)
    t2 = Template(257, BASE + [Field(7, 2), Field(11, 2), Field(4, 1)])
    make = v9 if version == 9 else ipfix
    pkt = make([template_set(version, [t1, t2], pad_to=8),
                data_set(t1, [rec(1), rec(2)], pad_to=4, padding=4 if version == 10 else 0),
                data_set(t2, [rec(3, 80, 8080, 6)], pad_to=4),
                data_set(t1, [rec(4)], pad_to=4)])
    res, _ = decode([pkt])
    assert sorted(res.records["bytes"].tolist()) == [101, 102, 103, 104]
    by_bytes = {int(r["bytes"]): r for r in res.records}
    assert (by_bytes[103]["src_port"], by_bytes[103]["dst_port"], by_bytes[103]["proto"]) == (80, 8080, 6)
    assert by_bytes[101]["src_port"] == 0
    assert res.counters[EXP].templates == 2 and res.counters[EXP].decode_errors == 0


def test_v9_header_count_limits_the_flowsets_walked():
    # nfacctd and tshark walk at most `count` flowsets (at least one)
    t = Template(256, BASE)
    sets = [template_set(9, [t]), data_set(t, [rec(1)]), data_set(t, [rec(2), rec(3)])]
    for count, expected in ((0, 0), (1, 0), (2, 1), (3, 3), (10, 3)):
        res, _ = decode([v9(sets, count=count)])
        assert len(res.records) == expected, count


@pytest.mark.parametrize("version", [9, 10])
def test_templates_are_keyed_by_exporter_and_domain_not_port(version):
    ta = Template(256, BASE)
    tb = Template(256, [Field(12, 4), Field(8, 4), Field(2, 4), Field(1, 4)])   # same id, other layout
    make = v9 if version == 9 else ipfix
    dom = "source_id" if version == 9 else "domain_id"
    res, _ = decode([(make([template_set(version, [ta])], **{dom: 1}), EXP, 0),
                     (make([template_set(version, [tb])], **{dom: 2}), EXP, 1),
                     (make([template_set(version, [tb])], **{dom: 1}), EXP2, 2),
                     (make([data_set(ta, [rec(1)])], **{dom: 1}), EXP, 3),
                     (make([data_set(tb, [["10.0.1.1", "10.0.0.2", 1, 102]])], **{dom: 2}), EXP, 4),
                     (make([data_set(tb, [["10.0.1.1", "10.0.0.3", 1, 103]])], **{dom: 1}), EXP2, 5)])
    assert sorted(res.records["bytes"].tolist()) == [101, 102, 103]
    assert {bytes(r["src_host"]) for r in res.records} == {ip16("10.0.0.1"), ip16("10.0.0.2"), ip16("10.0.0.3")}


def test_template_reused_with_new_layout_replaces_the_old_one():
    old = Template(256, BASE)
    new = Template(256, [Field(8, 4), Field(12, 4), Field(2, 4), Field(1, 8), Field(7, 2)])
    res, state = decode([ipfix([template_set(10, [old]), data_set(old, [rec(1)])]),
                         ipfix([template_set(10, [new]), data_set(new, [["10.0.0.2", "10.0.1.1", 1, 202, 53]])])])
    assert sorted(res.records["bytes"].tolist()) == [101, 202]
    assert res.records[res.records["bytes"] == 202]["src_port"][0] == 53
    assert len(res.learnt) == 2
    # a later batch uses the new layout only
    res, _ = decode([ipfix([data_set(new, [["10.0.0.3", "10.0.1.1", 1, 303, 54]])])], state)
    assert res.records["bytes"].tolist() == [303] and res.records["src_port"].tolist() == [54]


def test_unchanged_template_resent_is_not_published_again():
    t = Template(256, BASE)
    res, state = decode([ipfix([template_set(10, [t])])])
    assert len(res.learnt) == 1
    res, _ = decode([ipfix([template_set(10, [t])])], state)
    assert res.learnt == [] and res.counters[EXP].templates == 1


def test_duplicate_ie_last_occurrence_wins():
    # nfacctd reads the last occurrence (e.g. the inner header's ports and protocol)
    t = Template(256, [Field(8, 4), Field(4, 1), Field(7, 2), Field(1, 4), Field(8, 4), Field(4, 1), Field(7, 2)])
    res, _ = decode([ipfix([template_set(10, [t]), data_set(t, [["10.0.0.1", 4, 0, 100, "10.0.0.9", 17, 53]])])])
    r = res.records[0]
    assert (bytes(r["src_host"]), r["proto"], r["src_port"]) == (ip16("10.0.0.9"), 17, 53)


def test_odd_counter_widths_and_unmapped_and_enterprise_fields():
    t = Template(256, [Field(1, 3), Field(2, 5), Field(8, 4), Field(999, 3), Field(1, 4, pen=9), Field(7, 1),
                       Field(10, 3), Field(6, 2)])
    res, _ = decode([ipfix([template_set(10, [t]),
                            data_set(t, [[0xABCDEF, 0x0102030405, "10.0.0.1", 7, 99999, 0x35, 0x010203, 0x0112]])])])
    r = res.records[0]
    assert (r["bytes"], r["packets"], r["src_port"], r["in_iface"]) == (0xABCDEF, 0x0102030405, 0x35, 0x010203)
    assert r["tcp_flags"] == 0x12          # a 2-byte tcpControlBits keeps its low 8 bits


def test_ipv6_and_mixed_family_templates():
    # IOS XR style: both address families in one template, one of them zeroed per record
    t = Template(256, [Field(27, 16), Field(28, 16), Field(8, 4), Field(12, 4), Field(1, 4), Field(29, 1),
                       Field(30, 1), Field(9, 1), Field(13, 1)])
    res, _ = decode([ipfix([template_set(10, [t]),
                            data_set(t, [["2001:db8::1", "2001:db8::2", "0.0.0.0", "0.0.0.0", 1, 48, 64, 8, 9],
                                         ["::", "::", "10.0.0.1", "10.0.0.2", 2, 48, 64, 8, 9]])])])
    v6, v4 = res.records
    assert (v6["family"], v6["etype"], v6["src_mask"], v6["dst_mask"]) == (6, 0x86DD, 48, 64)
    assert bytes(v6["src_host"]) == ip16("2001:db8::1") and bytes(v6["dst_host"]) == ip16("2001:db8::2")
    assert (v4["family"], v4["etype"], v4["src_mask"], v4["dst_mask"]) == (4, 0x0800, 8, 9)
    assert bytes(v4["src_host"]) == ip16("10.0.0.1")


def test_ip_version_field_and_records_without_addresses():
    t = Template(256, [Field(8, 4), Field(27, 16), Field(1, 4), Field(60, 1)])
    t2 = Template(257, [Field(1, 4), Field(7, 2)])
    res, _ = decode([ipfix([template_set(10, [t, t2]),
                            data_set(t, [["10.0.0.1", "2001:db8::1", 1, 6], ["10.0.0.1", "2001:db8::1", 2, 4]]),
                            data_set(t2, [[3, 80]])])])
    a, b, c = res.records
    assert (a["family"], bytes(a["src_host"])) == (6, ip16("2001:db8::1"))
    assert (b["family"], bytes(b["src_host"])) == (4, ip16("10.0.0.1"))
    assert (c["family"], c["etype"], c["src_port"], c["bytes"]) == (0, 0, 80, 3)


def test_mac_vlan_nexthop_iface_and_counter_fallbacks():
    # nfacctd: 81/57 only without 56/80; peer_dst_ip 18 > 47 > 63; 252/253 without 10/14; 85/86 without 1/2
    t = Template(256, [Field(8, 4), Field(81, 6), Field(57, 6), Field(47, 4), Field(63, 16), Field(252, 4),
                       Field(253, 4), Field(85, 8), Field(86, 8), Field(243, 2)])
    res, _ = decode([ipfix([template_set(10, [t]),
                            data_set(t, [["10.0.0.1", "00:00:00:00:00:81", "00:00:00:00:00:57", "10.4.7.0",
                                          "2001::63", 252, 253, 8500, 86, 243]])])])
    r = res.records[0]
    assert bytes(r["src_mac"])[-1] == 0x81 and bytes(r["dst_mac"])[-1] == 0x57
    assert bytes(r["peer_dst_ip"]) == ip16("10.4.7.0")
    assert (r["in_iface"], r["out_iface"], r["bytes"], r["packets"], r["vlan"]) == (252, 253, 8500, 86, 243)


@pytest.mark.parametrize("fields, values, version, expected", [
    ([58, 243, 59], [58, 243, 59], 10, 58),
    ([58, 243], [0, 243], 10, 243),        # IPFIX: a zero vlanId falls back to dot1qVlanId
    ([58, 243], [0, 243], 9, 0),
    ([243, 59], [243, 59], 9, 59),         # no direction: 58 > 59 > 243 > 254
    ([243, 254], [243, 254], 9, 243),
    ([61, 243, 254], [0, 243, 254], 9, 243),   # ingress
    ([61, 58, 59], [1, 58, 59], 9, 59),    # egress: the post VLAN
    ([61, 58], [1, 58], 9, 0),
    ([61, 58], [2, 58], 10, 0),
])
def test_vlan_choice_as_nfacctd(fields, values, version, expected):
    t = Template(256, [Field(8, 4)] + [Field(f, 1 if f == 61 else 2) for f in fields])
    make = v9 if version == 9 else ipfix
    res, _ = decode([make([template_set(version, [t]), data_set(t, [["10.0.0.1", *values]], pad_to=4)])])
    assert res.records["vlan"].tolist() == [expected]


# -- times ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, fields, values, start_s, end_s", [
    # v9 sysUptime-relative: whole seconds, as nfacctd
    (9, [(22, 4), (21, 4)], [3_500_500, 3_600_000], 1_699_999_901, 1_700_000_000),
    # IPFIX: 22/21 need systemInitTimeMilliseconds (160); nfacctd truncates each to seconds
    (10, [(22, 4), (21, 4), (160, 8)], [3_500_500, 3_600_000, 1_699_000_000_700], 1_699_003_500, 1_699_003_600),
    (10, [(22, 4), (21, 4)], [3_500_500, 3_600_000], UNIX, 0),              # no 160: export time / 0
    (10, [(150, 4), (151, 4)], [1_699_999_000, 1_699_999_999], 1_699_999_000, 1_699_999_999),
    (10, [(158, 4), (159, 4)], [5_500_000, 1_250_000], 1_699_999_994.5, 1_699_999_998.75),
    (9, [(158, 4), (159, 4)], [5_500_000, 1_250_000], UNIX, 0),              # deltas are IPFIX only
    (10, [(152, 8)], [1_699_999_000_123], 1_699_999_000.123, 0),
    (10, [(153, 8)], [1_699_999_000_123], UNIX, 1_699_999_000.123),
    (10, [(323, 8), (150, 4)], [1_699_999_000_123, 1_699_999_999], 1_699_999_000.123, 0),
    (10, [(323, 8), (152, 8)], [1_699_999_000_123, 1_699_999_500_500], 1_699_999_500.5, 0),
    (10, [(154, 8), (155, 8)],                                               # NTP: seconds since 1900 . fraction
     [((1_699_999_000 + 2_208_988_800) << 32) | (1 << 31), ((1_699_999_001 + 2_208_988_800) << 32) | (1 << 30)],
     1_699_999_000.5, 1_699_999_001.25),
    (10, [], [], UNIX, 0),
])
def test_flow_times(version, fields, values, start_s, end_s):
    t = Template(256, [Field(8, 4)] + [Field(i, n) for i, n in fields])
    make = v9 if version == 9 else ipfix
    res, _ = decode([make([template_set(version, [t]), data_set(t, [["10.0.0.1", *values]])])])
    r = res.records[0]
    assert r["ts_start"] == round(start_s * 1_000_000) and r["ts_end"] == round(end_s * 1_000_000)


# -- data before its template -----------------------------------------------------------------------

def test_data_before_template_in_the_same_packet():
    t = Template(256, BASE)
    res, state = decode([v9([data_set(t, [rec(1), rec(2)]), template_set(9, [t]), data_set(t, [rec(3)])])])
    assert sorted(res.records["bytes"].tolist()) == [101, 102, 103]
    c = res.counters[EXP]
    assert (c.no_template_sets, c.pending_sets, c.flows) == (1, 1, 3)
    assert state.pending_bytes == 0


def test_data_before_template_across_batches():
    t = Template(256, BASE)
    state = DecoderState()
    res, _ = decode([ipfix([data_set(t, [rec(1)])], domain_id=3)], state)
    assert len(res.records) == 0 and res.counters[EXP].pending_sets == 1
    res, _ = decode([ipfix([template_set(10, [t])], domain_id=3)], state)
    assert res.records["bytes"].tolist() == [101]
    assert res.records["domain_id"].tolist() == [3]


def test_pending_data_decoded_when_the_template_comes_from_the_bus():
    t = Template(256, BASE + [Field(7, 2)])
    a, b = DecoderState(), DecoderState()
    res_a, _ = decode([ipfix([template_set(10, [t])], domain_id=5)], a)
    res_b, _ = decode([ipfix([data_set(t, [rec(1, 80), rec(2, 81)])], domain_id=5)], b)
    assert len(res_b.records) == 0
    wire = [m.to_bytes() for m in res_a.learnt]
    recs = b.apply([BusMessage.from_bytes(w) for w in wire])
    assert sorted(recs["bytes"].tolist()) == [101, 102] and sorted(recs["src_port"].tolist()) == [80, 81]
    # from now on b decodes directly; the template also shows in its snapshot
    res_b, _ = decode([ipfix([data_set(t, [rec(3, 82)])], domain_id=5)], b)
    assert res_b.records["src_port"].tolist() == [82]
    assert {m.key for m in b.snapshot()} == {m.key for m in res_a.learnt}


def test_pending_data_expires_and_is_counted():
    t = Template(256, BASE)
    state = DecoderState(pending_max_age_s=10)
    decode([(ipfix([data_set(t, [rec(1)])]), EXP, 1_000_000), (ipfix([data_set(t, [rec(2)])]), EXP, 8_000_000)],
           state)
    expired = state.expire_pending(now_us=12_000_000)             # only the first is older than 10 s
    assert expired[EXP].pending_expired_sets == 1
    res, _ = decode([ipfix([template_set(10, [t])])], state)
    assert res.records["bytes"].tolist() == [102]


def test_pending_bytes_are_bounded():
    t = Template(256, BASE)
    one_set = len(data_set(t, [rec(1)] * 10)) - 4
    state = DecoderState(pending_limit_bytes=3 * one_set)
    res, _ = decode([ipfix([data_set(t, [rec(i)] * 10)]) for i in range(5)], state)
    c = res.counters[EXP]
    assert (c.no_template_sets, c.pending_sets, c.pending_expired_sets) == (5, 5, 2)
    assert state.pending_bytes == 3 * one_set
    res, _ = decode([ipfix([template_set(10, [t])])], state)
    assert sorted(set(res.records["bytes"].tolist())) == [102, 103, 104]


# -- withdrawal ---------------------------------------------------------------------------------------

def test_ipfix_template_withdrawal():
    t = Template(256, BASE)
    t2 = Template(257, BASE)
    res, state = decode([ipfix([template_set(10, [t, t2]), data_set(t, [rec(1)])]),
                         ipfix([withdrawal_set([256]), data_set(t, [rec(2)]), data_set(t2, [rec(3)])])])
    assert sorted(res.records["bytes"].tolist()) == [101, 103]
    assert res.counters[EXP].no_template_sets == 1
    assert len(res.learnt) == 3                                   # two templates, one withdrawal
    other = DecoderState()
    other.apply(res.learnt)
    assert {k[2] for k in other.templates} == {257}
    # withdraw all data templates of the domain
    res, _ = decode([ipfix([withdrawal_set([2]), data_set(t2, [rec(4)])])], state)
    assert len(res.records) == 0 and res.counters[EXP].no_template_sets == 1


# -- variable-length fields -----------------------------------------------------------------------------

def test_ipfix_variable_length_fields_both_length_forms():
    t = Template(256, [Field(8, 4), Field(96, VARLEN), Field(1, 4), Field(82, VARLEN, pen=7), Field(7, 2)])
    rows = [["10.0.0.1", b"abc", 1001, b"", 11], ["10.0.0.2", b"x" * 300, 1002, b"yy", 12],
            ["10.0.0.3", Varlen(b"z", long=True), 1003, Varlen(b"", long=True), 13]]
    res, _ = decode([ipfix([template_set(10, [t]), data_set(t, rows, pad_to=4)])])
    assert res.records["bytes"].tolist() == [1001, 1002, 1003]
    assert res.records["src_port"].tolist() == [11, 12, 13]
    assert res.counters[EXP].decode_errors == 0


def test_varlen_record_running_past_the_set_is_an_error():
    t = Template(256, [Field(8, 4), Field(96, VARLEN), Field(1, 4)])
    good = data_set(t, [["10.0.0.1", b"ok", 1]])
    bad_body = bytes(good[4:]) + ipaddress.IPv4Address("10.0.0.2").packed + b"\x50" + b"short"
    res, _ = decode([ipfix([template_set(10, [t]), raw_set(256, bad_body)]),
                     ipfix([data_set(t, [["10.0.0.3", b"", 3]])])])
    assert res.records["bytes"].tolist() == [1, 3]
    assert res.counters[EXP].decode_errors == 1


# -- malformed packets -------------------------------------------------------------------------------

def test_malformed_packets_are_counted_and_later_packets_decoded():
    t = Template(256, BASE)
    good = ipfix([template_set(10, [t]), data_set(t, [rec(1)])])
    bad = [
        ipfix([raw_set(256, bytes(16), length=400)]),             # set length past the message
        ipfix([raw_set(256, b"", length=0)]) + b"\x01",           # zero-length set that is not padding
        ipfix([data_set(t, [rec(2)])], length=9999),              # message length past the packet
        ipfix([raw_set(2, b"\x01\x00\x00\x05\x00\x08")]),         # template record cut short
        v9([raw_set(1, b"\x01\x00\x00\x05\x00\x08")]),            # v9 options template with bad lengths
        good[:10],                                                # truncated header
        v9([])[:12],
    ]
    res, _ = decode(bad + [good])
    assert res.records["bytes"].tolist() == [101]
    c = res.counters[EXP]
    assert c.decode_errors == len(bad) and c.packets == len(bad) + 1


def test_zero_padding_after_the_sets_is_not_an_error():
    t = Template(256, BASE)
    res, _ = decode([v9([template_set(9, [t]), data_set(t, [rec(1)])]) + bytes(64)])
    assert res.records["bytes"].tolist() == [101] and res.counters[EXP].decode_errors == 0


# -- sequence numbers -------------------------------------------------------------------------------------

def test_sequence_gaps_v9_counts_packets_ipfix_counts_records():
    t = Template(256, BASE)
    state = DecoderState()
    res, _ = decode([v9([template_set(9, [t])], sequence=10), v9([data_set(t, [rec(1)] * 5)], sequence=11),
                     v9([data_set(t, [rec(1)])], sequence=13)], state)             # 12 missing
    assert res.counters[EXP].seq_gaps == 1
    res, _ = decode([ipfix([template_set(10, [t])], sequence=100, domain_id=1),
                     ipfix([data_set(t, [rec(1)] * 5)], sequence=100, domain_id=1),
                     ipfix([data_set(t, [rec(1)] * 2)], sequence=105, domain_id=1),
                     ipfix([data_set(t, [rec(1)])], sequence=108, domain_id=1),    # 107 expected
                     ipfix([data_set(t, [rec(1)])], sequence=0, domain_id=2)], state)
    assert res.counters[EXP].seq_gaps == 1


# -- sampling (options data), as nfacctd 1.7.7 ----------------------------------------------------------

FT = Template(256, BASE)
FT_SID = Template(257, BASE + [Field(48, 1)])
FT_34 = Template(258, BASE + [Field(34, 4)])


def rates(res) -> dict[int, int]:
    return {int(r["bytes"]) - 100: int(r["sampling_rate"]) for r in res.records}


def test_v9_exporter_wide_sampling_from_options():
    opt = Template(300, [Field(1, 4), Field(34, 4), Field(35, 1)], scope_count=1)        # scope: system
    res, _ = decode([v9([template_set(9, [FT, FT_SID, FT_34]), data_set(FT, [rec(1)]),     # before: no rate
                         options_template_set(9, [opt]), data_set(opt, [[0, 100, 2]], pad_to=4),
                         data_set(FT, [rec(2)]), data_set(FT_SID, [rec(3, 5), rec(4, 0)], pad_to=4),
                         data_set(FT_34, [rec(5, 77)])], source_id=1),
                     v9([template_set(9, [FT]), data_set(FT, [rec(6)])], source_id=2)])   # another source id
    assert rates(res) == {1: 0, 2: 100, 3: 0, 4: 100, 5: 77, 6: 100}


def test_v9_sampler_id_table():
    opt = Template(301, [Field(1, 4), Field(48, 1), Field(49, 1), Field(50, 4)], scope_count=1)
    res, state = decode([v9([options_template_set(9, [opt]), data_set(opt, [[0, 5, 2, 1000], [0, 6, 2, 2000]],
                                                                       pad_to=4),
                             template_set(9, [FT, FT_SID]), data_set(FT, [rec(1)]),
                             data_set(FT_SID, [rec(2, 5), rec(3, 6), rec(4, 7)], pad_to=4)])])
    assert rates(res) == {1: 0, 2: 1000, 3: 2000, 4: 0}
    assert res.records[res.records["bytes"] == 102]["sampler_id"][0] == 5
    assert sorted(state.sampling[EXP].items()) == [(5, 1000), (6, 2000)]


def test_ipfix_sampling_packet_interval_and_space():
    opt = Template(400, [Field(149, 4), Field(305, 4), Field(306, 4)], scope_count=1)
    res, _ = decode([ipfix([options_template_set(10, [opt]), data_set(opt, [[0, 1, 999]]),
                            template_set(10, [FT]), data_set(FT, [rec(1)])])])
    assert rates(res) == {1: 1000}
    res, _ = decode([ipfix([options_template_set(10, [opt]), data_set(opt, [[0, 3, 10]]),
                            template_set(10, [FT]), data_set(FT, [rec(1)])])])
    assert rates(res) == {1: 4}


def test_ipfix_sampler_rate_also_becomes_the_exporter_rate():
    opt = Template(405, [Field(48, 2), Field(34, 4)], scope_count=1)
    ft48 = Template(260, BASE + [Field(48, 2)])
    res, _ = decode([ipfix([options_template_set(10, [opt]), data_set(opt, [[5, 300], [6, 600]]),
                            template_set(10, [FT, ft48]), data_set(FT, [rec(1)]),
                            data_set(ft48, [rec(2, 5), rec(3, 6), rec(4, 0), rec(5, 9)])])])
    assert rates(res) == {1: 600, 2: 300, 3: 600, 4: 600, 5: 0}


def test_sampling_travels_over_the_bus():
    opt = Template(300, [Field(1, 4), Field(34, 4)], scope_count=1)
    a, b = DecoderState(), DecoderState()
    res_a, _ = decode([v9([options_template_set(9, [opt]), data_set(opt, [[0, 64]])])], a)
    assert any(m.key[:1] == b"S" for m in res_a.learnt)
    b.apply(a.snapshot())
    res_b, _ = decode([v9([template_set(9, [FT]), data_set(FT, [rec(1)])])], b)
    assert rates(res_b) == {1: 64}


def test_bus_message_round_trip_and_bad_messages_are_skipped():
    m = BusMessage(b"k" * 29, b"payload")
    assert BusMessage.from_bytes(m.to_bytes()) == m
    state = DecoderState()
    out = state.apply([BusMessage(b"short", b""), BusMessage(b"T" + bytes(28), b"\x09garbage")])
    assert len(out) == 0 and state.templates == {}


def test_empty_batch():
    res = decode_batch(PacketBatch.from_packets([]), DecoderState())
    assert len(res.records) == 0 and res.learnt == [] and res.counters == {}
    assert res.records.dtype == np.zeros(0, dtype=res.records.dtype).dtype
