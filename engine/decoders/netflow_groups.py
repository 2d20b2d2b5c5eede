"""NetFlow v9 / IPFIX data sets grouped by compiled template, and their decoding into records.

A SetGroup collects the data sets of one compiled template (identical templates
of several exporters share one compilation, so one group) as rows: set start,
record count, and what each record needs from its packet (arrival, export
time, uptime, domain, exporter, sampling table).  Rows come in numpy blocks
from the vectorised walk, or one at a time from the Python slow path.  A group
is decoded at once: one gather of all records as the template's dtype (a copy
per set), then the template's RecordPlan (ie.py): a prototype record copied into
every record, then one pass per written column.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..schema import RECORD_DTYPE
from .ie import PerSet, record_plan, uint_values
from .messages import BusMessage, sampling_message
from .netflow_walk import ExporterTable
from .state import CounterBook, DecoderState, SetContext
from .templates import VARLEN, CompiledTemplate

_ROW_FIELDS = ("start", "count", "arrival", "secs", "uptime", "domain", "table", "exporter")
MAX_COUNT_CLASSES = 8       # gather_sets: more distinct record counts per set → record by record


class SetGroup:
    """Data sets (or compacted varlen records) of one compiled template and packet version.

    Exporters are ids in `exporters` (the batch's ExporterTable for the vectorised walk's groups).
    """

    def __init__(self, compiled: CompiledTemplate, version: int, buf=None,
                 exporters: Optional[ExporterTable] = None) -> None:
        self.compiled = compiled
        self.version = version
        self.buf = bytearray() if buf is None else buf      # batch buffer, or our own bytes
        self.exporters = ExporterTable() if exporters is None else exporters
        self.tables: list[dict] = []
        self._table_index: dict[int, int] = {}
        self._blocks: list[dict] = []                         # int64 arrays named as _ROW_FIELDS
        self._rows: list[tuple] = []                          # rows added one by one, not yet a block

    def table_index(self, table: dict) -> int:
        i = self._table_index.get(id(table))
        if i is None:
            i = self._table_index[id(table)] = len(self.tables)
            self.tables.append(table)
        return i

    def add(self, start: int, count: int, ctx: SetContext, table: dict) -> None:
        self._rows.append((start, count, ctx.arrival_us, ctx.export_secs, ctx.uptime_ms, ctx.domain,
                           self.table_index(table), self.exporters.id_of(ctx.exporter)))

    def add_bytes(self, data: bytes, count: int, ctx: SetContext, table: dict) -> None:
        self.add(len(self.buf), count, ctx, table)
        self.buf += data

    def add_block(self, cols: dict) -> None:
        """Rows from the vectorised walk: int64 arrays named as _ROW_FIELDS (exporter: ids in self.exporters;
        table: an int when every row has that one)."""
        self._flush()
        self._blocks.append(cols)

    def _flush(self) -> None:
        if self._rows:
            k = len(self._rows)
            self._blocks.append({name: np.fromiter((r[i] for r in self._rows), np.int64, k)
                                 for i, name in enumerate(_ROW_FIELDS)})
            self._rows = []

    def rows(self) -> dict:
        """All rows: int64 columns by name (table: an int when every row has that one)."""
        self._flush()
        if len(self._blocks) == 1:
            return self._blocks[0]
        return {name: np.concatenate([np.full(len(b["count"]), b[name], np.int64) if type(b[name]) is int
                                      else b[name] for b in self._blocks]) for name in _ROW_FIELDS}

    def wire_records(self, cols: dict) -> np.ndarray:
        buf = self.buf if isinstance(self.buf, np.ndarray) else np.frombuffer(bytes(self.buf), dtype=np.uint8)
        return gather_sets(buf, cols["start"], cols["count"], self.compiled.wire_dtype)


# -- gathering the records of sets ------------------------------------------------------------

def record_starts(set_starts: np.ndarray, counts: np.ndarray, rec_len: int) -> np.ndarray:
    """Byte offset of every record: set i holds counts[i] records of rec_len bytes from set_starts[i]."""
    counts = counts.astype(np.int64, copy=False)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts                       # index of each set's first record
    within = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
    return np.repeat(set_starts.astype(np.int64, copy=False), counts) + within * rec_len


def gather_records(buf: np.ndarray, set_starts: np.ndarray, counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """All records of all sets as one array of `dtype` (whose itemsize is the record length).

    The buffer is viewed as overlapping records starting at every byte (stride 1),
    so one fancy index with the record start offsets copies every record at once.
    """
    dtype = np.dtype(dtype)
    rec_len = dtype.itemsize
    starts = record_starts(np.asarray(set_starts), np.asarray(counts), rec_len)
    positions = len(buf) - rec_len + 1
    if len(starts) == 0 or positions <= 0:
        return np.zeros(len(starts), dtype=dtype)
    # gather as opaque bytes (a plain memcpy per record), then reinterpret as the record dtype
    every_byte = np.ndarray(shape=(positions,), dtype=np.dtype((np.void, rec_len)), buffer=buf, strides=(1,))
    return every_byte[starts].view(dtype)


def gather_sets(buf: np.ndarray, set_starts: np.ndarray, counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """As gather_records, but one copy per set (all its records at once) for each distinct record count.

    Records keep their order (set by set).  With more than MAX_COUNT_CLASSES distinct counts,
    record by record (gather_records).
    """
    rec_len = dtype.itemsize
    c0 = int(counts[0]) if len(counts) else 0
    classes = [c0] if len(counts) == 1 or (counts == c0).all() else sorted(set(counts.tolist()))
    if len(classes) > MAX_COUNT_CLASSES or max(classes, default=0) * rec_len > len(buf):
        return gather_records(buf, set_starts, counts, dtype)
    if len(classes) == 1:
        size = c0 * rec_len
        if size == 0:
            return np.zeros(0, dtype=dtype)
        every_set = np.ndarray((len(buf) - size + 1,), _void(size), buf, 0, (1,))
        return np.ndarray((len(counts) * c0,), dtype, every_set[set_starts])
    total = int(counts.sum())
    flat = np.empty(total * rec_len, np.uint8)
    first = np.cumsum(counts) - counts                       # each set's first record
    for c in classes:
        if c == 0:
            continue
        sel = counts == c
        size = c * rec_len
        every_set = np.ndarray((len(buf) - size + 1,), _void(size), buf, 0, (1,))
        dst = np.ndarray((total - c + 1,), _void(size), flat, 0, (rec_len,))
        dst[first[sel]] = every_set[set_starts[sel]]
    return np.ndarray((total,), dtype, flat)


_VOIDS: dict[int, np.dtype] = {}


def _void(size: int) -> np.dtype:
    dt = _VOIDS.get(size)
    if dt is None:
        if len(_VOIDS) > 4096:
            _VOIDS.clear()
        dt = _VOIDS[size] = np.dtype((np.void, size))
    return dt


# -- decoding a group ---------------------------------------------------------------------------

def decode_group(g: SetGroup, state: DecoderState, counters: CounterBook) -> np.ndarray:
    """All flow records of a group, as RECORD_DTYPE; flows counted per exporter."""
    cols = g.rows()
    counts = cols["count"]
    n = int(counts.sum())
    if n == 0:
        return np.zeros(0, dtype=RECORD_DTYPE)
    wire = g.wire_records(cols)
    exp = cols["exporter"]
    per_set = PerSet({"arrival_us": cols["arrival"], "export_secs": cols["secs"], "uptime_ms": cols["uptime"],
                      "domain": cols["domain"], "exporter": 0 if len(g.exporters.keys) == 1 else exp}, counts)
    words = g.exporters.words
    one = per_set.scalar("exporter")
    for w, name in ((0, "peer_lo"), (1, "peer_hi")):           # the exporter's address as two words
        column = words[:, w].tolist()
        if one is not None or len(set(column)) == 1:
            per_set.values[name] = column[0 if one is None else one]
        else:                                                   # two exporters at least: no need to look
            per_set.vary(name, words[exp, w])
    out = record_plan(g.compiled, g.version, state.wanted, state.time_secs).fill(wire, per_set)
    _resolve_sampling(out, wire, g, cols["table"], counts)
    keys = g.exporters.keys
    if one is not None:
        counters[keys[one]].flows += n
    else:
        flows = np.bincount(exp, weights=counts, minlength=len(keys)).tolist()
        for e in np.flatnonzero(np.bincount(exp, minlength=len(keys))).tolist():
            counters[keys[e]].flows += int(flows[e])
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
    which = np.repeat(np.broadcast_to(table_idx, len(counts)), counts)     # the table each record saw
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
    rows = g.rows()
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
