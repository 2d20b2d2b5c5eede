"""NetFlow v9 / IPFIX data sets grouped by compiled template, and their decoding into records.

A SetGroup collects the data sets of one compiled template (identical templates
of several exporters share one compilation, so one group) as rows: set start,
record count, and what each record needs from its packet (arrival, export
time, uptime, domain, exporter, sampling table).  Rows come in numpy blocks
from the vectorised walk, or one at a time from the Python slow path.  A group
is decoded at once: one gather of all records as the template's dtype, then
column conversions into RECORD_DTYPE (ie.fill_records).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..schema import RECORD_DTYPE
from .ie import fill_records, gather_records, set_address, uint_values
from .messages import BusMessage, sampling_message
from .netflow_walk import unique_exporters
from .state import CounterBook, DecoderState, SetContext
from .templates import VARLEN, CompiledTemplate

CHUNK_RECORDS = 4096
_ROW_FIELDS = ("start", "count", "arrival", "secs", "uptime", "domain", "table")


class SetGroup:
    """Data sets (or compacted varlen records) of one compiled template and packet version."""

    def __init__(self, compiled: CompiledTemplate, version: int, buf=None) -> None:
        self.compiled = compiled
        self.version = version
        self.buf = bytearray() if buf is None else buf      # batch buffer, or our own bytes
        self.tables: list[dict] = []
        self._table_index: dict[int, int] = {}
        self._blocks: list[tuple] = []                        # (dict of int64 arrays, exporters (k, 16) uint8)
        self._rows: list[tuple] = []                          # rows added one by one, not yet a block

    def table_index(self, table: dict) -> int:
        i = self._table_index.get(id(table))
        if i is None:
            i = self._table_index[id(table)] = len(self.tables)
            self.tables.append(table)
        return i

    def add(self, start: int, count: int, ctx: SetContext, table: dict) -> None:
        self._rows.append((start, count, ctx.arrival_us, ctx.export_secs, ctx.uptime_ms, ctx.domain,
                           self.table_index(table), ctx.exporter))

    def add_bytes(self, data: bytes, count: int, ctx: SetContext, table: dict) -> None:
        self.add(len(self.buf), count, ctx, table)
        self.buf += data

    def add_block(self, cols: dict, exporters: np.ndarray) -> None:
        """Rows from the vectorised walk: cols holds int64 arrays named as _ROW_FIELDS."""
        self._flush()
        self._blocks.append((cols, exporters))

    def _flush(self) -> None:
        if self._rows:
            k = len(self._rows)
            cols = {name: np.fromiter((r[i] for r in self._rows), np.int64, k) for i, name in enumerate(_ROW_FIELDS)}
            exporters = np.frombuffer(b"".join(r[7] for r in self._rows), np.uint8).reshape(k, 16)
            self._blocks.append((cols, exporters))
            self._rows = []

    def rows(self) -> tuple[dict, np.ndarray]:
        """All rows: (int64 columns by name, exporters (rows, 16))."""
        self._flush()
        if len(self._blocks) == 1:
            return self._blocks[0]
        cols = {name: np.concatenate([b[0][name] for b in self._blocks]) for name in _ROW_FIELDS}
        return cols, np.concatenate([b[1] for b in self._blocks])

    def wire_records(self, cols: dict) -> np.ndarray:
        buf = self.buf if isinstance(self.buf, np.ndarray) else np.frombuffer(bytes(self.buf), dtype=np.uint8)
        return gather_records(buf, cols["start"], cols["count"], self.compiled.wire_dtype)


class PerRecord:
    """Per-set values repeated per record on first use (only those a conversion reads), sliced per chunk."""

    def __init__(self, per_set: dict, counts: np.ndarray) -> None:
        self.per_set, self.counts, self.full = per_set, counts, {}

    def rows(self, a: int, b: int) -> "_Rows":
        return _Rows(self, a, b)

    def get(self, name: str) -> np.ndarray:
        v = self.full.get(name)
        if v is None:
            v = self.full[name] = np.repeat(self.per_set[name], self.counts)
        return v


class _Rows:
    def __init__(self, parent: PerRecord, a: int, b: int) -> None:
        self.parent, self.a, self.b = parent, a, b

    def __getitem__(self, name: str) -> np.ndarray:
        return self.parent.get(name)[self.a:self.b]


def _per_record(values: np.ndarray, counts: np.ndarray) -> np.ndarray | int:
    """A per-row value repeated per record, or the scalar when every row has the same."""
    if len(values) and (values == values[0]).all():
        return int(values[0])
    return np.repeat(values, counts, axis=0)


def decode_group(g: SetGroup, state: DecoderState, counters: CounterBook) -> np.ndarray:
    """All flow records of a group, as RECORD_DTYPE; flows counted per exporter."""
    cols, exporters = g.rows()
    counts = cols["count"]
    n = int(counts.sum())
    if n == 0:
        return np.zeros(0, dtype=RECORD_DTYPE)
    wire = g.wire_records(cols)
    out = np.empty(n, dtype=RECORD_DTYPE)
    per_set = PerRecord({"arrival_us": cols["arrival"], "export_secs": cols["secs"], "uptime_ms": cols["uptime"]},
                        counts)
    one_exporter = bool((exporters == exporters[0]).all())
    peer = exporters[0] if one_exporter else np.repeat(exporters, counts, axis=0)
    domain = _per_record(cols["domain"], counts)
    for a in range(0, n, CHUNK_RECORDS):          # chunks that stay in cache while the columns are written
        b = a + CHUNK_RECORDS
        chunk = out[a:b]
        chunk.view(np.uint8)[...] = 0             # zeroed here, not all at once: the chunk stays in cache
        fill_records(chunk, wire[a:b], g.compiled, g.version, per_set.rows(a, b), state.time_secs, state.wanted)
        set_address(chunk, "peer_src_ip", peer if one_exporter else peer[a:b])
        chunk["domain_id"] = domain if np.isscalar(domain) else domain[a:b]
        chunk["export_proto_version"] = g.version
    _resolve_sampling(out, wire, g, cols["table"], counts)
    if one_exporter:
        counters[exporters[0].tobytes()].flows += n
    else:
        keys, index = unique_exporters(exporters)
        for key, flows in zip(keys, np.bincount(index, weights=counts, minlength=len(keys)).tolist()):
            counters[key].flows += int(flows)
    return out


def _resolve_sampling(out: np.ndarray, wire: np.ndarray, g: SetGroup, table_idx: np.ndarray,
                      counts: np.ndarray) -> None:
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
    if all(not t for t in tables):
        return                                                  # no sampling known: rate 0 (zeroed)
    if len(tables) == 1:
        out["sampling_rate"] = _lookup(tables[0], sids, len(out))
        return
    which = np.repeat(table_idx, counts)                        # the table each record saw
    for i, t in enumerate(tables):
        rows = which == i
        if t and rows.any():
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

def learn_options(g: SetGroup, exporter: bytes, state: DecoderState, counters: CounterBook,
                  learnt: list[BusMessage]) -> None:
    """Options records of one exporter's set(s) → its sampling table, by nfacctd's rules:

    rate = samplerRandomInterval (50), else (packetInterval + packetSpace) // packetInterval
    (305/306), else samplingInterval (34).  With a sampler id (48, or an 8-byte 302) the rate
    is stored for that id (IPFIX: also as the exporter's rate, id 0); without one, only
    records carrying 34 or 305+306 set the exporter's rate.
    """
    rows, _ = g.rows()
    n = int(rows["count"].sum())
    counters[exporter].options_records += n
    cols = g.compiled.columns
    if n == 0 or not any(r in cols for r in ("sampling:interval", "sampling:random_interval",
                                             "sampling:packet_interval")):
        return
    wire = g.wire_records(rows)

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
    for i, r in enumerate(rate.tolist()):    # slow path: options records are few
        if sids is not None:
            updates[int(sids[i])] = r
            if g.version == 10:              # IPFIX: a sampler's rate also becomes the exporter's
                updates[0] = r
        elif exporter_wide_ok:
            updates[0] = r
    for sid, r in updates.items():
        if state.set_sampling(exporter, sid, r):
            learnt.append(sampling_message(exporter, sid, r))


# -- pending data ---------------------------------------------------------------------------

def decode_pending(state: DecoderState, key, compiled: CompiledTemplate,
                   counters: CounterBook, learnt: Optional[list[BusMessage]] = None) -> np.ndarray:
    """Decode the data sets that waited for this template (flow records; options update sampling)."""
    pending = state.take_pending(key)
    if not pending:
        return np.zeros(0, dtype=RECORD_DTYPE)
    groups: dict[int, SetGroup] = {}
    table = state.sampling_table(key[0])
    for p in pending:
        if compiled.varlen:
            data, count, ok = compact_varlen_records(p.body, compiled)
        else:
            data, count, ok = p.body, len(p.body) // compiled.record_length, True
            data = data[:count * compiled.record_length]
        if not ok:
            counters[key[0]].decode_errors += 1
        g = groups.get(p.ctx.version)
        if g is None:
            g = groups[p.ctx.version] = SetGroup(compiled, p.ctx.version)
        g.add_bytes(bytes(data), count, p.ctx, table)
    if compiled.options:
        for g in groups.values():
            learn_options(g, key[0], state, counters, learnt if learnt is not None else [])
        return np.zeros(0, dtype=RECORD_DTYPE)
    out = [decode_group(g, state, counters) for g in groups.values()]
    return out[0] if len(out) == 1 else np.concatenate(out)


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
