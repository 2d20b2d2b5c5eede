"""Field projection: config.fields_needed and decoders that fill only the wanted fields.

The rule: decoding with DecoderState.wanted = needed_fields(cfg) must give exactly the
aggregated rows of decoding everything, for every aggregation, on real captures.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engine.config import loads_config
from engine.config.fields_needed import ALWAYS, needed_fields
from engine.decoders import DecoderState, decode_batch
from engine.decoders.batch import PacketBatch
from engine.pcap import iter_udp
from engine.plugins.aggregate import Aggregator
from engine.schema import PRIMITIVES, RECORD_DTYPE

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"
AGGREGATIONS = [
    "peer_src_ip, in_iface, out_iface, src_as, dst_as",
    "peer_src_ip, src_host, dst_host, src_port, dst_port, proto",
    "src_net, dst_net, src_mask, dst_mask, tos, tcpflags",
    "peer_dst_ip, src_mac, dst_mac, vlan, etype, peer_src_as, peer_dst_as, sampling_rate",
    "timestamp_start, timestamp_end, export_proto_version, src_host",
]


def cfg(text: str):
    return loads_config(text)


# -- needed_fields: pure logic ------------------------------------------------------------------

def test_needed_fields_are_the_primitives_columns_plus_what_every_record_needs():
    got = needed_fields(cfg("plugins: print[a], memory[b]\naggregate[a]: src_net, dst_port\n"
                            "aggregate[b]: peer_src_ip, in_iface\n"))
    expected = set(ALWAYS) | {"src_host", "src_mask", "family", "dst_port", "peer_src_ip", "in_iface", "tcp_flags"}
    assert got == frozenset(expected)
    assert got <= set(RECORD_DTYPE.names)
    assert {"bytes", "packets", "flows", "ts_start", "ts_arrival", "sampling_rate"} <= got


@pytest.mark.parametrize("text", [
    "plugins: print[a]\naggregate: src_host\naggregate_filter[a]: tcp\n",
    "plugins: print[a]\naggregate: src_host\nnfacctd_net: mask\nnetworks_mask: 24\n",
    "plugins: print[a]\naggregate: src_host\nnfacctd_as: netflow\nuse_ip_next_hop: true\n",
])
def test_unsure_configurations_fill_everything(text):
    assert needed_fields(cfg(text)) is None


def test_every_primitive_column_is_a_record_field():
    for p in PRIMITIVES.values():
        assert set(p.columns) <= set(RECORD_DTYPE.names), p.name


# -- projection gives the same rows, on real captures -----------------------------------------------

def _captures() -> list[Path]:
    files = []
    for sub in ("netflow_v5", "netflow_v9", "ipfix"):
        files.extend(sorted((CAPTURES / sub).rglob("*.pcap*")))
    return files


@pytest.fixture(scope="module")
def batches() -> list[PacketBatch]:
    files = _captures()
    if not files:
        pytest.skip("no captures")
    out = []
    for f in files:
        udp = [(p.payload, p.src, p.ts_us) for p in iter_udp(str(f))]
        out.extend(PacketBatch.from_packets(udp[i:i + 64]) for i in range(0, len(udp), 64))
    return out


@pytest.fixture(scope="module")
def full_records(batches) -> np.ndarray:
    state = DecoderState()
    return np.concatenate([decode_batch(b, state).records for b in batches])


def _rows(config, records: np.ndarray) -> list[tuple]:
    agg = Aggregator(config.plugins[0], config.core)
    agg.add(records)
    rows = agg.purge(now_us=0)
    keys = rows.keys
    return sorted((keys[i].tobytes(), int(rows.packets[i]), int(rows.bytes[i]), int(rows.flows[i]))
                  for i in range(len(rows)))


@pytest.mark.parametrize("aggregate", AGGREGATIONS)
def test_projection_gives_the_rows_of_a_full_decode(aggregate, batches, full_records):
    config = cfg(f"plugins: print[p]\naggregate: {aggregate}\n")
    wanted = needed_fields(config)
    assert wanted is not None and len(wanted) < len(RECORD_DTYPE.names)
    state = DecoderState()
    state.wanted = wanted
    projected = np.concatenate([decode_batch(b, state).records for b in batches])
    assert len(projected) == len(full_records) > 1000
    for name in wanted:                                    # every wanted field as a full decode fills it
        assert np.array_equal(projected[name], full_records[name]), name
    skipped = [n for n in RECORD_DTYPE.names if n not in wanted and full_records[n].any()]
    filled = {n for n in skipped if projected[n].any()}
    assert skipped and filled <= {"direction"}           # the others were really skipped (vlan reads direction)
    assert _rows(config, projected) == _rows(config, full_records)


# -- sFlow: the same, on every sFlow capture -----------------------------------------------------------

@pytest.fixture(scope="module")
def sflow_batches() -> list[PacketBatch]:
    files = sorted((CAPTURES / "sflow").rglob("*.pcap*"))
    if not files:
        pytest.skip("no sFlow captures")
    udp = [(p.payload, p.src, p.ts_us) for f in files for p in iter_udp(str(f))]
    # the captures hold ~50 flow samples: add generated ones (IPv4 and IPv6, several agents)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "perf"))
    from traffic import TrafficSpec, draw_flows, exporter_ip, sflow_datagrams
    from engine.decoders.batch import exporter_bytes
    spec = TrafficSpec("sflow", 3000, exporters=3, ipv6_share=0.3, unix_secs=1_700_000_000)
    udp += [(d, exporter_bytes(exporter_ip(e)), 1_700_000_000_000_000)
            for e, d in sflow_datagrams(spec, draw_flows(spec))]
    return [PacketBatch.from_packets(udp[i:i + 64]) for i in range(0, len(udp), 64)]


@pytest.mark.parametrize("aggregate", AGGREGATIONS)
def test_sflow_projection_gives_the_rows_of_a_full_decode(aggregate, sflow_batches):
    from engine.decoders import decode_sflow_batch
    config = cfg(f"plugins: print[p]\naggregate: {aggregate}\n")
    wanted = needed_fields(config)
    full_state, state = DecoderState(), DecoderState()
    state.wanted = wanted
    full = np.concatenate([decode_sflow_batch(b, full_state).records for b in sflow_batches])
    projected = np.concatenate([decode_sflow_batch(b, state).records for b in sflow_batches])
    assert len(projected) == len(full) > 3000
    for name in wanted:
        assert np.array_equal(projected[name], full[name]), name
    assert any(full[n].any() and not projected[n].any() for n in RECORD_DTYPE.names if n not in wanted)
    assert _rows(config, projected) == _rows(config, full)
