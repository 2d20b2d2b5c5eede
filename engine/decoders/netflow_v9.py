"""NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) decoding.

Per packet and per set we walk headers in Python; records are never looped over
(except on the varlen slow path).  Data sets are grouped by compiled template
across the whole batch; each group is decoded at once: record offsets by
np.repeat/cumsum, one fancy index to gather the bytes, a view as the template's
dtype, then column conversions into RECORD_DTYPE (ie.fill_records).

Options data (sampling information) is decoded as soon as its set is walked,
so a flow set sees the sampling table of its own moment, as in nfacctd.
Data that arrives before its template waits in the DecoderState and is decoded
when the template arrives (here, or from the bus via DecoderState.apply).
"""
from __future__ import annotations

import struct
from typing import Optional

import numpy as np

from ..schema import RECORD_DTYPE
from .ie import fill_records, gather_records, uint_values
from .state import CounterBook, DecoderState, SetContext, TemplateKey, template_message
from .messages import BusMessage, sampling_message
from .templates import (IPFIX_OPTIONS_SET, IPFIX_TEMPLATE_SET, MIN_DATA_SET_ID, V9_OPTIONS_SET,
                        V9_TEMPLATE_SET, VARLEN, CompiledTemplate, Template, parse_template_set)

V9_HEADER = struct.Struct(">HHIIII")       # version, count, sysUptime ms, unix secs, sequence, source id
IPFIX_HEADER = struct.Struct(">HHIII")     # version, length, export time, sequence, observation domain
SET_HEADER = struct.Struct(">HH")
CHUNK_RECORDS = 4096


class SetGroup:
    """Data sets (or compacted varlen records) of one compiled template, decoded together."""

    def __init__(self, key: TemplateKey, compiled: CompiledTemplate, buf=None) -> None:
        self.key = key
        self.compiled = compiled
        self.buf = bytearray() if buf is None else buf      # batch buffer, or our own bytes
        self.starts: list[int] = []
        self.counts: list[int] = []
        self.ctxs: list[SetContext] = []
        self.tables: list[dict] = []

    def add(self, start: int, count: int, ctx: SetContext, table: dict) -> None:
        self.starts.append(start)
        self.counts.append(count)
        self.ctxs.append(ctx)
        self.tables.append(table)

    def add_bytes(self, data: bytes, count: int, ctx: SetContext, table: dict) -> None:
        self.add(len(self.buf), count, ctx, table)
        self.buf += data

    def wire_records(self) -> np.ndarray:
        """All records as one array of the compiled wire dtype."""
        c = self.compiled
        buf = self.buf if isinstance(self.buf, np.ndarray) else np.frombuffer(bytes(self.buf), dtype=np.uint8)
        return gather_records(buf, np.asarray(self.starts, dtype=np.int64), np.asarray(self.counts, dtype=np.int64),
                              c.wire_dtype)


# -- the walk over a batch ----------------------------------------------------------------

class TemplatePacketDecoder:
    """Decodes the v9/IPFIX packets of one batch into records, learning templates on the way."""

    def __init__(self, state: DecoderState, counters: CounterBook, learnt: list[BusMessage]) -> None:
        self.state = state
        self.counters = counters
        self.learnt = learnt
        self.groups: dict[int, SetGroup] = {}       # id(compiled) → group over the batch buffer
        self.compact: dict[int, SetGroup] = {}      # id(compiled) → group of compacted varlen records
        self.records: list[np.ndarray] = []         # decoded from pending data on the way

    def decode(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, exporters: np.ndarray,
               arrival_us: np.ndarray) -> list[np.ndarray]:
        mv = memoryview(buf)
        for off, length, exp, arr in zip(offsets.tolist(), lengths.tolist(), map(bytes, exporters),
                                         arrival_us.tolist()):
            try:
                self.walk_packet(buf, mv, off, length, exp, arr)
            except (struct.error, ValueError, IndexError, TypeError):   # defensive: never kill a shard
                self.counters[exp].decode_errors += 1
        out = self.records
        for g in list(self.groups.values()) + list(self.compact.values()):
            try:
                recs = decode_group(g, self.state)
            except (ValueError, IndexError, TypeError):                 # defensive: never kill a shard
                self.counters[g.key[0]].decode_errors += len(g.counts)
                continue
            out.append(recs)
            self.counters[g.key[0]].flows += len(recs)
        return out

    def walk_packet(self, buf: np.ndarray, mv: memoryview, off: int, length: int, exporter: bytes,
                    arrival: int) -> None:
        c = self.counters[exporter]
        c.packets += 1
        c.bytes += length
        version = (mv[off] << 8) | mv[off + 1]
        if version == 9:
            if length < V9_HEADER.size:
                c.decode_errors += 1
                return
            _, count, uptime, secs, seq, domain = V9_HEADER.unpack_from(mv, off)
            pos, end = off + V9_HEADER.size, off + length
            sets_left = max(count, 1)       # nfacctd (and tshark) walk at most `count` flowsets
        else:
            if length < IPFIX_HEADER.size:
                c.decode_errors += 1
                return
            _, msg_len, secs, seq, domain = IPFIX_HEADER.unpack_from(mv, off)
            if msg_len < IPFIX_HEADER.size or msg_len > length:
                c.decode_errors += 1
                return
            uptime = 0
            pos, end = off + IPFIX_HEADER.size, off + msg_len
            sets_left = -1
        ctx = SetContext(version, exporter, domain, arrival, secs, uptime)
        template_ids = (V9_TEMPLATE_SET, V9_OPTIONS_SET) if version == 9 else (IPFIX_TEMPLATE_SET, IPFIX_OPTIONS_SET)
        data_records: Optional[int] = 0
        while end - pos >= 4 and sets_left != 0:
            sets_left -= 1
            set_id, set_len = SET_HEADER.unpack_from(mv, pos)
            if set_len < 4 or pos + set_len > end:
                if not (set_len == 0 and not any(mv[pos:end])):       # not just zero padding to the end
                    c.decode_errors += 1
                break
            body = mv[pos + 4:pos + set_len]
            if set_id in template_ids:
                if not self.template_set(version, set_id, body, ctx):
                    break
            elif set_id >= MIN_DATA_SET_ID:
                n, ok = self.data_set(buf, pos + 4, body, set_id, ctx)
                data_records = None if (n is None or data_records is None) else data_records + n
                if not ok:
                    c.decode_errors += 1
                    break
            pos += set_len
        self.check_sequence(ctx, seq, data_records, c)

    def check_sequence(self, ctx: SetContext, seq: int, data_records: Optional[int], c) -> None:
        """v9 sequence counts packets, IPFIX counts data records (unknown when some data had no template)."""
        key = (ctx.exporter, ctx.domain, ctx.version)
        expected = self.state.sequences.get(key)
        if expected is not None and expected != seq:
            c.seq_gaps += 1
        if ctx.version == 9:
            self.state.sequences[key] = (seq + 1) & 0xFFFFFFFF
        elif data_records is None:
            self.state.sequences.pop(key, None)
        else:
            self.state.sequences[key] = (seq + data_records) & 0xFFFFFFFF

    def template_set(self, version: int, set_id: int, body: memoryview, ctx: SetContext) -> bool:
        """Learn the templates of a set; False when it was malformed (stop this packet)."""
        templates, malformed = parse_template_set(version, set_id, body)
        c = self.counters[ctx.exporter]
        for t in templates:
            c.templates += 1
            self.learn(t, ctx)
        if malformed:
            c.decode_errors += 1
        return not malformed

    def learn(self, t: Template, ctx: SetContext) -> None:
        state = self.state
        if t.withdrawn and t.template_id in (IPFIX_TEMPLATE_SET, IPFIX_OPTIONS_SET):     # withdraw all
            for key in state.withdraw_all(ctx.exporter, ctx.domain, t.options):
                self.learnt.append(template_message(key, Template(t.version, key[2], (), 0, t.options)))
            return
        key = (ctx.exporter, ctx.domain, t.template_id)
        compiled, changed = state.learn_template(key, t)
        if changed:
            self.learnt.append(template_message(key, t))
        if compiled is not None and key in state.pending_keys:
            recs = decode_pending(state, key, compiled, self.counters, self.learnt)
            if len(recs):
                self.records.append(recs)

    def data_set(self, buf: np.ndarray, start: int, body: memoryview, set_id: int,
                 ctx: SetContext) -> tuple[Optional[int], bool]:
        """Queue one data set; (records in it or None when its template is unknown, well-formed)."""
        state = self.state
        key = (ctx.exporter, ctx.domain, set_id)
        compiled = state.templates.get(key)
        if compiled is None:
            state.add_pending(key, body, ctx, self.counters)
            return None, True
        table = state.sampling_table(ctx.exporter)
        if compiled.varlen:
            data, count, ok = compact_varlen_records(body, compiled)
            if compiled.options:
                g = SetGroup(key, compiled)
                g.add_bytes(data, count, ctx, table)
                learn_options(g, state, self.counters, self.learnt)
            else:
                g = self.compact.get(id(compiled))
                if g is None:
                    g = self.compact[id(compiled)] = SetGroup(key, compiled)
                g.add_bytes(data, count, ctx, table)
            return count, ok
        count = len(body) // compiled.record_length
        if compiled.options:
            g = SetGroup(key, compiled, buf)
            g.add(start, count, ctx, table)
            learn_options(g, state, self.counters, self.learnt)
            return count, True
        g = self.groups.get(id(compiled))
        if g is None:
            g = self.groups[id(compiled)] = SetGroup(key, compiled, buf)
        g.add(start, count, ctx, table)
        return count, True


# -- groups → records ---------------------------------------------------------------------

def decode_group(g: SetGroup, state: DecoderState) -> np.ndarray:
    """All flow records of a group, as RECORD_DTYPE."""
    counts = np.asarray(g.counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return np.zeros(0, dtype=RECORD_DTYPE)
    wire = g.wire_records()
    out = np.zeros(n, dtype=RECORD_DTYPE)
    ctx0 = g.ctxs[0]
    per_set = {
        "arrival_us": np.repeat(np.fromiter((x.arrival_us for x in g.ctxs), np.int64, len(g.ctxs)), counts),
        "export_secs": np.repeat(np.fromiter((x.export_secs for x in g.ctxs), np.int64, len(g.ctxs)), counts),
        "uptime_ms": np.repeat(np.fromiter((x.uptime_ms for x in g.ctxs), np.int64, len(g.ctxs)), counts),
    }
    for a in range(0, n, CHUNK_RECORDS):          # chunks that stay in cache while ~25 columns are written
        b = a + CHUNK_RECORDS
        fill_records(out[a:b], wire[a:b], g.compiled, ctx0.version, {k: v[a:b] for k, v in per_set.items()},
                     state.time_secs)
    out["peer_src_ip"] = np.frombuffer(ctx0.exporter, dtype=np.uint8)
    out["domain_id"] = ctx0.domain
    out["export_proto_version"] = ctx0.version
    _resolve_sampling(out, wire, g, counts)
    return out


def _resolve_sampling(out: np.ndarray, wire: np.ndarray, g: SetGroup, counts: np.ndarray) -> None:
    """nfacctd's order: the sampler id's table entry; else the record's own interval; else the exporter's."""
    cols = g.compiled.columns
    sid_col = _sampler_id_column(cols)
    if sid_col is None and ("sampling:random_interval" in cols or "sampling:interval" in cols):
        role = "sampling:random_interval" if "sampling:random_interval" in cols else "sampling:interval"
        out["sampling_rate"] = uint_values(wire[cols[role][0]])
        return
    sids = uint_values(wire[cols[sid_col][0]]) if sid_col else None
    if sids is not None:
        out["sampler_id"] = sids
    tables = g.tables
    if all(t is tables[0] for t in tables):
        out["sampling_rate"] = _lookup(tables[0], sids, len(out))
        return
    which = np.repeat(np.arange(len(tables)), counts)            # the table each record saw
    for i, t in enumerate(tables):
        rows = which == i
        out["sampling_rate"][rows] = _lookup(t, None if sids is None else sids[rows], int(rows.sum()))


def _sampler_id_column(cols: dict) -> Optional[str]:
    if "sampling:sampler_id" in cols:
        return "sampling:sampler_id"
    if "sampling:selector_id" in cols and cols["sampling:selector_id"][1] == 8:   # nfacctd: only 8-byte selectorId
        return "sampling:selector_id"
    return None


def _lookup(table: dict, sids: Optional[np.ndarray], n: int) -> np.ndarray:
    if not table:
        return np.zeros(n, dtype=np.uint32)
    if sids is None:
        return np.full(n, table.get(0, 0), dtype=np.uint32)
    uniq, inv = np.unique(sids, return_inverse=True)
    rates = np.fromiter((table.get(int(u), 0) for u in uniq), dtype=np.uint32, count=len(uniq))
    return rates[inv]


# -- options data: sampling information -------------------------------------------------

def learn_options(g: SetGroup, state: DecoderState, counters: CounterBook, learnt: list[BusMessage]) -> None:
    """Options records of one set → the exporter's sampling table, by nfacctd's rules:

    rate = samplerRandomInterval (50), else (packetInterval + packetSpace) // packetInterval
    (305/306), else samplingInterval (34).  With a sampler id (48, or an 8-byte 302) the rate
    is stored for that id (IPFIX: also as the exporter's rate, id 0); without one, only
    records carrying 34 or 305+306 set the exporter's rate.
    """
    counts = np.asarray(g.counts, dtype=np.int64)
    n = int(counts.sum())
    exporter = g.key[0]
    counters[exporter].options_records += n
    cols = g.compiled.columns
    if n == 0 or not any(r in cols for r in ("sampling:interval", "sampling:random_interval",
                                             "sampling:packet_interval")):
        return
    wire = g.wire_records()

    def col(role: Optional[str]) -> Optional[np.ndarray]:
        return uint_values(wire[cols[role][0]]) if role in cols else None

    interval, random_interval = col("sampling:interval"), col("sampling:random_interval")
    pkt_interval, pkt_space = col("sampling:packet_interval"), col("sampling:packet_space")
    has_packet_rate = pkt_interval is not None and pkt_space is not None
    if random_interval is not None:
        rate = random_interval
    elif has_packet_rate:
        rate = np.where(pkt_interval > 0, (pkt_interval + pkt_space) // np.maximum(pkt_interval, 1), 0)
    elif interval is not None:
        rate = interval
    else:
        return
    sids = col(_sampler_id_column(cols))
    exporter_wide_ok = interval is not None or has_packet_rate
    updates: dict[int, int] = {}
    version = g.ctxs[0].version
    for i, r in enumerate(rate.tolist()):    # slow path: options records are few
        if sids is not None:
            updates[int(sids[i])] = r
            if version == 10:                # IPFIX: a sampler's rate also becomes the exporter's
                updates[0] = r
        elif exporter_wide_ok:
            updates[0] = r
    for sid, r in updates.items():
        if state.set_sampling(exporter, sid, r):
            learnt.append(sampling_message(exporter, sid, r))


# -- pending data ---------------------------------------------------------------------------

def decode_pending(state: DecoderState, key: TemplateKey, compiled: CompiledTemplate,
                   counters: CounterBook, learnt: Optional[list[BusMessage]] = None) -> np.ndarray:
    """Decode the data sets that waited for this template (flow records; options update sampling)."""
    pending = state.take_pending(key)
    if not pending:
        return np.zeros(0, dtype=RECORD_DTYPE)
    g = SetGroup(key, compiled)
    table = state.sampling_table(key[0])
    for p in pending:
        if compiled.varlen:
            data, count, ok = compact_varlen_records(p.body, compiled)
        else:
            data, count, ok = p.body, len(p.body) // compiled.record_length, True
            data = data[:count * compiled.record_length]
        if not ok:
            counters[key[0]].decode_errors += 1
        g.add_bytes(bytes(data), count, p.ctx, table)
    if compiled.options:
        learn_options(g, state, counters, learnt if learnt is not None else [])
        return np.zeros(0, dtype=RECORD_DTYPE)
    recs = decode_group(g, state)
    counters[key[0]].flows += len(recs)
    return recs


# -- the varlen slow path -------------------------------------------------------------------

def compact_varlen_records(body, compiled: CompiledTemplate) -> tuple[bytes, int, bool]:
    """Slow path, one Python step per record: copy each record's fixed fields end to end.

    Returns (compacted records of compiled.wire_dtype.itemsize bytes each, record count,
    whether the set was well-formed).  Trailing padding (fewer bytes than the smallest
    possible record, RFC 7011 3.3.1) ends the set.
    """
    body = bytes(body)
    plan = _varlen_plan(compiled.field_lengths)          # runs of fixed bytes (> 0) and varlen fields (0)
    pad = bytes(compiled.wire_dtype.itemsize - sum(plan))
    min_len = compiled.template.min_record_length
    out = bytearray()
    pos, end, count = 0, len(body), 0
    while end - pos >= min_len and end > pos:
        start_out = len(out)
        for run in plan:
            if run:
                out += body[pos:pos + run]
                pos += run
            else:
                if pos >= end:
                    pos = end + 1
                    break
                length = body[pos]
                pos += 1
                if length == 255:
                    length = int.from_bytes(body[pos:pos + 2], "big") if pos + 2 <= end else end
                    pos += 2
                pos += length
        if pos > end:                                   # the record runs past the set
            del out[start_out:]
            return bytes(out), count, False
        out += pad
        count += 1
    return bytes(out), count, True


def _varlen_plan(lengths: tuple[int, ...]) -> list[int]:
    """Field lengths with consecutive fixed fields merged; 0 marks a variable-length field."""
    plan: list[int] = []
    for length in lengths:
        if length == VARLEN:
            plan.append(0)
        elif plan and plan[-1]:
            plan[-1] += length
        elif length:
            plan.append(length)
    return plan
