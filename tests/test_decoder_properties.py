"""Property tests: random templates and values, encoded by netflow_encoder, decode back exactly.

The expected record is built here from the values with a deliberately simple
model (each mapped IE fills one column; addresses by family), independent of
the decoder's column maps.  Derandomized, so every run checks the same cases.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.decoders import DecoderState, decode_batch
from engine.decoders.batch import PacketBatch, exporter_bytes
from engine.schema import RECORD_DTYPE
from netflow_encoder import VARLEN, Field, Template, data_set, ipfix_message, template_set, v9_packet

EXPORTER = exporter_bytes("198.51.100.7")
EXPORT_TIME = 1_700_000_000
ARRIVAL = 1_700_000_001_000_000
SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# IE → (column, widths it may have on the wire); one IE per column, no interactions
SIMPLE = {
    1: ("bytes", range(1, 9)), 2: ("packets", range(1, 9)), 3: ("flows", range(1, 9)),
    4: ("proto", [1]), 5: ("tos", [1]), 6: ("tcp_flags", [1, 2]), 7: ("src_port", [1, 2]),
    11: ("dst_port", [1, 2]), 10: ("in_iface", range(1, 5)), 14: ("out_iface", range(1, 5)),
    16: ("src_as", range(1, 5)), 17: ("dst_as", range(1, 5)), 128: ("peer_dst_as", range(1, 5)),
    129: ("peer_src_as", range(1, 5)), 58: ("vlan", [2]), 256: ("etype", [2]),
}
MACS = {56: "src_mac", 80: "dst_mac"}
FAMILY_FIELDS = {  # family → [(ie, length, column, kind)]
    4: [(8, 4, "src_host", "addr"), (12, 4, "dst_host", "addr"), (9, 1, "src_mask", "int"),
        (13, 1, "dst_mask", "int"), (15, 4, "ip_next_hop", "addr"), (18, 4, "peer_dst_ip", "addr")],
    6: [(27, 16, "src_host", "addr"), (28, 16, "dst_host", "addr"), (29, 1, "src_mask", "int"),
        (30, 1, "dst_mask", "int"), (62, 16, "ip_next_hop", "addr"), (63, 16, "peer_dst_ip", "addr")],
}
UNMAPPED = [31, 40, 64, 70, 71, 89, 95, 136, 176, 177, 184, 185, 195, 210, 225, 226, 234, 235]
UNMAPPED_VARLEN = [82, 83, 94, 96, 100]


class Case:
    """A random template with its records and the canonical records they must decode to."""

    def __init__(self, version: int, template: Template, rows: list[list], expected: np.ndarray) -> None:
        self.version, self.template, self.rows, self.expected = version, template, rows, expected
        # set padding to 4 bytes, but never as long as a record (it would read as one)
        shortest = sum(1 if f.length == VARLEN else f.length for f in template.fields)
        self.pad_to = 4 if shortest >= 4 else 0

    def __repr__(self) -> str:
        fields = [(f.ie, f.length, f.pen) if f.pen else (f.ie, f.length) for f in self.template.fields]
        return f"Case(v{self.version}, template {self.template.template_id} {fields}, rows={self.rows})"

    def packet(self, with_template: bool = True, with_data: bool = True, domain: int = 9) -> bytes:
        sets = ([template_set(self.version, [self.template])] if with_template else []) + \
               ([data_set(self.template, self.rows, pad_to=self.pad_to)] if with_data else [])
        if self.version == 9:
            return v9_packet(sets, unix_secs=EXPORT_TIME, sys_uptime_ms=1000, source_id=domain)
        return ipfix_message(sets, export_time=EXPORT_TIME, domain_id=domain)


@st.composite
def cases(draw, version=None, template_id=None) -> Case:
    version = version or draw(st.sampled_from([9, 10]))
    family = draw(st.sampled_from([4, 6, 0]))
    fields: list[tuple] = []      # (Field, column or None, kind, value strategy)
    for ie in draw(st.lists(st.sampled_from(sorted(SIMPLE)), unique=True)):
        column, widths = SIMPLE[ie]
        width = draw(st.sampled_from(list(widths)))
        fields.append((Field(ie, width), column, "int", st.integers(0, (1 << (8 * width)) - 1)))
    for ie in draw(st.lists(st.sampled_from(sorted(MACS)), unique=True)):
        fields.append((Field(ie, 6), MACS[ie], "mac", st.binary(min_size=6, max_size=6)))
    for ie, length, column, kind in (FAMILY_FIELDS.get(family, [])):
        if kind == "addr" and column.endswith("host") or draw(st.booleans()):
            values = st.binary(min_size=length, max_size=length) if kind == "addr" else st.integers(0, 255)
            fields.append((Field(ie, length), column, kind, values))
    if draw(st.booleans()):
        fields.append((Field(152, 8), "ts_start", "ms", st.integers(1_500_000_000_000, 1_800_000_000_000)))
        fields.append((Field(153, 8), "ts_end", "ms", st.integers(1_500_000_000_000, 1_800_000_000_000)))
    for ie in draw(st.lists(st.sampled_from(UNMAPPED), unique=True, max_size=4)):
        length = draw(st.integers(1, 12))
        fields.append((Field(ie, length), None, "skip", st.binary(min_size=length, max_size=length)))
    for _ in range(draw(st.integers(0, 3)) if version == 10 else 0):    # enterprise IEs, even with mapped numbers
        length = draw(st.integers(1, 8))
        ie = draw(st.sampled_from(sorted(SIMPLE) + [8, 12, 27, 152, 500]))
        fields.append((Field(ie, length, pen=draw(st.integers(1, 2**32 - 1))), None, "skip",
                       st.binary(min_size=length, max_size=length)))
    if version == 10:
        for ie in draw(st.lists(st.sampled_from(UNMAPPED_VARLEN), unique=True, max_size=3)):
            fields.append((Field(ie, VARLEN), None, "skip", st.binary(max_size=300)))
    if not fields:
        fields.append((Field(95, 4), None, "skip", st.binary(min_size=4, max_size=4)))
    fields = draw(st.permutations(fields))
    tid = template_id or draw(st.integers(256, 65535))
    template = Template(tid, [f[0] for f in fields])
    n = draw(st.integers(1, 6))
    rows = [[draw(f[3]) for f in fields] for _ in range(n)]
    return Case(version, template, rows, expected_records(version, family, fields, rows))


def expected_records(version: int, family: int, fields: list[tuple], rows: list[list]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, row in enumerate(rows):
        r = out[i]
        r["flows"] = 1
        r["ts_start"] = EXPORT_TIME * 1_000_000
        r["family"] = family
        r["etype"] = {4: 0x0800, 6: 0x86DD, 0: 0}[family]
        r["peer_src_ip"] = np.frombuffer(EXPORTER, np.uint8)
        r["export_proto_version"] = version
        r["domain_id"] = 9
        r["ts_arrival"] = ARRIVAL
        for (field, column, kind, _), value in zip(fields, row):
            if kind == "int":
                r[column] = value & 0xFF if column == "tcp_flags" else value
            elif kind == "mac":
                r[column] = np.frombuffer(value, np.uint8)
            elif kind == "addr":
                packed = value if len(value) == 16 else bytes(10) + b"\xff\xff" + value
                r[column] = np.frombuffer(packed, np.uint8)
            elif kind == "ms":
                r[column] = value * 1000
    return out


def decode(packets: list[bytes], state: DecoderState):
    batch = PacketBatch.from_packets([(p, EXPORTER, ARRIVAL) for p in packets])
    return decode_batch(batch, state)


def assert_records_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    for name in RECORD_DTYPE.names:
        assert np.array_equal(got[name], want[name]), (name, got[name], want[name])


@settings(max_examples=150, **SETTINGS)
@given(cases())
def test_random_template_decodes_exactly(case: Case):
    res = decode([case.packet()], DecoderState())
    assert res.counters[EXPORTER].decode_errors == 0
    assert_records_equal(res.records, case.expected)


@settings(max_examples=40, **SETTINGS)
@given(cases())
def test_template_and_data_on_different_states_bridged_by_the_bus(case: Case):
    has_template, has_data = DecoderState(), DecoderState()
    learnt = decode([case.packet(with_data=False)], has_template).learnt
    res = decode([case.packet(with_template=False)], has_data)
    assert len(res.records) == 0 and res.counters[EXPORTER].pending_sets == 1
    assert_records_equal(has_data.apply(has_template.snapshot()), case.expected)
    # the learnt messages of the batch do the same for a third shard
    third = DecoderState()
    decode([case.packet(with_template=False)], third)
    assert_records_equal(third.apply(learnt), case.expected)


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_template_id_reused_with_a_new_layout(data):
    version = data.draw(st.sampled_from([9, 10]))
    first = data.draw(cases(version=version, template_id=300))
    second = data.draw(cases(version=version, template_id=300))
    state = DecoderState()                                              # across batches
    assert_records_equal(decode([first.packet()], state).records, first.expected)
    assert_records_equal(decode([second.packet()], state).records, second.expected)
    assert_records_equal(decode([second.packet(with_template=False)], state).records, second.expected)
    # in one batch: the data before the new template keeps the old layout (groups may come in any order)
    both = decode([first.packet(), second.packet()], DecoderState()).records
    assert_records_equal(np.sort(both.view(f"V{RECORD_DTYPE.itemsize}")).view(RECORD_DTYPE),
                         np.sort(np.concatenate([first.expected, second.expected]).view(
                             f"V{RECORD_DTYPE.itemsize}")).view(RECORD_DTYPE))


@settings(max_examples=200, **SETTINGS)
@given(cases(), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8),
       st.integers(0, 4000))
def test_corrupted_packets_never_raise(case: Case, flips, cut):
    good = case.packet()
    bad = bytearray(good)
    for pos, value in flips:
        if pos < len(bad):
            bad[pos] = value
    state = DecoderState()
    res = decode([bytes(bad)[:cut] if cut else bytes(bad), good], state)
    c = res.counters[EXPORTER]
    assert c.packets == 2
    assert len(res.records) >= len(case.rows)            # the good packet still decodes
    assert res.records.dtype == RECORD_DTYPE


@settings(max_examples=100, **SETTINGS)
@given(st.binary(max_size=200), st.sampled_from([b"\x00\x05", b"\x00\x09", b"\x00\x0a", b"\x00\x01"]))
def test_random_bytes_never_raise(body, version):
    state = DecoderState()
    res = decode([version + body, body], state)
    assert res.counters[EXPORTER].packets == 2
    expired = state.expire_pending(now_us=ARRIVAL + 10**9)
    assert state.pending_bytes == 0 and sum(c.pending_expired_sets for c in expired.values()) == \
        res.counters[EXPORTER].pending_sets
