"""NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) decoding of a whole batch.

The fast path is vectorised (no Python per packet or per set): the structural
walk of every packet (netflow_walk), then the data sets' templates looked up
once per distinct (exporter, domain, set id) of the batch, then the sets queued
as numpy rows in one SetGroup per compiled template (netflow_groups), decoded
at the end.  Counters and sequence gaps are computed per exporter with numpy.

Slow path, one packet at a time in Python (walk_packet): packets with template
or options template sets, options data (sampling), data without a known
template (kept pending), variable-length templates, and anything irregular
(malformed or padded sets, bad headers).  A slow packet that changes the
templates or sampling tables makes the rest of the batch be classified again,
so every set sees the state of its own moment, as in nfacctd.
"""
from __future__ import annotations

import struct
from typing import Optional

import numpy as np

from .messages import BusMessage
from .netflow_groups import SetGroup, compact_varlen_records, decode_group, decode_pending, learn_options
from .netflow_walk import PacketHeaders, read_headers, unique_exporters, walk_sets
from .state import CounterBook, DecoderState, SetContext, template_message
from .templates import (IPFIX_OPTIONS_SET, IPFIX_TEMPLATE_SET, MIN_DATA_SET_ID, V9_OPTIONS_SET,
                        V9_TEMPLATE_SET, Template, parse_template_set)

__all__ = ["TemplatePacketDecoder", "decode_pending", "compact_varlen_records"]

V9_HEADER = struct.Struct(">HHIIII")       # version, count, sysUptime ms, unix secs, sequence, source id
IPFIX_HEADER = struct.Struct(">HHIII")     # version, length, export time, sequence, observation domain
SET_HEADER = struct.Struct(">HH")
UNKNOWN = -1                               # data records of a packet when some data had no template


class TemplatePacketDecoder:
    """Decodes the v9/IPFIX packets of one batch into records, learning templates on the way."""

    def __init__(self, state: DecoderState, counters: CounterBook, learnt: list[BusMessage]) -> None:
        self.state = state
        self.counters = counters
        self.learnt = learnt
        self.groups: dict[tuple, SetGroup] = {}     # (id(compiled), version) → group over the batch buffer
        self.compact: dict[tuple, SetGroup] = {}    # (id(compiled), version) → compacted varlen records
        self.records: list[np.ndarray] = []         # decoded from pending data on the way

    def decode(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, exporters: np.ndarray,
               arrival_us: np.ndarray, version: Optional[np.ndarray] = None) -> list[np.ndarray]:
        n = len(offsets)
        if version is None:
            version = (buf[offsets].astype(np.int64) << 8) | buf[offsets + 1]
        keys, exp_id = unique_exporters(exporters)
        self._buf = buf
        h = read_headers(buf, offsets, lengths, version)
        sets, regular = walk_sets(buf, offsets, h)
        self.seq_done = np.zeros(n, dtype=bool)                  # the packet's sequence number is checked
        self.data_records = np.zeros(n, dtype=np.int64)
        self._count_packets(keys, exp_id, lengths, h.ok)
        self._walk_batch(buf, offsets, lengths, exporters, arrival_us, keys, exp_id, h, sets, regular)
        self._check_sequences(keys, exp_id, h)
        out = self.records
        for g in list(self.groups.values()) + list(self.compact.values()):
            try:
                out.append(decode_group(g, self.state, self.counters))
            except (ValueError, IndexError, TypeError):                 # defensive: never kill a shard
                rows, exps = g.rows()
                self.counters[exps[0].tobytes()].decode_errors += len(rows["count"])
        return out

    # -- the batch: fast segments between slow packets --------------------------------------
    def _walk_batch(self, buf, offsets, lengths, exporters, arrival_us, keys, exp_id, h: PacketHeaders, sets,
                    regular) -> None:
        pv = h.version[sets.packet]
        template_set = np.where(pv == 9, sets.set_id <= V9_OPTIONS_SET,
                                (sets.set_id == IPFIX_TEMPLATE_SET) | (sets.set_id == IPFIX_OPTIONS_SET))
        data = np.flatnonzero(sets.set_id >= MIN_DATA_SET_ID)
        d_pkt = sets.packet[data]
        always_slow = ~regular
        always_slow[sets.packet[template_set]] = True
        mv = memoryview(buf)
        i, n = 0, len(offsets)
        while i < n:
            generation = self.state.generation
            group_of, slow = self._classify(keys, exp_id, h, sets, data, d_pkt, always_slow, i)
            slow_packets = np.flatnonzero(slow[i:]) + i
            for s in slow_packets.tolist() + [n]:
                if s > i:
                    self._fast_segment(i, s, keys, exp_id, exporters, arrival_us, h, sets, data, d_pkt, group_of)
                i = s + 1
                if s == n:
                    break
                self._slow_packet(buf, mv, s, offsets, lengths, exporters, arrival_us)
                if self.state.generation != generation:
                    break                          # templates or sampling changed: classify the rest again

    def _classify(self, keys, exp_id, h, sets, data, d_pkt, always_slow, first: int):
        """(class of each data set from packet `first` on: index into self._classes, -1 when it needs the
        slow path; slow-packet mask).  Templates are looked up once per distinct (exporter, domain, set id)."""
        slow = always_slow.copy()
        lo = np.searchsorted(d_pkt, first)
        rows, pkt = data[lo:], d_pkt[lo:]
        group_of = np.full(len(data), -1, dtype=np.int64)
        self._classes: list = []
        self._tables = [self.state.sampling_table(k) for k in keys]     # each exporter's, at this moment
        if not len(rows):
            return group_of, slow
        if len(keys) < (1 << 15):                # (exporter, domain, set id) in one int64
            uk, inv = np.unique((exp_id[pkt] << 48) | (h.domain[pkt] << 16) | sets.set_id[rows], return_inverse=True)
            triples = [(k >> 48, (k >> 16) & 0xFFFFFFFF, k & 0xFFFF) for k in uk.tolist()]
        else:
            u1, inv1 = np.unique((exp_id[pkt] << 32) | h.domain[pkt], return_inverse=True)
            uk, inv = np.unique((inv1.ravel() << 16) | sets.set_id[rows], return_inverse=True)
            e_d = [int(u1[k >> 16]) for k in uk.tolist()]
            triples = [(x >> 32, x & 0xFFFFFFFF, k & 0xFFFF) for x, k in zip(e_d, uk.tolist())]
        cls = np.full(len(uk), -1, dtype=np.int64)
        templates = self.state.templates
        for j, (e, domain, set_id) in enumerate(triples):
            compiled = templates.get((keys[e], domain, set_id))
            if compiled is not None and not compiled.varlen and not compiled.options:
                cls[j] = len(self._classes)
                self._classes.append(compiled)
        row_cls = cls[inv.ravel()]
        group_of[lo:] = row_cls
        slow[pkt[row_cls < 0]] = True
        return group_of, slow

    def _fast_segment(self, a: int, b: int, keys, exp_id, exporters, arrival_us, h, sets, data, d_pkt,
                      group_of) -> None:
        """Queue the data sets of packets a..b-1 (all regular, every data set with a known fixed template)."""
        lo, hi = np.searchsorted(d_pkt, (a, b))
        if lo == hi:
            self.seq_done[a:b] = True
            return
        rows, pkt, cls = data[lo:hi], d_pkt[lo:hi], group_of[lo:hi]
        for c in np.unique(cls).tolist() if (cls != cls[0]).any() else [int(cls[0])]:
            sel = cls == c
            r, p = (rows, pkt) if sel.all() else (rows[sel], pkt[sel])
            compiled = self._classes[c]
            count = sets.length[r] // compiled.record_length
            self._add_records(p, count)
            ver = h.version[p]
            for v in [int(ver[0])] if (ver == ver[0]).all() else np.unique(ver).tolist():
                sv = ver == v
                pv, cv, rv = (p, count, r) if sv.all() else (p[sv], count[sv], r[sv])
                g = self._group(compiled, v)
                tables = self._tables
                if all(t is tables[0] for t in tables):
                    table = np.full(len(pv), g.table_index(tables[0]), dtype=np.int64)
                else:
                    table = np.array([g.table_index(t) for t in tables], dtype=np.int64)[exp_id[pv]]
                g.add_block({"start": sets.start[rv], "count": cv, "arrival": arrival_us[pv], "secs": h.secs[pv],
                             "uptime": h.uptime[pv], "domain": h.domain[pv], "table": table}, exporters[pv])
        self.seq_done[a:b] = True

    def _add_records(self, pkt: np.ndarray, count: np.ndarray) -> None:
        self.data_records += np.bincount(pkt, weights=count, minlength=len(self.data_records)).astype(np.int64)

    def _group(self, compiled, version: int) -> SetGroup:
        g = self.groups.get((id(compiled), version))
        if g is None:
            g = self.groups[(id(compiled), version)] = SetGroup(compiled, version, self._buf)
        return g

    def _slow_packet(self, buf, mv, i: int, offsets, lengths, exporters, arrival_us) -> None:
        exp = exporters[i].tobytes()
        try:
            data_records = self.walk_packet(buf, mv, int(offsets[i]), int(lengths[i]), exp, int(arrival_us[i]))
        except (struct.error, ValueError, IndexError, TypeError):   # defensive: never kill a shard
            self.counters[exp].decode_errors += 1
            return
        if data_records is not False:
            self.seq_done[i] = True
            self.data_records[i] = UNKNOWN if data_records is None else data_records

    # -- per-exporter counters and sequence numbers, vectorised ------------------------------
    def _count_packets(self, keys, exp_id, lengths, ok) -> None:
        packets = np.bincount(exp_id, minlength=len(keys)).tolist()
        nbytes = np.bincount(exp_id, weights=lengths, minlength=len(keys)).tolist()
        bad = np.bincount(exp_id[~ok], minlength=len(keys)).tolist()
        for k, p, b, e in zip(keys, packets, nbytes, bad):
            c = self.counters[k]
            c.packets += p
            c.bytes += int(b)
            c.decode_errors += e

    def _check_sequences(self, keys, exp_id, h: PacketHeaders) -> None:
        """v9 sequence counts packets, IPFIX counts data records (unknown when some data had no template)."""
        done = np.flatnonzero(self.seq_done)
        if not len(done):
            return
        e, dom, ver, seq = exp_id[done], h.domain[done], h.version[done], h.seq[done]
        nxt = np.where(ver == 9, (seq + 1) & 0xFFFFFFFF, (seq + self.data_records[done]) & 0xFFFFFFFF)
        nxt = np.where((ver == 10) & (self.data_records[done] == UNKNOWN), -1, nxt)
        order = np.lexsort((ver, dom, e))                       # stable: packet order within a key
        e, dom, ver, seq, nxt = e[order], dom[order], ver[order], seq[order], nxt[order]
        first = np.ones(len(e), dtype=bool)
        first[1:] = (e[1:] != e[:-1]) | (dom[1:] != dom[:-1]) | (ver[1:] != ver[:-1])
        expected = np.empty(len(e), dtype=np.int64)
        expected[1:] = nxt[:-1]
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(e)) - 1
        seqs = self.state.sequences
        for s, t in zip(starts.tolist(), ends.tolist()):
            key = (keys[e[s]], int(dom[s]), int(ver[s]))
            expected[s] = seqs.get(key, -1)
            last = int(nxt[t])
            if last < 0:
                seqs.pop(key, None)
            else:
                seqs[key] = last
        gaps = (expected >= 0) & (expected != seq)
        if gaps.any():
            for k, g in zip(*np.unique(e[gaps], return_counts=True)):
                self.counters[keys[k]].seq_gaps += int(g)

    # -- the per-packet slow path ----------------------------------------------------------------
    def walk_packet(self, buf: np.ndarray, mv: memoryview, off: int, length: int, exporter: bytes,
                    arrival: int):
        """Walk one packet in Python; its data records (None: some data had no template), False: bad header.

        Packets and bytes are counted by the caller (and header errors: False).
        """
        c = self.counters[exporter]
        version = (mv[off] << 8) | mv[off + 1]
        if version == 9:
            if length < V9_HEADER.size:
                return False
            _, count, uptime, secs, seq, domain = V9_HEADER.unpack_from(mv, off)
            pos, end = off + V9_HEADER.size, off + length
            sets_left = max(count, 1)       # nfacctd (and tshark) walk at most `count` flowsets
        else:
            if length < IPFIX_HEADER.size:
                return False
            _, msg_len, secs, seq, domain = IPFIX_HEADER.unpack_from(mv, off)
            if msg_len < IPFIX_HEADER.size or msg_len > length:
                return False
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
        return data_records

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
                g = SetGroup(compiled, ctx.version)
                g.add_bytes(data, count, ctx, table)
                learn_options(g, ctx.exporter, state, self.counters, self.learnt)
            else:
                g = self.compact.get((id(compiled), ctx.version))
                if g is None:
                    g = self.compact[(id(compiled), ctx.version)] = SetGroup(compiled, ctx.version)
                g.add_bytes(data, count, ctx, table)
            return count, ok
        count = len(body) // compiled.record_length
        if compiled.options:
            g = SetGroup(compiled, ctx.version, buf)
            g.add(start, count, ctx, table)
            learn_options(g, ctx.exporter, state, self.counters, self.learnt)
            return count, True
        self._group(compiled, ctx.version).add(start, count, ctx, table)
        return count, True
