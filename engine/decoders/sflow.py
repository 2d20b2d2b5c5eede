"""sFlow v5 decoding, vectorised over a whole batch of datagrams (sfacctd's input).

    res = decode_sflow_batch(batch, state)    # res.records (RECORD_DTYPE), res.counter_events, res.counters

Steps, each one numpy pass over the batch (no Python per sample):
1. datagram headers (version 5, IPv4 or IPv6 agent address, sub-agent, sequence, sample count);
2. samples, walked in lock-step over all datagrams (sflow_walk.walk_items);
3. flow samples (compact 1, expanded 3): their fixed fields, then their records, walked in lock-step;
4. records by type (sflow_records): sampled headers parsed layer by layer (packet_headers), IPv4/IPv6
   data, extended switch / router / gateway, each written into its sample's record (sflow_rows);
5. one canonical record per flow sample that carries a raw header or IPv4/IPv6 data.
Fields no consumer reads (DecoderState.wanted) are left zero; counters are always complete.
Counter samples (2, 4) take a per-sample slow path (sflow_counters) into CounterEvents.
Unknown sample and record types are skipped by their length and counted; a datagram whose
lengths overrun it is counted as a decode error and keeps what was decoded before the overrun.
Versions 2 and 4 (no length fields) are rewritten as v5 beforehand (sflow_legacy, a per-datagram slow path).

Counters are per agent address (ExporterCounters); datagram sequence numbers are tracked per
(agent, sub-agent) and a jump counts a seq_gap.
"""
from __future__ import annotations

import numpy as np

from ..schema import IPV4_MAPPED_PREFIX, RECORD_DTYPE
from .sflow_counters import AgentSeen, decode_counter_sample
from .sflow_records import PARSE_ORDER, RECORD_PARSERS
from .sflow_rows import FlowRows
from .sflow_walk import be32, column, gather_bytes, walk_items
from .state import CounterBook, DecoderState

FLOW_SAMPLE, COUNTER_SAMPLE, EXPANDED_FLOW_SAMPLE, EXPANDED_COUNTER_SAMPLE = 1, 2, 3, 4
SFLOW_VERSION = 5


def decode_sflow(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, exporters: np.ndarray,
                 arrival_us: np.ndarray, state: DecoderState, counters: CounterBook
                 ) -> tuple[np.ndarray, list]:
    """(records, counter-file events: AgentSeen and CounterEvent in datagram order)."""
    n = len(offsets)
    end = offsets + lengths
    version = be32(buf, offsets) * (lengths >= 8)
    addr_type = be32(buf, offsets + 4) * (lengths >= 8)
    alen = np.where(addr_type == 1, 4, np.where(addr_type == 2, 16, 0))
    hlen = 8 + alen + 16
    ok = (version == SFLOW_VERSION) & (alen > 0) & (lengths >= hlen)
    agents = np.zeros((n, 16), np.uint8)
    raw = gather_bytes(buf, offsets + 8, 16)
    v4 = ok & (alen == 4)
    agents[v4, 10:12] = 0xFF
    agents[v4, 12:] = raw[v4, :4]
    agents[ok & (alen == 16)] = raw[ok & (alen == 16)]
    p = offsets + 8 + alen
    sub_agent = be32(buf, p)
    seq = be32(buf, p + 4)
    nsamples = np.where(ok, be32(buf, p + 12), 0).astype(np.int64)

    s_dgram, s_body, s_type, s_len, broken = walk_items(buf, offsets + hlen, end, nsamples)
    fmt = np.where(s_type >> 12 == 0, s_type & 0xFFF, 0)
    firsts = _count_datagrams(agents, exporters, lengths, ok, broken, seq, sub_agent, nsamples, s_dgram, fmt,
                              state, counters)

    events: list = []
    new_agents = iter(firsts + [(n, None)])
    next_new = next(new_agents)
    is_counter = (fmt == COUNTER_SAMPLE) | (fmt == EXPANDED_COUNTER_SAMPLE)
    counter_samples = [(d, b, ln, f == EXPANDED_COUNTER_SAMPLE, False) for d, b, ln, f in zip(
        *(a[is_counter].tolist() for a in (s_dgram, s_body, s_len, fmt)))]
    counter_samples += _overrunning_counter_samples(buf, offsets + hlen, end, broken & ok, s_dgram, s_body, s_len)
    counter_samples.sort(key=lambda item: item[0])          # stable: datagram order, then sample order
    for d, body_at, body_len, expanded, overrun in counter_samples + [(n, 0, 0, False, False)]:
        while next_new[0] <= d and next_new[1] is not None:      # log_init markers, in datagram order
            events.append(next_new[1])
            next_new = next(new_agents)
        if d == n:
            break
        body = buf[body_at:body_at + body_len].tobytes()
        got, unknown, bad = decode_counter_sample(body, expanded, bytes(agents[d]), int(sub_agent[d]), int(seq[d]))
        events.extend(got)
        c = counters[bytes(agents[d])]
        c.unknown_records += unknown
        if not overrun:         # an overrunning sample's datagram was already counted as broken once
            c.decode_errors += bad
    records = _flow_samples(buf, s_dgram, s_body, s_len, fmt, agents, arrival_us, counters, state.wanted)
    return records, events


def _overrunning_counter_samples(buf, first, end, broken, s_dgram, s_body, s_len) -> list:
    """The counter sample whose length overruns its datagram, cut at the datagram's end: sfacctd still writes
    its records that lie wholly inside the datagram (the overrun itself is counted as a decode error)."""
    out = []
    for d in np.flatnonzero(broken).tolist():
        mine = s_dgram == d
        at = int((s_body[mine] + s_len[mine]).max()) if mine.any() else int(first[d])
        if at + 8 > end[d]:
            continue
        stype = int(be32(buf, np.array([at]))[0])
        if stype in (COUNTER_SAMPLE, EXPANDED_COUNTER_SAMPLE):
            out.append((d, at + 8, int(end[d]) - at - 8, stype == EXPANDED_COUNTER_SAMPLE, True))
    return out


def _count_datagrams(agents, exporters, lengths, ok, broken, seq, sub_agent, nsamples, s_dgram, fmt, state,
                     counters) -> list:
    """Per-datagram bookkeeping, vectorised: counters per agent and sequence gaps per (agent, sub-agent);
    Python runs once per distinct agent / (agent, sub-agent) of the batch, not per datagram.

    Returns [(datagram index, AgentSeen)] for the first datagram of each (agent, sub-agent) of the batch."""
    n = len(lengths)
    if n == 0:
        return []

    def per_datagram(mask):                                     # samples of a kind in each datagram
        return np.bincount(s_dgram[mask], minlength=n) if mask.any() else 0

    good = ok.astype(np.int64)
    counter_samples = per_datagram((fmt == COUNTER_SAMPLE) | (fmt == EXPANDED_COUNTER_SAMPLE))
    unknown_samples = per_datagram((fmt == 0) | (fmt > EXPANDED_COUNTER_SAMPLE))
    cols = np.stack([np.ones(n, np.int64), lengths.astype(np.int64), 1 - good + good * broken,
                     good * nsamples, good * counter_samples, good * unknown_samples])
    who = np.where(ok[:, None], agents, exporters)          # a bad datagram counts against its sender
    first, inverse = _groups(np.ascontiguousarray(who).view("<u8"))
    n_agents = len(first)
    sums = np.zeros((len(cols), n_agents), np.int64)
    for k in range(len(cols)):
        sums[k] = np.bincount(inverse, weights=cols[k], minlength=n_agents).astype(np.int64)
    gaps = np.zeros(n_agents, np.int64)
    firsts: list[tuple[int, AgentSeen]] = []
    good_idx = np.flatnonzero(ok)
    if len(good_idx):
        keys = np.empty((len(good_idx), 3), np.uint64)          # (agent, sub-agent)
        keys[:, :2] = np.ascontiguousarray(agents[good_idx]).view("<u8")
        keys[:, 2] = sub_agent[good_idx]
        kfirst, kinv = _groups(keys)
        order = np.argsort(kinv, kind="stable")              # by key, datagram order within a key
        sk, ss = kinv[order], seq[good_idx][order].astype(np.int64)
        jump = (sk[1:] == sk[:-1]) & (ss[1:] != ((ss[:-1] + 1) & 0xFFFFFFFF))
        key_agent = inverse[good_idx[kfirst]]                   # each key's agent group
        np.add.at(gaps, key_agent[sk[1:][jump]], 1)
        last = np.zeros(len(kfirst), np.int64)
        ends = np.flatnonzero(np.append(sk[1:] != sk[:-1], True))
        last[sk[ends]] = ss[ends]                               # the latest sequence number of each key
        first_seq = seq[good_idx[kfirst]].astype(np.int64)
        for k in np.argsort(kfirst).tolist():                   # keys in first-seen order
            d = int(good_idx[kfirst[k]])
            agent = bytes(agents[d])
            key = (agent, int(sub_agent[d]), "sflow")
            firsts.append((d, AgentSeen(agent, key[1])))
            expected = state.sequences.get(key)
            if expected is not None and expected != int(first_seq[k]):
                gaps[key_agent[k]] += 1
            state.sequences[key] = (int(last[k]) + 1) & 0xFFFFFFFF
    for a in np.argsort(first).tolist():                        # agents in first-seen order
        c = counters[bytes(who[first[a]])]
        packets, nbytes, errors, samples, counter_samples, unknown = sums[:, a].tolist()
        c.packets += packets
        c.bytes += nbytes
        c.decode_errors += errors
        c.samples += samples
        c.counter_samples += counter_samples
        c.unknown_samples += unknown
        c.seq_gaps += int(gaps[a])
    return firsts


def _flow_samples(buf, s_dgram, s_body, s_len, fmt, agents, arrival_us, counters, wanted) -> np.ndarray:
    """One canonical record per flow sample (compact or expanded) that carries a raw header or IPv4/IPv6
    data; counts the samples' short or unknown records and the flows and frame bytes per agent."""
    expanded = fmt == EXPANDED_FLOW_SAMPLE
    flow_like = (fmt == FLOW_SAMPLE) | expanded
    flow = flow_like & (s_len >= 32 + 12 * expanded)           # the fixed part: 32 bytes, expanded 44
    for d in s_dgram[flow_like & ~flow].tolist():
        counters[bytes(agents[d])].decode_errors += 1
    idx = np.flatnonzero(flow)
    m = len(idx)
    if m == 0:
        return np.zeros(0, RECORD_DTYPE)
    body, blen, dgram = s_body[idx], s_len[idx], s_dgram[idx]
    exp = expanded[idx]
    any_expanded = bool(exp.any())
    fixed = gather_bytes(buf, body, 44 if any_expanded else 32)

    def field(compact_at: int, expanded_at: int) -> np.ndarray:   # expanded: source id, interfaces 8 bytes
        if not any_expanded:
            return column(fixed, compact_at, ">u4").astype(np.uint32)
        return np.where(exp, column(fixed, expanded_at, ">u4"), column(fixed, compact_at, ">u4")).astype(np.uint32)

    rows = FlowRows(m, wanted)
    rows.put("sampling_rate", None, field(8, 12))
    if rows.want("in_iface"):
        rows.put("in_iface", None, field(20, 28))
    if rows.want("out_iface"):
        rows.put("out_iface", None, field(24, 36))
    rows.put("peer_src_ip", None, agents[dgram])
    rows.put("ts_arrival", None, arrival_us[dgram])
    for name, value in (("packets", 1), ("flows", 1), ("export_proto_version", SFLOW_VERSION)):
        rows.put(name, None, value)
    rows.put("peer_dst_missing", None, 1, always=True)     # until an extended gateway record says otherwise
    nrec = field(28, 40).astype(np.int64)
    r_sample, r_body, r_type, r_len, broken = walk_items(buf, body + np.where(exp, 44, 32), body + blen, nrec)
    bad_records = np.zeros(m, np.int64)
    known = 0
    for rtype in PARSE_ORDER:
        sel = r_type == rtype
        count = int(np.count_nonzero(sel))
        if count == 0:
            continue
        known += count
        of_type = (r_sample, r_body, r_len) if count == len(sel) else (r_sample[sel], r_body[sel], r_len[sel])
        short = RECORD_PARSERS[rtype](rows, buf, *of_type)
        if short.any():                                  # counted on the agent of each broken record's sample
            np.add.at(bad_records, of_type[0][short], 1)
    unknown_per_sample = (np.bincount(r_sample[~np.isin(r_type, PARSE_ORDER)], minlength=m)
                          if known < len(r_type) else np.zeros(m, np.int64))
    per_agent_bad = broken.astype(np.int64) + bad_records
    for s in np.flatnonzero(per_agent_bad | unknown_per_sample).tolist():
        c = counters[bytes(agents[dgram[s]])]
        c.decode_errors += int(per_agent_bad[s])
        c.unknown_records += int(unknown_per_sample[s])
    keep = np.flatnonzero(rows.has_flow)
    out = rows.records()
    if len(keep) < m:                       # whole records, copied as opaque bytes (not field by field)
        out = out.view(np.dtype((np.void, RECORD_DTYPE.itemsize)))[keep].view(RECORD_DTYPE)
    d = dgram[keep]
    per_dgram = np.bincount(d, minlength=len(agents))
    frames = np.bincount(dgram, weights=rows.frame_length, minlength=len(agents))
    rows_seen = np.flatnonzero(per_dgram | (frames > 0))
    if len(rows_seen):                          # summed per agent: Python once per agent, not per datagram
        first, inverse = _groups(np.ascontiguousarray(agents[rows_seen]).view("<u8"))
        flows = np.bincount(inverse, weights=per_dgram[rows_seen], minlength=len(first))
        frame_bytes = np.bincount(inverse, weights=frames[rows_seen], minlength=len(first))
        for k in np.argsort(first).tolist():
            c = counters[bytes(agents[rows_seen[first[k]]])]
            c.flows += int(flows[k])
            c.frame_bytes += int(frame_bytes[k])
    return out


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of equal keys ((n, w) uint64): (first row of each group, group of each row); groups in key order."""
    n = len(keys)
    order = np.lexsort(keys.T[::-1])                        # stable: equal keys keep their row order
    ordered = keys[order]
    starts = np.ones(n, bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(n, np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return order[starts], inverse


def agent_text(agent16: bytes) -> str:
    import ipaddress
    if agent16[:12] == IPV4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(agent16[12:]))
    return str(ipaddress.IPv6Address(agent16))
