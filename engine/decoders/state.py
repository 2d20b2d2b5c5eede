"""Decoder state: templates, sampling tables, data waiting for its template, sequence numbers.

One DecoderState lives in each shard.  Templates are keyed by (exporter address,
observation domain / source id, template id) — never by source port.  Sampling
rates learnt from options data are kept per exporter address and sampler id
(0: the exporter-wide rate), as nfacctd does.  Each exporter's sampling table
is replaced, never mutated, when it changes: a data set keeps a reference to the
table current when it arrived, so records get the rate nfacctd would give them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..schema import RECORD_DTYPE
from .messages import (KIND_SAMPLING, KIND_TEMPLATE, BusMessage, make_key, parse_key, sampling_message,
                       sampling_rate_from)
from .netflow_walk import KnownExporters
from .templates import (CompiledTemplate, Template, TemplateError, compile_template, parse_template_set,
                        template_from_bytes, template_to_bytes)

TemplateKey = tuple[bytes, int, int]          # (exporter16, domain, template id)
EMPTY_TABLE: dict[int, int] = {}


@dataclass
class ExporterCounters:
    """Per-exporter counters of one batch (the caller accumulates them with add)."""
    packets: int = 0
    flows: int = 0
    bytes: int = 0                # export datagram bytes received
    seq_gaps: int = 0
    no_template_sets: int = 0     # data sets that arrived before their template
    pending_sets: int = 0         # of those, kept to be decoded when the template arrives
    pending_expired_sets: int = 0
    decode_errors: int = 0
    templates: int = 0            # template and options template records received
    options_records: int = 0
    samples: int = 0              # sFlow: samples the datagram headers announce (every type)
    frame_bytes: int = 0          # sFlow: Σ frame_length of raw packet header records (unscaled)
    counter_samples: int = 0      # sFlow: counter samples (written to the counter file)
    unknown_samples: int = 0      # sFlow: samples of unknown type, skipped by their length
    unknown_records: int = 0      # sFlow: flow / counter records of unknown type, skipped

    def add(self, other: "ExporterCounters") -> "ExporterCounters":
        # straight on the instance dicts (all fields are ints): a shard adds each exporter's batch counters
        # once a batch, and dataclasses.fields() with getattr/setattr cost ~4 us a call: with 256 exporters,
        # 15% of the shard's CPU
        mine = self.__dict__
        for name, value in other.__dict__.items():
            if value:
                mine[name] += value
        return self


class CounterBook(dict):
    """exporter16 → ExporterCounters, created on first use."""

    def __missing__(self, exporter: bytes) -> ExporterCounters:
        c = self[exporter] = ExporterCounters()
        return c


MAX_KEYS_PER_EXPORTER = 4096        # templates / sequence keys per exporter address (routers use tens)
PARSED_SETS = 256                   # template set bodies remembered parsed (≤ PARSED_SET_BYTES each)
PARSED_SET_BYTES = 4096
PENDING_SET_COST = 64               # a pending set counts at least this many bytes against the limit


class KeysByExporter:
    """Keys of a table in arrival order, per exporter address (key[0]): which one to evict first."""

    def __init__(self) -> None:
        self._keys: dict[bytes, OrderedDict] = {}

    def added(self, key: tuple) -> Optional[tuple]:
        """Note a new key; the exporter's oldest key when it now has too many (the caller drops it)."""
        keys = self._keys.setdefault(key[0], OrderedDict())
        keys[key] = None
        if len(keys) > MAX_KEYS_PER_EXPORTER:
            return keys.popitem(last=False)[0]
        return None

    def removed(self, key: tuple) -> None:
        keys = self._keys.get(key[0])
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._keys[key[0]]


class SequenceTable(dict):
    """(exporter, domain / engine / sub-agent, version) → next expected sequence number, bounded per exporter."""

    def __init__(self) -> None:
        super().__init__()
        self._order = KeysByExporter()

    def __setitem__(self, key, value) -> None:
        if key not in self:
            old = self._order.added(key)
            if old is not None:
                super().pop(old, None)
        super().__setitem__(key, value)

    def pop(self, key, *default):
        self._order.removed(key)
        return super().pop(key, *default)


class SetContext:
    """What a data set needs from its packet header (a plain slotted class: one per packet)."""
    __slots__ = ("version", "exporter", "domain", "arrival_us", "export_secs", "uptime_ms")

    def __init__(self, version: int, exporter: bytes, domain: int, arrival_us: int, export_secs: int,
                 uptime_ms: int) -> None:
        self.version = version
        self.exporter = exporter
        self.domain = domain
        self.arrival_us = arrival_us
        self.export_secs = export_secs      # v9 unix_secs / IPFIX export time
        self.uptime_ms = uptime_ms          # v9 sysUptime (0 for IPFIX)


@dataclass
class PendingSet:
    key: TemplateKey
    body: bytes
    ctx: SetContext


class DecoderState:
    def __init__(self, time_secs: bool = False, pending_limit_bytes: int = 16 << 20,
                 pending_max_age_s: float = 30.0) -> None:
        self.time_secs = time_secs
        self.pending_limit_bytes = pending_limit_bytes
        self.pending_max_age_us = int(pending_max_age_s * 1e6)
        self.templates: dict[TemplateKey, CompiledTemplate] = {}
        self.sampling: dict[bytes, dict[int, int]] = {}
        self.pending: OrderedDict[int, PendingSet] = OrderedDict()     # arrival order
        self.pending_bytes = 0
        self.pending_keys: dict[TemplateKey, list[int]] = {}             # key → its pending set ids, oldest first
        self._pending_seq = 0
        self.sequences: dict[tuple, int] = SequenceTable()  # (exporter, domain/engine, version) → next expected
        self._template_order = KeysByExporter()
        self._pending_count_limit = max(1, pending_limit_bytes // PENDING_SET_COST)
        self.wanted: Optional[frozenset[str]] = None  # record fields some consumer reads (None: fill all)
        self.generation = 0                          # bumped whenever templates or sampling tables change
        self._compiled: dict[Template, CompiledTemplate] = {}   # identical templates share one compilation
        self._parsed_sets: dict[tuple, tuple] = {}              # (version, set id, body) → parse_template_set
        self.known_exporters = KnownExporters()                 # numbering of recent batches' exporters

    # -- templates --------------------------------------------------------------------------
    def learn_template(self, key: TemplateKey, template: Template) -> tuple[Optional[CompiledTemplate], bool]:
        """Store a template; (compiled or None, whether it is new or changed)."""
        if template.withdrawn:
            removed = self._drop_template(key)
            self.generation += removed
            return None, removed
        old = self.templates.get(key)
        if old is not None and old.template == template:
            return old, False
        self.generation += 1
        compiled = self._compile(template)
        if compiled is None:
            self._drop_template(key)
            return None, old is not None
        if old is None:
            evicted = self._template_order.added(key)
            if evicted is not None:                 # bounded per exporter: the oldest key goes
                self.templates.pop(evicted, None)
        self.templates[key] = compiled
        return compiled, True

    def parse_template_set(self, version: int, set_id: int, body) -> tuple[list[Template], bool]:
        """templates.parse_template_set, remembered for recent set bodies: exporters resend the same sets
        (the result is shared: callers only read it)."""
        key = (version, set_id, bytes(body))
        parsed = self._parsed_sets.get(key)
        if parsed is None:
            parsed = parse_template_set(version, set_id, body)
            if len(key[2]) <= PARSED_SET_BYTES:
                if len(self._parsed_sets) >= PARSED_SETS:
                    self._parsed_sets.clear()
                self._parsed_sets[key] = parsed
        return parsed

    def _drop_template(self, key: TemplateKey) -> bool:
        self._template_order.removed(key)
        return self.templates.pop(key, None) is not None

    def _compile(self, template: Template) -> Optional[CompiledTemplate]:
        """Compile once per distinct template: exporters sharing a layout share its data-set group."""
        if template in self._compiled:
            return self._compiled[template]
        if len(self._compiled) >= 4096:        # bounded under template churn
            self._compiled.clear()
        compiled = self._compiled[template] = compile_template(template)
        return compiled

    def withdraw_all(self, exporter: bytes, domain: int, options: bool) -> list[TemplateKey]:
        keys = [k for k, c in self.templates.items()
                if k[0] == exporter and k[1] == domain and c.options == options]
        for k in keys:
            self._drop_template(k)
        self.generation += 1
        return keys

    # -- sampling ---------------------------------------------------------------------------
    def sampling_table(self, exporter: bytes) -> dict[int, int]:
        return self.sampling.get(exporter, EMPTY_TABLE)

    def set_sampling(self, exporter: bytes, sampler_id: int, rate: int) -> bool:
        table = self.sampling.get(exporter, EMPTY_TABLE)
        if table.get(sampler_id) == rate:
            return False
        new = dict(table)
        new[sampler_id] = rate
        self.sampling[exporter] = new
        self.generation += 1
        return True

    # -- data waiting for its template ----------------------------------------------------
    def add_pending(self, key: TemplateKey, body: bytes, ctx: SetContext, counters: CounterBook) -> None:
        c = counters[ctx.exporter]
        c.no_template_sets += 1
        if len(body) > self.pending_limit_bytes:
            c.pending_expired_sets += 1
            return
        c.pending_sets += 1
        self._pending_seq += 1
        self.pending[self._pending_seq] = PendingSet(key, bytes(body), ctx)
        self.pending_bytes += len(body)
        self.pending_keys.setdefault(key, []).append(self._pending_seq)
        while self.pending_bytes > self.pending_limit_bytes or len(self.pending) > self._pending_count_limit:
            i, old = self.pending.popitem(last=False)
            self._forget(i, old)
            counters[old.ctx.exporter].pending_expired_sets += 1

    def take_pending(self, key: TemplateKey) -> list[PendingSet]:
        """Remove and return the pending sets of a template, oldest first (costs the sets returned)."""
        ids = self.pending_keys.pop(key, None)
        if not ids:
            return []
        out = [self.pending.pop(i) for i in ids]
        self.pending_bytes -= sum(len(p.body) for p in out)
        return out

    def _forget(self, i: int, p: PendingSet) -> None:
        """Account for pending set i leaving self.pending (expired or pushed out)."""
        self.pending_bytes -= len(p.body)
        ids = self.pending_keys[p.key]
        ids.remove(i)                   # the oldest are first: found at once
        if not ids:
            del self.pending_keys[p.key]

    def expire_pending(self, now_us: int) -> dict[bytes, ExporterCounters]:
        """Drop pending data older than the max age; counted per exporter as pending_expired_sets."""
        counters = CounterBook()
        limit = now_us - self.pending_max_age_us
        while self.pending:
            i, p = next(iter(self.pending.items()))
            if p.ctx.arrival_us >= limit:
                break
            del self.pending[i]
            self._forget(i, p)
            counters[p.ctx.exporter].pending_expired_sets += 1
        return dict(counters)

    # -- bus --------------------------------------------------------------------------------
    def snapshot(self) -> list[BusMessage]:
        """Everything learnt so far, as bus messages."""
        msgs = [template_message(k, c.template) for k, c in self.templates.items()]
        for exporter, table in self.sampling.items():
            msgs.extend(sampling_message(exporter, sid, rate) for sid, rate in table.items())
        return msgs

    def apply(self, msgs: list[BusMessage]) -> np.ndarray:
        """Apply templates / sampling learnt elsewhere; returns records decoded from pending data."""
        from .netflow_groups import decode_pending     # here: netflow_groups imports this module
        out = []
        for m in msgs:
            try:
                kind, exporter, domain, ident = parse_key(m.key)
                if kind == KIND_SAMPLING:
                    self.set_sampling(exporter, ident, sampling_rate_from(m.payload))
                    continue
                if kind != KIND_TEMPLATE:
                    continue
                template = template_from_bytes(m.payload)
            except (ValueError, TemplateError):
                continue               # a malformed message is skipped
            key = (exporter, domain, template.template_id)
            compiled, changed = self.learn_template(key, template)
            if compiled is not None:
                recs = decode_pending(self, key, compiled, CounterBook())
                if len(recs):
                    out.append(recs)
        if not out:
            return np.zeros(0, dtype=RECORD_DTYPE)
        return np.concatenate(out)


def template_message(key: TemplateKey, template: Template) -> BusMessage:
    return BusMessage(make_key(KIND_TEMPLATE, key[0], key[1], key[2]), template_to_bytes(template))
