"""NetFlow v5 (and v1) decoding, vectorised over a whole batch of packets.

v5: 24-byte header + count × 48-byte records.  v1: 16-byte header + count × 48-byte
records (no AS, masks, engine, sampling or sequence).  The headers of all packets are
gathered and viewed as one big-endian structured array, then all records of all
packets in one fancy index.

Times follow nfacctd 1.7.7 (ie.uptime_time_us): start = unix_secs - (sysUptime -
First) // 1000 whole seconds, in 32-bit arithmetic (with time_secs the uptime
fields are taken as seconds).  The sampling rate is the low 14 bits of the
header's sampling field, whatever the mode bits say (as nfacctd reports it).
"""
from __future__ import annotations

import numpy as np

from ..schema import RECORD_DTYPE
from .ie import gather_records, set_address, set_ipv4_mapped, uptime_time_us
from .netflow_walk import unique_exporters
from .state import CounterBook, DecoderState

V5_HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
                      ("unix_nsecs", ">u4"), ("flow_sequence", ">u4"), ("engine_type", "u1"),
                      ("engine_id", "u1"), ("sampling", ">u2")])
V1_HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
                      ("unix_nsecs", ">u4")])
V5_RECORD = np.dtype([("src", "u1", (4,)), ("dst", "u1", (4,)), ("nexthop", "u1", (4,)), ("input", ">u2"),
                      ("output", ">u2"), ("packets", ">u4"), ("octets", ">u4"), ("first", ">u4"),
                      ("last", ">u4"), ("src_port", ">u2"), ("dst_port", ">u2"), ("pad1", "u1"),
                      ("tcp_flags", "u1"), ("proto", "u1"), ("tos", "u1"), ("src_as", ">u2"),
                      ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2")])
V1_RECORD = np.dtype([("src", "u1", (4,)), ("dst", "u1", (4,)), ("nexthop", "u1", (4,)), ("input", ">u2"),
                      ("output", ">u2"), ("packets", ">u4"), ("octets", ">u4"), ("first", ">u4"),
                      ("last", ">u4"), ("src_port", ">u2"), ("dst_port", ">u2"), ("pad1", ">u2"),
                      ("proto", "u1"), ("tos", "u1"), ("tcp_flags", "u1"), ("pad2", "u1"), ("pad3", ">u2"),
                      ("reserved", ">u4")])
assert V5_HEADER.itemsize == 24 and V1_HEADER.itemsize == 16
assert V5_RECORD.itemsize == 48 and V1_RECORD.itemsize == 48
RECORD_LEN = 48
CHUNK_RECORDS = 4096


def decode_v5_packets(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, exporters: np.ndarray,
                      arrival_us: np.ndarray, version: int, state: DecoderState,
                      counters: CounterBook) -> np.ndarray:
    """Decode v5 (version=5) or v1 (version=1) packets; arrays are per packet, in arrival order."""
    hdr_dtype, rec_dtype = (V5_HEADER, V5_RECORD) if version == 5 else (V1_HEADER, V1_RECORD)
    hlen = hdr_dtype.itemsize
    n = len(offsets)
    ok = lengths >= hlen
    headers = np.zeros(n, dtype=hdr_dtype)
    if ok.any():
        headers[ok] = gather_records(buf, offsets[ok], np.ones(int(ok.sum()), np.int64), hdr_dtype)
    counts = headers["count"].astype(np.int64)
    ok &= lengths >= hlen + counts * RECORD_LEN          # a count that lies about the length: drop the packet
    counts = np.where(ok, counts, 0)

    _count_packets(exporters, lengths, ok, counts, version, headers, state, counters)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=RECORD_DTYPE)
    out = np.empty(total, dtype=RECORD_DTYPE)
    recs = gather_records(buf, offsets + hlen, counts, rec_dtype)
    per_record = {"arrival_us": np.repeat(arrival_us, counts),             # packet values, per record
                  "uptime": np.repeat(headers["sys_uptime"].astype(np.int64), counts),
                  "secs": np.repeat(headers["unix_secs"].astype(np.int64), counts)}
    if version == 5:
        engine = (headers["engine_type"].astype(np.uint32) << 8) | headers["engine_id"]
        per_record["domain_id"] = np.repeat(engine, counts)
        per_record["sampling_rate"] = np.repeat(headers["sampling"] & 0x3FFF, counts)
    one_exporter = bool((exporters == exporters[0]).all())
    exporter = exporters[0] if one_exporter else np.repeat(exporters, counts, axis=0)
    for a in range(0, total, CHUNK_RECORDS):       # chunks that stay in cache while the columns are written
        rows = slice(a, a + CHUNK_RECORDS)
        out[rows].view(np.uint8)[...] = 0          # zeroed here, not all at once: the chunk stays in cache
        _fill(out[rows], recs[rows], {k: v[rows] for k, v in per_record.items()},
              exporter if one_exporter else exporter[rows], version, state.time_secs, state.wanted)
    return out


def _fill(out: np.ndarray, recs: np.ndarray, per_record: dict, exporter: np.ndarray, version: int, time_secs: bool,
          wanted) -> None:
    def want(column: str) -> bool:
        return wanted is None or column in wanted

    for column, field in (("src_host", "src"), ("dst_host", "dst"), ("ip_next_hop", "nexthop")):
        if want(column):
            set_ipv4_mapped(out, column, recs[field])
    set_address(out, "peer_src_ip", exporter)
    for column, field in (("in_iface", "input"), ("out_iface", "output"), ("packets", "packets"),
                          ("bytes", "octets"), ("src_port", "src_port"), ("dst_port", "dst_port"),
                          ("tcp_flags", "tcp_flags"), ("proto", "proto"), ("tos", "tos")):
        if want(column):
            out[column] = recs[field]
    out["flows"] = 1
    out["family"] = 4
    out["etype"] = 0x0800
    out["export_proto_version"] = version
    out["ts_arrival"] = per_record["arrival_us"]
    for column, field in (("ts_start", "first"), ("ts_end", "last")):
        if want(column):
            out[column] = uptime_time_us(per_record["secs"], per_record["uptime"], recs[field].astype(np.int64),
                                         time_secs)
    if version == 5:
        for column in ("src_as", "dst_as", "src_mask", "dst_mask"):
            if want(column):
                out[column] = recs[column]
        out["domain_id"] = per_record["domain_id"]
        out["sampling_rate"] = per_record["sampling_rate"]


def _count_packets(exporters: np.ndarray, lengths: np.ndarray, ok: np.ndarray, counts: np.ndarray,
                   version: int, headers: np.ndarray, state: DecoderState, counters: CounterBook) -> None:
    """Per-exporter counters and flow_sequence gaps, vectorised (a Python step per exporter and engine)."""
    keys, exp_id = unique_exporters(exporters)
    k = len(keys)
    per_exporter = zip(keys, np.bincount(exp_id, minlength=k).tolist(),
                       np.bincount(exp_id, weights=lengths, minlength=k).tolist(),
                       np.bincount(exp_id[~ok], minlength=k).tolist(),
                       np.bincount(exp_id, weights=counts, minlength=k).tolist())
    for key, packets, nbytes, bad, flows in per_exporter:
        c = counters[key]
        c.packets += packets
        c.bytes += int(nbytes)
        c.decode_errors += bad
        c.flows += int(flows)
    if version != 5:
        return
    good = np.flatnonzero(ok)
    if not len(good):
        return
    e = exp_id[good]
    engine = (headers["engine_type"][good].astype(np.int64) << 8) | headers["engine_id"][good]
    seq = headers["flow_sequence"][good].astype(np.int64)
    nxt = (seq + counts[good]) & 0xFFFFFFFF
    order = np.lexsort((engine, e))                      # stable: packet order within (exporter, engine)
    e, engine, seq, nxt = e[order], engine[order], seq[order], nxt[order]
    first = np.ones(len(e), dtype=bool)
    first[1:] = (e[1:] != e[:-1]) | (engine[1:] != engine[:-1])
    expected = np.empty(len(e), dtype=np.int64)
    expected[1:] = nxt[:-1]
    starts = np.flatnonzero(first)
    for s, t in zip(starts.tolist(), (np.append(starts[1:], len(e)) - 1).tolist()):
        key = (keys[e[s]], int(engine[s]), 5)
        expected[s] = state.sequences.get(key, -1)
        state.sequences[key] = int(nxt[t])
    gaps = (expected >= 0) & (expected != seq)
    if gaps.any():
        for i, g in zip(*np.unique(e[gaps], return_counts=True)):
            counters[keys[i]].seq_gaps += int(g)
