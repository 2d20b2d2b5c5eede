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
from .ie import gather_records, uptime_time_us
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
    out = np.zeros(total, dtype=RECORD_DTYPE)
    if total == 0:
        return out
    recs = gather_records(buf, offsets + hlen, counts, rec_dtype)
    per_packet = np.repeat(np.arange(n), counts)
    for a in range(0, total, CHUNK_RECORDS):       # chunks that stay in cache while the columns are written
        rows = slice(a, a + CHUNK_RECORDS)
        p = per_packet[rows]
        _fill(out[rows], recs[rows], headers[p], exporters[p], arrival_us[p], version, state.time_secs)
    return out


def _fill(out: np.ndarray, recs: np.ndarray, h: np.ndarray, exporters: np.ndarray, arrival_us: np.ndarray,
          version: int, time_secs: bool) -> None:
    for column, field in (("src_host", "src"), ("dst_host", "dst"), ("ip_next_hop", "nexthop")):
        out[column][:, 10:12] = 0xFF                   # IPv4-mapped
        out[column][:, 12:] = recs[field]
    out["peer_src_ip"] = exporters
    for column, field in (("in_iface", "input"), ("out_iface", "output"), ("packets", "packets"),
                          ("bytes", "octets"), ("src_port", "src_port"), ("dst_port", "dst_port"),
                          ("tcp_flags", "tcp_flags"), ("proto", "proto"), ("tos", "tos")):
        out[column] = recs[field]
    out["flows"] = 1
    out["family"] = 4
    out["etype"] = 0x0800
    out["export_proto_version"] = version
    out["ts_arrival"] = arrival_us
    uptime = h["sys_uptime"].astype(np.int64)
    secs = h["unix_secs"].astype(np.int64)
    out["ts_start"] = uptime_time_us(secs, uptime, recs["first"].astype(np.int64), time_secs)
    out["ts_end"] = uptime_time_us(secs, uptime, recs["last"].astype(np.int64), time_secs)
    if version == 5:
        for column in ("src_as", "dst_as", "src_mask", "dst_mask"):
            out[column] = recs[column]
        out["domain_id"] = (h["engine_type"].astype(np.uint32) << 8) | h["engine_id"]
        out["sampling_rate"] = h["sampling"] & 0x3FFF


def _count_packets(exporters: np.ndarray, lengths: np.ndarray, ok: np.ndarray, counts: np.ndarray,
                   version: int, headers: np.ndarray, state: DecoderState, counters: CounterBook) -> None:
    """Per-packet bookkeeping (Python per packet): counters and flow_sequence gaps."""
    seq = headers["flow_sequence"].tolist() if version == 5 else None
    engine = ((headers["engine_type"].astype(np.int64) << 8) | headers["engine_id"]).tolist() if version == 5 else None
    for i, (exp, length, good, count) in enumerate(zip(map(bytes, exporters), lengths.tolist(), ok.tolist(),
                                                       counts.tolist())):
        c = counters[exp]
        c.packets += 1
        c.bytes += length
        if not good:
            c.decode_errors += 1
            continue
        c.flows += count
        if seq is None:
            continue
        key = (exp, engine[i], 5)
        expected = state.sequences.get(key)
        if expected is not None and expected != seq[i]:
            c.seq_gaps += 1
        state.sequences[key] = (seq[i] + count) & 0xFFFFFFFF
