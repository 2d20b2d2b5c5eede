"""NetFlow v5 (and v1) decoding, vectorised over a whole batch of packets.

v5: 24-byte header + count × 48-byte records.  v1: 16-byte header + count × 48-byte
records (no AS, masks, engine, sampling or sequence).  The headers of all packets are
gathered at once, then every packet's records in one copy per packet.  A v5 / v1
record is a fixed layout of the IEs a v9 template would announce (V5_TEMPLATE,
V1_TEMPLATE), so it is converted by the same RecordPlan as v9 data (ie.py).

Times follow nfacctd 1.7.7 (ie._flow_time): start = unix_secs - (sysUptime -
First) // 1000 whole seconds, in 32-bit arithmetic (with time_secs the uptime
fields are taken as seconds).  The sampling rate is the low 14 bits of the
header's sampling field, whatever the mode bits say (as nfacctd reports it).
"""
from __future__ import annotations

import numpy as np

from ..schema import RECORD_DTYPE
from .ie import PerSet, record_plan
from .netflow_groups import gather_sets
from .netflow_walk import number_exporters
from .state import CounterBook, DecoderState
from .templates import Template, TemplateField, compile_template

V5_HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
                      ("unix_nsecs", ">u4"), ("flow_sequence", ">u4"), ("engine_type", "u1"),
                      ("engine_id", "u1"), ("sampling", ">u2")])
V1_HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
                      ("unix_nsecs", ">u4")])
PAD = 210                   # paddingOctets: a field no record column takes
# the 48-byte records as (IE, length): src, dst, nexthop, input, output, packets, octets, first, last, ports, …
V5_TEMPLATE = compile_template(Template(9, 256, tuple(TemplateField(ie, n) for ie, n in (
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2), (PAD, 1),
    (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (PAD, 2)))))
V1_TEMPLATE = compile_template(Template(9, 256, tuple(TemplateField(ie, n) for ie, n in (
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2), (PAD, 2),
    (4, 1), (5, 1), (6, 1), (PAD, 1), (PAD, 2), (PAD, 4)))))
assert V5_HEADER.itemsize == 24 and V1_HEADER.itemsize == 16
assert V5_TEMPLATE.record_length == 48 and V1_TEMPLATE.record_length == 48
RECORD_LEN = 48


def decode_v5_packets(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, exporters: np.ndarray,
                      arrival_us: np.ndarray, version: int, state: DecoderState,
                      counters: CounterBook) -> np.ndarray:
    """Decode v5 (version=5) or v1 (version=1) packets; arrays are per packet, in arrival order."""
    hdr_dtype, compiled = (V5_HEADER, V5_TEMPLATE) if version == 5 else (V1_HEADER, V1_TEMPLATE)
    hlen = hdr_dtype.itemsize
    n = len(offsets)
    ok = lengths >= hlen
    all_ok = bool(ok.all())
    if all_ok:                                   # every header is whole: one gather, no masking
        every = np.ndarray((len(buf) - hlen + 1,), np.dtype((np.void, hlen)), buf, 0, (1,))
        headers = np.ndarray((n,), hdr_dtype, every[offsets])
    else:
        headers = np.zeros(n, dtype=hdr_dtype)
        if ok.any():
            every = np.ndarray((len(buf) - hlen + 1,), np.dtype((np.void, hlen)), buf, 0, (1,))
            headers[ok] = np.ndarray((int(ok.sum()),), hdr_dtype, every[offsets[ok]])
    counts = headers["count"].astype(np.int64)
    whole = lengths >= hlen + counts * RECORD_LEN        # a count that lies about the length: drop the packet
    if not (all_ok and whole.all()):
        ok &= whole
        all_ok = False
        counts = np.where(ok, counts, 0)

    table, exp_id = number_exporters(exporters, state.known_exporters)
    _count_packets(table.keys, exp_id, lengths, ok, all_ok, counts, version, headers, state, counters)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=RECORD_DTYPE)
    if not all_ok:                               # only the packets with records
        keep = (counts > 0).nonzero()[0]
        offsets, counts, arrival_us, headers, exp_id = (a[keep] for a in (offsets, counts, arrival_us, headers,
                                                                           exp_id))
    wire = gather_sets(buf, offsets + hlen, counts, compiled.wire_dtype)
    values = {"arrival_us": arrival_us, "export_secs": headers["unix_secs"].astype(np.int64),
              "uptime_ms": headers["sys_uptime"].astype(np.int64)}
    if version == 5:
        values["domain"] = (headers["engine_type"].astype(np.int64) << 8) | headers["engine_id"]
        values["sampling"] = headers["sampling"] & 0x3FFF
    else:
        values["domain"] = 0
    words = table.words
    one = len(table.keys) == 1
    for w, name in ((0, "peer_lo"), (1, "peer_hi")):           # the exporter's address as two words
        column = words[:, w].tolist()
        values[name] = column[0] if one or len(set(column)) == 1 else words[exp_id, w]
    plan = record_plan(compiled, version, state.wanted, state.time_secs)
    return plan.fill(wire, PerSet(values, counts))


def _count_packets(keys: list, exp_id: np.ndarray, lengths: np.ndarray, ok: np.ndarray, all_ok: bool,
                   counts: np.ndarray, version: int, headers: np.ndarray, state: DecoderState,
                   counters: CounterBook) -> None:
    """Per-exporter counters and flow_sequence gaps, vectorised (a Python step per exporter and engine)."""
    k = len(keys)
    if k == 1:
        per_exporter = [(keys[0], len(lengths), int(lengths.sum()), 0 if all_ok else int(np.count_nonzero(~ok)),
                         int(counts.sum()))]
    else:
        per_exporter = zip(keys, np.bincount(exp_id, minlength=k).tolist(),
                           np.bincount(exp_id, weights=lengths, minlength=k).tolist(),
                           np.bincount(exp_id[~ok], minlength=k).tolist() if not all_ok else [0] * k,
                           np.bincount(exp_id, weights=counts, minlength=k).tolist())
    for key, packets, nbytes, bad, flows in per_exporter:
        if not packets:
            continue                         # an exporter of an earlier batch (KnownExporters)
        c = counters[key]
        c.packets += packets
        c.bytes += int(nbytes)
        c.decode_errors += bad
        c.flows += int(flows)
    if version != 5:
        return
    if all_ok:
        e, hdr, cnt = exp_id, headers, counts
    else:
        good = ok.nonzero()[0]
        if not len(good):
            return
        e, hdr, cnt = exp_id[good], headers[good], counts[good]
    engine = (hdr["engine_type"].astype(np.int64) << 8) | hdr["engine_id"]
    seq = hdr["flow_sequence"].astype(np.int64)
    nxt = (seq + cnt) & 0xFFFFFFFF
    key = (e << 16) | engine                             # (exporter, engine) in one int64
    if (key == key[0]).all():
        starts = [0]
        gaps = seq[1:] != nxt[:-1]                       # each packet against the one before
    else:
        order = np.argsort(key, kind="stable")           # packet order within (exporter, engine)
        key, seq, nxt = key[order], seq[order], nxt[order]
        same = key[1:] == key[:-1]
        starts = [0] + ((~same).nonzero()[0] + 1).tolist()
        gaps = (seq[1:] != nxt[:-1]) & same
    ends = [s - 1 for s in starts[1:]] + [len(key) - 1]
    for kk, first, last in zip(key[starts].tolist(), seq[starts].tolist(), nxt[ends].tolist()):
        state_key = (keys[kk >> 16], kk & 0xFFFF, 5)
        expected = state.sequences.get(state_key, -1)
        if expected >= 0 and expected != first:
            counters[keys[kk >> 16]].seq_gaps += 1
        state.sequences[state_key] = last
    if gaps.any():
        for i, g in zip(*np.unique(key[1:][gaps] >> 16, return_counts=True)):
            counters[keys[i]].seq_gaps += int(g)
