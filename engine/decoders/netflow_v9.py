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
from .netflow_walk import (ExporterTable, PacketHeaders, SetRows, number_exporters, read_headers,
                           readable_headers, walk_sets)
from .state import EMPTY_TABLE, CounterBook, DecoderState, SetContext, template_message
from .templates import (IPFIX_OPTIONS_SET, IPFIX_TEMPLATE_SET, MIN_DATA_SET_ID, V9_OPTIONS_SET,
                        V9_TEMPLATE_SET, Template)

__all__ = ["TemplatePacketDecoder", "decode_pending", "compact_varlen_records"]

V9_HEADER = struct.Struct(">HHIIII")       # version, count, sysUptime ms, unix secs, sequence, source id
IPFIX_HEADER = struct.Struct(">HHIII")     # version, length, export time, sequence, observation domain
SET_HEADER = struct.Struct(">HH")
UNKNOWN = -1                               # data records of a packet when some data had no template
SEQ_MASK = 0xFFFFFFFF
FEW_PACKETS = 32                           # sequence numbers of fewer packets are checked in Python


class TemplatePacketDecoder:
    """Decodes the v9/IPFIX packets of one batch into records, learning templates on the way."""

    def __init__(self, state: DecoderState, counters: CounterBook, learnt: list[BusMessage]) -> None:
        self.state = state
        self.counters = counters
        self.learnt = learnt
        self.groups: dict[tuple, SetGroup] = {}     # (id(compiled), version) → group over the batch buffer
        self.compact: dict[tuple, SetGroup] = {}    # (id(compiled), version) → compacted varlen records
        self.records: list[np.ndarray] = []         # decoded from pending data on the way
        self.exporters = ExporterTable()            # the batch's exporters, numbered

    def decode(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, exporters: np.ndarray,
               arrival_us: np.ndarray, version: Optional[np.ndarray] = None, only: int = 0) -> list[np.ndarray]:
        """Records of the packets (version: of each packet, 9 or 10; only: 9 or 10 when all have it)."""
        n = len(offsets)
        if n == 0:
            return []
        buf = readable_headers(buf, offsets)
        if version is None:
            version = (buf[offsets].astype(np.int64) << 8) | buf[offsets + 1]
        self.exporters, exp_id = number_exporters(exporters, self.state.known_exporters)
        self._buf = buf
        h = read_headers(buf, offsets, lengths, version, only)
        sets, regular = walk_sets(buf, offsets, lengths, h)
        self.seq_done = np.zeros(n, dtype=bool)                  # the packet's sequence number is checked
        self.data_records = np.zeros(n, dtype=np.int64)
        self._count_packets(exp_id, lengths, h)
        self._walk_batch(buf, offsets, lengths, exporters, arrival_us, exp_id, h, sets, regular)
        self._check_sequences(exp_id, h)
        out = self.records
        for g in list(self.groups.values()) + list(self.compact.values()):
            try:
                out.append(decode_group(g, self.state, self.counters))
            except (ValueError, IndexError, TypeError):                 # defensive: never kill a shard
                rows = g.rows()
                self.counters[g.exporters.keys[int(rows["exporter"][0])]].decode_errors += len(rows["count"])
        return out

    # -- the batch: fast segments between slow packets --------------------------------------
    def _walk_batch(self, buf, offsets, lengths, exporters, arrival_us, exp_id, h: PacketHeaders, sets: SetRows,
                    regular) -> None:
        set_id = sets.set_id
        always_slow = None if sets.one_per_packet else ~regular         # None: no packet is slow a priori
        if len(set_id) and int(set_id.min()) >= MIN_DATA_SET_ID:         # data sets only (the usual batch)
            data = sets
        else:
            if always_slow is None:
                always_slow = np.zeros(len(offsets), dtype=bool)
            if h.only == 9:
                template_set = set_id <= V9_OPTIONS_SET
            elif h.only == 10:
                template_set = (set_id >> 1) == 1                   # IPFIX_TEMPLATE_SET or IPFIX_OPTIONS_SET
            else:
                template_set = np.where(h.version[sets.packet] == 9, set_id <= V9_OPTIONS_SET, (set_id >> 1) == 1)
            rows = (set_id >= MIN_DATA_SET_ID).nonzero()[0]
            data = SetRows(sets.packet[rows], sets.start[rows], sets.length[rows], set_id[rows])
            always_slow[sets.packet[template_set]] = True
        per_packet = (arrival_us, h.secs, h.uptime, h.domain, exp_id)
        mv = memoryview(buf)
        i, n = 0, len(offsets)
        while i < n:
            generation = self.state.generation
            group_of, slow = self._classify(exp_id, h, data, always_slow, i)
            rest = slow[i:] if slow is not None else None
            slow_packets = (rest.nonzero()[0] + i).tolist() if rest is not None and rest.any() else []
            for s in slow_packets + [n]:
                if s > i:
                    self._fast_segment(i, s, n, h, data, group_of, per_packet)
                i = s + 1
                if s == n:
                    break
                self._slow_packet(buf, mv, s, offsets, lengths, exporters, arrival_us)
                if self.state.generation != generation:
                    break                          # templates or sampling changed: classify the rest again

    def _classify(self, exp_id, h, data: SetRows, always_slow, first: int):
        """(group of each data set from packet `first` on: index into self._classes, -1 when it needs the
        slow path, None when self._only_class says; slow-packet mask or None: none).  Templates are looked
        up once per distinct (exporter, domain, set id)."""
        slow = always_slow
        self._classes: list = []
        self._only_class: Optional[int] = None     # the class of every data set from `first` on, if one
        keys = self.exporters.keys
        # each exporter's sampling table at this moment (None: no exporter has one)
        self._tables = [self.state.sampling_table(k) for k in keys] if self.state.sampling else None
        lo = int(np.searchsorted(data.packet, first)) if first else 0
        if lo == len(data.packet):
            return None, slow
        present, triples, key, distinct = self._distinct_keys(exp_id, h, data, lo)
        templates = self.state.templates
        class_of: dict[int, int] = {}            # id(compiled) → group class: exporters sharing a template share one
        cls = []
        for e, domain, set_id in triples:
            compiled = templates.get((keys[e], domain, set_id))
            if compiled is not None and not compiled.varlen and not compiled.options:
                c = class_of.get(id(compiled))
                if c is None:
                    c = class_of[id(compiled)] = len(self._classes)
                    self._classes.append(compiled)
                cls.append(c)
            else:
                cls.append(-1)
        if len(set(cls)) == 1 and cls[0] >= 0:   # e.g. exporters sharing one template
            self._only_class = cls[0]
            return None, slow
        group_of = np.empty(len(data.packet), dtype=np.int64)
        group_of[:lo] = -1
        if present is not None:
            by_exporter = np.full(len(keys), -1, dtype=np.int64)
            by_exporter[present] = cls
            group_of[lo:] = by_exporter[exp_id]
        else:
            group_of[lo:] = np.array(cls, dtype=np.int64)[np.searchsorted(np.array(distinct, dtype=np.int64), key)]
        if -1 in cls:
            slow = np.zeros(len(exp_id), dtype=bool) if slow is None else slow.copy()
            slow[data.packet[lo:][group_of[lo:] < 0]] = True
        return group_of, slow

    def _distinct_keys(self, exp_id, h, data: SetRows, lo: int):
        """The distinct (exporter id, domain, set id) of the data sets from row lo on, as
        (exporters present or None, triples, int64 key per row, sorted distinct keys): when every data set
        has the same (domain, set id), the triples are the exporters present (and key, distinct are None)."""
        keys = self.exporters.keys
        if lo == 0 and data.one_per_packet:
            domain_set = (h.domain << 16) | data.set_id
            d0 = int(domain_set[0])
            if (domain_set == d0).all():
                present = [0] if len(keys) == 1 else np.bincount(exp_id, minlength=len(keys)).nonzero()[0].tolist()
                return present, [(e, d0 >> 16, d0 & 0xFFFF) for e in present], None, None
            key = (exp_id << 48) | domain_set
        else:
            pkt = data.packet[lo:]
            key = (exp_id[pkt] << 48) | (h.domain[pkt] << 16) | data.set_id[lo:]
        if len(keys) < (1 << 15):                # (exporter, domain, set id) in one int64
            distinct = sorted(set(key.tolist()))
            return None, [(k >> 48, (k >> 16) & 0xFFFFFFFF, k & 0xFFFF) for k in distinct], key, distinct
        pkt = data.packet[lo:]
        u1, inv1 = np.unique((exp_id[pkt] << 32) | h.domain[pkt], return_inverse=True)
        key = (inv1.ravel() << 16) | data.set_id[lo:]
        distinct = sorted(set(key.tolist()))
        triples = [(int(u1[k >> 16]) >> 32, int(u1[k >> 16]) & 0xFFFFFFFF, k & 0xFFFF) for k in distinct]
        return None, triples, key, distinct

    def _fast_segment(self, a: int, b: int, n: int, h, data: SetRows, group_of, per_packet) -> None:
        """Queue the data sets of packets a..b-1 (all regular, every data set with a known fixed template)."""
        self.seq_done[a:b] = True
        whole = a == 0 and b == n and data.one_per_packet         # data set i is packet i's, for every packet
        lo, hi = (0, n) if whole else np.searchsorted(data.packet, (a, b)).tolist()
        if lo == hi:
            return
        cls = group_of[lo:hi] if group_of is not None else None
        c0 = int(cls[0]) if self._only_class is None else self._only_class
        single = self._only_class is not None or bool((cls == c0).all())
        for c in [c0] if single else np.unique(cls).tolist():
            if whole and single:
                pkt = None
                start, length = data.start, data.length
            else:
                sel = slice(lo, hi) if single else (cls == c).nonzero()[0] + lo
                pkt = data.packet[sel]
                start, length = data.start[sel], data.length[sel]
            compiled = self._classes[c]
            count = length // compiled.record_length
            arrival, secs, uptime, domain, exp = per_packet if pkt is None else (col[pkt] for col in per_packet)
            ver = h.version if pkt is None else h.version[pkt]
            if h.only != 9:
                self._add_records(pkt, count)
            versions = [h.only] if h.only else np.unique(ver).tolist()
            for v in versions:
                rows = slice(None) if len(versions) == 1 else (ver == v).nonzero()[0]
                g = self._group(compiled, v)
                tables = self._tables
                if tables is None or all(t is tables[0] for t in tables):      # one table: its index
                    table = g.table_index(EMPTY_TABLE if tables is None else tables[0])
                else:
                    table = np.array([g.table_index(t) for t in tables], dtype=np.int64)[exp][rows]
                g.add_block({"start": start[rows], "count": count[rows], "arrival": arrival[rows],
                             "secs": secs[rows], "uptime": uptime[rows], "domain": domain[rows],
                             "table": table, "exporter": exp[rows]})

    def _add_records(self, pkt: Optional[np.ndarray], count: np.ndarray) -> None:
        if pkt is None:                                  # one set per packet, every packet
            self.data_records += count
        else:
            self.data_records += np.bincount(pkt, weights=count, minlength=len(self.data_records)).astype(np.int64)

    def _group(self, compiled, version: int) -> SetGroup:
        g = self.groups.get((id(compiled), version))
        if g is None:
            g = self.groups[(id(compiled), version)] = SetGroup(compiled, version, self._buf, self.exporters)
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
    def _count_packets(self, exp_id, lengths, h: PacketHeaders) -> None:
        keys = self.exporters.keys
        ok = h.ok
        n, good = len(lengths), (len(lengths) if h.all_ok else int(np.count_nonzero(ok)))
        if len(keys) == 1:
            c = self.counters[keys[0]]
            c.packets += n
            c.bytes += int(lengths.sum())
            c.decode_errors += n - good
            return
        packets = np.bincount(exp_id, minlength=len(keys)).tolist()
        nbytes = np.bincount(exp_id, weights=lengths, minlength=len(keys)).tolist()
        bad = np.bincount(exp_id[~ok], minlength=len(keys)).tolist() if good < n else [0] * len(keys)
        for k, p, b, e in zip(keys, packets, nbytes, bad):
            if not p:
                continue                     # an exporter of an earlier batch (KnownExporters)
            c = self.counters[k]
            c.packets += p
            c.bytes += int(b)
            c.decode_errors += e

    def _check_sequences(self, exp_id, h: PacketHeaders) -> None:
        """v9 sequence counts packets, IPFIX counts data records (unknown when some data had no template).

        Packets are grouped by (exporter, domain, version) with a stable sort (packet order within a key);
        each key's first packet is checked against the state, the others against their predecessor."""
        done = self.seq_done
        if done.all():
            e, dom, ver, seq, dr = exp_id, h.domain, h.version, h.seq, self.data_records
        else:
            idx = done.nonzero()[0]
            if not len(idx):
                return
            e, dom, ver, seq, dr = exp_id[idx], h.domain[idx], h.version[idx], h.seq[idx], self.data_records[idx]
        if h.only == 9:
            nxt = (seq + 1) & SEQ_MASK
        elif h.only == 10:
            nxt = (seq + dr) & SEQ_MASK
            unknown = dr == UNKNOWN
            if unknown.any():
                nxt[unknown] = -1
        else:
            nxt = np.where(ver == 9, (seq + 1) & SEQ_MASK, (seq + dr) & SEQ_MASK)
            nxt = np.where((ver == 10) & (dr == UNKNOWN), -1, nxt)
        if len(seq) <= FEW_PACKETS:
            self._check_few_sequences(e.tolist(), dom.tolist(), [h.only] * len(seq) if h.only else ver.tolist(),
                                      seq.tolist(), nxt.tolist())
            return
        if h.only:                                               # (exporter, domain[, version]) in one int64
            shift, key = 32, (e << 32) | dom
        else:
            shift, key = 33, (e << 33) | (dom << 1) | (ver == 10)     # exporter ids are < 2^30
        if (key == key[0]).all():
            starts = [0]
            gaps = seq[1:] != nxt[:-1]                            # each packet against the one before
        else:
            order = np.argsort(key, kind="stable")
            key, seq, nxt = key[order], seq[order], nxt[order]
            same = key[1:] == key[:-1]
            starts = [0] + ((~same).nonzero()[0] + 1).tolist()
            gaps = (seq[1:] != nxt[:-1]) & same
        if h.only != 9:
            gaps &= nxt[:-1] >= 0                                 # -1: unknown (IPFIX data without template)
        ends = [s - 1 for s in starts[1:]] + [len(key) - 1]
        keys, seqs = self.exporters.keys, self.state.sequences
        for k, first, last in zip(key[starts].tolist(), seq[starts].tolist(), nxt[ends].tolist()):
            exporter = keys[k >> shift]
            state_key = (exporter, (k >> (shift - 32)) & SEQ_MASK, h.only or (10 if k & 1 else 9))
            expected = seqs.get(state_key, -1)
            if expected >= 0 and expected != first:
                self.counters[exporter].seq_gaps += 1
            if last < 0:
                seqs.pop(state_key, None)
            else:
                seqs[state_key] = last
        if gaps.any():
            for k, g in zip(*np.unique(key[1:][gaps] >> shift, return_counts=True)):
                self.counters[keys[k]].seq_gaps += int(g)

    def _check_few_sequences(self, e: list, dom: list, ver: list, seq: list, nxt: list) -> None:
        """_check_sequences for a few packets, one Python step each (cheaper than the sort at this size)."""
        keys, seqs = self.exporters.keys, self.state.sequences
        last: dict[tuple, int] = {}                # (exporter id, domain, version) → next expected
        for k, s, x in zip(zip(e, dom, ver), seq, nxt):
            expected = last[k] if k in last else seqs.get((keys[k[0]], k[1], k[2]), -1)
            if expected >= 0 and expected != s:
                self.counters[keys[k[0]]].seq_gaps += 1
            last[k] = x
        for (exporter, domain, version), x in sorted(last.items()):      # as _check_sequences: by key
            if x < 0:
                seqs.pop((keys[exporter], domain, version), None)
            else:
                seqs[(keys[exporter], domain, version)] = x

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
        templates, malformed = self.state.parse_template_set(version, set_id, body)
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
