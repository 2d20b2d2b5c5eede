"""Minimal reproducers of what the decoder fuzzer (tests/fuzz_decoders.py) found.

Each test fails until its decoder bug is fixed; the cause and the proposed fix are in its docstring.
Expected values are computed here from the packets we build, never taken from the decoder.
"""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest

import netflow_encoder as ne
import sflow_encoder as se
from engine.decoders import DecoderState, decode_batch, decode_sflow_batch
from engine.decoders.batch import PacketBatch, exporter_bytes

EXPORTER_A = exporter_bytes("192.0.2.1")
EXPORTER_B = exporter_bytes("192.0.2.2")


def _errors(res) -> dict[bytes, int]:
    return {k: c.decode_errors for k, c in res.counters.items() if c.decode_errors}


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x00\x05"])
def test_sflow_batch_buffer_shorter_than_four_bytes_is_counted_not_raised(payload):
    """sflow_walk.be32 clamps positions to len(buf) - 4, which is negative when the whole batch buffer is
    shorter than 4 bytes: IndexError escapes decode_sflow_batch.  Fix: decode_sflow_batch pads such a buffer
    (e.g. np.concatenate with 8 zero bytes when len(buf) < 64; offsets and lengths are unchanged)."""
    res = decode_sflow_batch(PacketBatch.from_packets([(payload, EXPORTER_A, 0)]), DecoderState())
    assert sum(c.packets for c in res.counters.values()) == 1
    assert sum(c.decode_errors for c in res.counters.values()) == 1
    assert len(res.records) == 0


def test_identical_templates_of_two_exporters_keep_their_own_exporter_and_domain():
    """state.py now compiles identical templates once (DecoderState._compile shares one CompiledTemplate), and
    netflow_v9.TemplatePacketDecoder groups data sets by id(compiled): sets of another exporter or observation
    domain with the same layout land in one SetGroup, and decode_group stamps every record with the group's
    first SetContext (out["peer_src_ip"] = ctx0.exporter, out["domain_id"] = ctx0.domain).  Fix: key the
    groups by (exporter, domain, id(compiled)), or fill peer_src_ip / domain_id per set with np.repeat over
    g.ctxs as arrival_us already is."""
    tpl = ne.Template(300, [ne.Field(8, 4), ne.Field(12, 4), ne.Field(1, 4), ne.Field(2, 4)])
    senders = [(EXPORTER_A, 7), (EXPORTER_B, 7), (EXPORTER_A, 8)]
    state = DecoderState()
    decode_batch(PacketBatch.from_packets([(ne.ipfix_message([ne.template_set(10, [tpl])], domain_id=d), e, 0)
                                           for e, d in senders]), state)
    packets = [(ne.ipfix_message([ne.data_set(tpl, [["10.0.0.1", "10.0.0.2", 100 + i, 1]])], domain_id=d), e, 0)
               for i, (e, d) in enumerate(senders)]
    res = decode_batch(PacketBatch.from_packets(packets), state)
    got = sorted((int(r["bytes"]), bytes(r["peer_src_ip"]), int(r["domain_id"])) for r in res.records)
    assert got == sorted((100 + i, e, d) for i, (e, d) in enumerate(senders))


def test_sflow_short_record_error_is_counted_on_its_own_agent():
    """sflow._flow_samples: `bad_records[r_sample[sel][:1]] += short` charges every too-short record of a type
    in the batch to the FIRST sample holding a record of that type, i.e. to another agent.  Fix: the record
    parsers (sflow_records.RECORD_PARSERS) return the mask of short records, and the caller does
    np.add.at(bad_records, r_sample[sel][short_mask], 1)."""
    ip = se.ip_packet("10.0.0.1", "10.0.0.2", 6, 1000, 80)
    header = se.ethernet_header(b"\x02" * 6, b"\x04" * 6, (), ip, False)
    good = se.datagram("192.0.2.10", 1, [se.flow_sample(1, 10, 1, 2, [se.raw_header_record(header, 100)])])
    short = se.datagram("192.0.2.20", 1, [se.flow_sample(1, 10, 1, 2, [se.record(1, bytes(8))])])  # < 16 bytes
    res = decode_sflow_batch(PacketBatch.from_packets([(good, EXPORTER_A, 0), (short, EXPORTER_A, 0)]),
                             DecoderState())
    assert _errors(res) == {exporter_bytes("192.0.2.20"): 1}


@pytest.mark.parametrize("cut_from_end", [10, 60])
def test_sflow_truncated_counter_sample_counts_one_decode_error(cut_from_end):
    """A datagram cut inside a counter sample counts 2 decode errors: walk_items marks the datagram broken
    (_count_datagrams: +1), then sflow._overrunning_counter_samples decodes the cut sample's tail and
    decode_counter_sample reports its overrunning record as bad (decode_sflow: c.decode_errors += bad, +1).
    Fix: for the samples that came from _overrunning_counter_samples, keep the events but do not add `bad`
    (the overrun is already counted once)."""
    sample = se.counter_sample(1, 5, tuple(range(1, 20)), ethernet=tuple(range(13)))
    d = se.datagram("192.0.2.30", 1, [sample])
    res = decode_sflow_batch(PacketBatch.from_packets([(d[:-cut_from_end], EXPORTER_A, 0)]), DecoderState())
    assert sum(c.packets for c in res.counters.values()) == 1
    assert sum(c.decode_errors for c in res.counters.values()) == 1


def _ipfix_sets(set_bytes: list[bytes], domain: int = 0) -> list[bytes]:
    """IPFIX messages holding the given sets, each message under 64 KiB."""
    out, cur, size = [], [], 0
    for s in set_bytes:
        if size + len(s) > 60000:
            out.append(ne.ipfix_message(cur, domain_id=domain))
            cur, size = [], 0
        cur.append(s)
        size += len(s)
    return out + ([ne.ipfix_message(cur, domain_id=domain)] if cur else [])


def test_templates_for_pending_data_are_learnt_in_linear_time():
    """DecoderState.take_pending scans every pending set (`[i for i, p in self.pending.items() if p.key == key]`)
    for each template that has pending data: N pending keys then N templates is O(N²).  Two 64 KB packets
    (8000 empty data sets, then 8000 templates) stall a shard for tens of seconds.  Fix: index pending sets
    by key (key → list of pending sequence numbers) so take_pending costs the sets it returns."""
    n = 3000
    ids = range(256, 256 + n)
    state = DecoderState()
    data = _ipfix_sets([struct.pack(">HHI", t, 8, 0) for t in ids])
    decode_batch(PacketBatch.from_packets([(p, EXPORTER_A, 0) for p in data]), state)
    templates = _ipfix_sets([ne.template_set(10, [ne.Template(t, [ne.Field(1, 4)])]) for t in ids])
    t0 = time.perf_counter()
    res = decode_batch(PacketBatch.from_packets([(p, EXPORTER_A, 0) for p in templates]), state)
    elapsed = time.perf_counter() - t0
    assert len(res.records) == n                  # every pending record decoded once its template came
    assert elapsed < 3.0, f"{n} templates with pending data took {elapsed:.1f} s"


PROPOSED_MAX_TEMPLATES_PER_EXPORTER = 4096        # proposal: routers use tens; the fixer may choose another cap


def test_template_table_is_bounded_per_exporter():
    """DecoderState.templates has no limit: one exporter (or a spoofer) announcing random (observation domain,
    template id) pairs grows it without end (the fuzzer's memory check kept ~1 entry per id fed).  Fix: a cap
    per exporter address (evict the least recently used key; count the eviction)."""
    rng = np.random.default_rng(5)
    state = DecoderState()
    n = 3 * PROPOSED_MAX_TEMPLATES_PER_EXPORTER
    packets = []
    for chunk in range(0, n, 4000):
        body = b"".join(struct.pack(">HHHH", 256 + i % 60000, 1, 1, 4) for i in range(chunk, min(n, chunk + 4000)))
        packets.append(ne.ipfix_message([struct.pack(">HH", 2, 4 + len(body)) + body],
                                        domain_id=int(rng.integers(1 << 31))))
    decode_batch(PacketBatch.from_packets([(p, EXPORTER_A, 0) for p in packets]), state)
    assert len(state.templates) <= PROPOSED_MAX_TEMPLATES_PER_EXPORTER


def test_pending_sets_are_bounded_even_when_empty():
    """DecoderState.add_pending charges only len(body) against pending_limit_bytes: data sets with an empty body
    (set length 4) of unknown templates cost 0 bytes, so any number of PendingSet objects (~300 bytes each)
    accumulate until expire_pending runs.  Fix: charge each pending set a fixed overhead (e.g. len(body) + 64)."""
    limit = 64 << 10
    state = DecoderState(pending_limit_bytes=limit)
    sets = [struct.pack(">HH", 256 + i % 60000, 4) for i in range(40000)]
    decode_batch(PacketBatch.from_packets([(p, EXPORTER_A, 0) for p in _ipfix_sets(sets)]), state)
    assert len(state.pending) <= limit // 16


def test_sequence_table_is_bounded_per_agent():
    """DecoderState.sequences gets one entry per (exporter, domain / sub-agent, version) ever seen: random sFlow
    sub-agents (or v9 source ids) from one address grow it without end.  Fix: a cap per exporter address (drop
    the oldest key: at worst one missed seq_gap)."""
    rng = np.random.default_rng(9)
    dgrams = [se.datagram("192.0.2.77", 1, [], sub_agent=int(s)) for s in rng.integers(0, 1 << 32, 20000)]
    state = DecoderState()
    decode_sflow_batch(PacketBatch.from_packets([(d, EXPORTER_A, 0) for d in dgrams]), state)
    assert len(state.sequences) <= PROPOSED_MAX_TEMPLATES_PER_EXPORTER
