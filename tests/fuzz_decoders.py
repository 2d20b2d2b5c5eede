"""Mutation fuzzer for every decoder: decode_batch (NetFlow v1/v5/v9/IPFIX) and decode_sflow_batch (sFlow v2/v4/v5).

    python tests/fuzz_decoders.py --cases 1000000 [--seed N] [--minutes M] [--out DIR]
    # what the README's 1M-case result ran (2 processes, one-by-one reference on every 8th batch):
    python tests/fuzz_decoders.py --cases 1000000 --workers 2 --batch 512 --bad-share 0.9 --reference-every 8

Seeds: every UDP payload of every capture in ../shared/captures (NetFlow pcaps → decode_batch, sFlow pcaps →
decode_sflow_batch), plus packets from tests/netflow_encoder.py and tests/sflow_encoder.py.  Each capture is a
"corpus": it is decoded once with its own synthetic exporter address, and the templates / sampling it teaches are
kept as bus messages (DecoderState.snapshot), so every fuzz batch starts from a state that knows them
(DecoderState.apply).  Only the public decoder API is used.

A batch mixes good packets (unchanged seeds) with mutated ones (a "case" is one mutated packet).  Oracles:
  exception     no exception escapes decode_batch / decode_sflow_batch
  time          every packet decoded alone takes < --max-packet-ms (re-timed 3× before it counts)
  packets       Σ counters.packets == packets fed, for the batch and for every packet alone
  records       the batch gives exactly the records (as a multiset) of its packets decoded one by one, in
                order, in a copy of the same state: a bad packet does not corrupt its neighbours
  counters      the batch's per-exporter counters == the sum of the one-by-one counters
  invalid       a constructed-invalid packet (truncated inside a header or a set/sample, lying length or count)
                decoded alone, in the state of its corpus, counts exactly one decode error
  memory        (memory_check) DecoderState sizes after many random template ids / domains / sub-agents
Deterministic: batch b of seed s uses numpy Generator([s, b]).  Failures are written to --out as JSON lines with
hex payloads, exporters, the corpora whose templates the state held, seed and batch (replay_case re-runs one).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from engine.decoders import DecoderState, decode_batch, decode_sflow_batch  # noqa: E402
from engine.decoders.batch import PacketBatch  # noqa: E402
from engine.pcap import iter_udp  # noqa: E402

CAPTURES = (HERE.parent.parent / "shared" / "captures").resolve()
ARRIVAL_US = 1_700_000_000_000_000
COUNTER_FIELDS = ("packets", "flows", "bytes", "seq_gaps", "no_template_sets", "pending_sets",
                  "pending_expired_sets", "decode_errors", "templates", "options_records", "samples", "frame_bytes",
                  "counter_samples", "unknown_samples", "unknown_records")
DECODE = {"netflow": decode_batch, "sflow": decode_sflow_batch}


# -- corpora ---------------------------------------------------------------------------------

@dataclass
class Corpus:
    """The packets of one capture (or one generator), decoded once to learn their templates."""
    name: str
    kind: str                      # "netflow" or "sflow"
    exporter: bytes                # synthetic, distinct per corpus (templates are keyed by exporter)
    packets: list[bytes]
    snapshot: list = field(default_factory=list)       # bus messages: templates / sampling it teaches
    clean: list[int] = field(default_factory=list)     # packets that decode alone with no decode error


def exporter_for(index: int) -> bytes:
    return b"\x00" * 10 + b"\xff\xff" + bytes([10, (index >> 16) & 255, (index >> 8) & 255, index & 255])


def _capture_corpora() -> list[tuple[str, str, list[bytes]]]:
    out = []
    if not CAPTURES.is_dir():
        return out
    for path in sorted(CAPTURES.rglob("*.pcap*")):
        kind = "sflow" if path.relative_to(CAPTURES).parts[0] == "sflow" else "netflow"
        try:
            payloads = [p.payload for p in iter_udp(str(path))]
        except Exception:                   # an unreadable capture is not a decoder finding
            continue
        payloads = [p for p in payloads if 0 < len(p) <= 65535]
        if payloads:
            out.append((str(path.relative_to(CAPTURES)), kind, payloads))
    return out


def _generated_corpora() -> list[tuple[str, str, list[bytes]]]:
    import netflow_encoder as ne
    import sflow_encoder as se
    v = ne.VARLEN
    flow = ne.Template(256, [ne.Field(8, 4), ne.Field(12, 4), ne.Field(7, 2), ne.Field(11, 2), ne.Field(4, 1),
                             ne.Field(1, 4), ne.Field(2, 4), ne.Field(48, 1), ne.Field(10, 2), ne.Field(14, 2)])
    flow6 = ne.Template(257, [ne.Field(27, 16), ne.Field(28, 16), ne.Field(1, 8), ne.Field(2, 8), ne.Field(152, 8),
                              ne.Field(153, 8)])
    varlen = ne.Template(258, [ne.Field(8, 4), ne.Field(12, 4), ne.Field(82, v), ne.Field(1, 4),
                               ne.Field(94, v), ne.Field(2, 4)])
    opts = ne.Template(300, [ne.Field(48, 1), ne.Field(34, 4), ne.Field(35, 1)], scope_count=1)
    opts_x = ne.Template(301, [ne.Field(144, 4), ne.Field(305, 4), ne.Field(306, 4)], scope_count=1)
    rng = np.random.default_rng(7)

    def rows(t, n):
        out = []
        for _ in range(n):
            r = []
            for f in t.fields:
                if f.length == v:
                    r.append(ne.Varlen(bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8)),
                                       long=bool(rng.integers(0, 2))))
                elif f.ie in (8, 12):
                    r.append(f"10.{rng.integers(256)}.{rng.integers(256)}.{rng.integers(256)}")
                elif f.ie in (152, 153):
                    r.append(1_700_000_000_000 + int(rng.integers(0, 10 ** 6)))
                else:
                    r.append(int(rng.integers(0, 1 << min(62, 8 * f.length))))
            out.append(r)
        return out

    corpora = []
    for version in (9, 10):
        ex = ne.Exporter(version=version, domain_id=3)
        tsets = [ne.template_set(version, [flow, flow6] + ([varlen] if version == 10 else [])),
                 ne.options_template_set(version, [opts, opts_x])]
        pkts = [ex.packet(tsets)]
        pkts.append(ex.packet([ne.data_set(opts, [[1, 100, 1], [2, 1000, 2]], pad_to=4),
                               ne.data_set(opts_x, [[7, 1, 99]], pad_to=4)], 3))
        for i in range(40):
            data = [ne.data_set(flow, rows(flow, 1 + i % 7), pad_to=4), ne.data_set(flow6, rows(flow6, 1 + i % 3))]
            if version == 10:
                data.append(ne.data_set(varlen, rows(varlen, 1 + i % 4)))
            pkts.append(ex.packet(data, 99))
        corpora.append((f"generated/v{version}", "netflow", pkts))
    v5 = [ne.v5_packet([ne.V5Record(src_addr=f"10.0.0.{i}", dst_addr="10.0.1.1", packets=i, octets=40 * i,
                                    first=1000, last=2000 + i, proto=6, src_port=i, dst_port=80)
                        for i in range(1 + k % 30)], unix_secs=1_700_000_000, sys_uptime_ms=5000, flow_sequence=k * 31,
                       sampling_interval=k % 3) for k in range(20)]
    v1 = [ne.v1_packet([ne.V5Record(src_addr="10.1.0.1", dst_addr="10.0.1.1", packets=1, octets=40)] * (1 + k % 5),
                       unix_secs=1_700_000_000) for k in range(5)]
    corpora.append(("generated/v5v1", "netflow", v5 + v1))
    sflow, _ = se.generated_traffic(40, seed=11)
    corpora.append(("generated/sflow5", "sflow", list(sflow)))
    corpora.append(("generated/sflow-legacy", "sflow", list(se.legacy_traffic(seed=5))))
    return corpora


def build_corpora(include_captures: bool = True) -> list[Corpus]:
    raw = (_capture_corpora() if include_captures else []) + _generated_corpora()
    corpora = []
    for i, (name, kind, packets) in enumerate(raw):
        c = Corpus(name, kind, exporter_for(i + 1), packets)
        state = DecoderState()
        for p in packets:                           # learn, one packet per batch, as a shard would
            DECODE[kind](PacketBatch.from_packets([(p, c.exporter, ARRIVAL_US)]), state)
        c.snapshot = state.snapshot()
        for j, p in enumerate(packets):             # again, every template known: which decode cleanly
            res = DECODE[kind](PacketBatch.from_packets([(p, c.exporter, ARRIVAL_US)]), state)
            if sum(x.decode_errors for x in res.counters.values()) == 0:
                c.clean.append(j)
        corpora.append(c)
    return corpora


# -- structure: where the length / count fields of a packet are ----------------------------

@dataclass
class Layout:
    """Offsets of a packet's structures: length/count fields (offset, width, role) and boundaries."""
    fields: list[tuple[int, int, str]] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)
    sets: list[tuple[int, int, int]] = field(default_factory=list)      # walked (offset, set id, length)
    header_len: int = 0
    walk_end: int = 0              # where the walk ended cleanly (-1: it did not)
    end: int = 0


def _u16(p: bytes, o: int) -> int:
    return (p[o] << 8) | p[o + 1]


def _u32(p: bytes, o: int) -> int:
    return struct.unpack_from(">I", p, o)[0]


def netflow_layout(p: bytes) -> Layout:
    lay = Layout(end=len(p), walk_end=-1)
    if len(p) < 4:
        return lay
    version = _u16(p, 0)
    if version in (1, 5):
        hlen = 24 if version == 5 else 16
        lay.header_len = hlen
        lay.fields.append((2, 2, "count"))
        lay.boundaries = [hlen + 48 * i for i in range(_u16(p, 2) + 1) if hlen + 48 * i <= len(p)]
        return lay
    if version not in (9, 10):
        return lay
    hlen = 20 if version == 9 else 16
    lay.header_len = hlen
    if len(p) < hlen:
        return lay
    lay.fields.append((2, 2, "count" if version == 9 else "msg_length"))
    end = len(p) if version == 9 else min(len(p), _u16(p, 2))
    lay.end = end
    sets_left = max(_u16(p, 2), 1) if version == 9 else -1
    pos = hlen
    lay.boundaries.append(pos)
    while end - pos >= 4 and sets_left != 0:
        sets_left -= 1
        sid, slen = _u16(p, pos), _u16(p, pos + 2)
        if slen < 4 or pos + slen > end:
            return lay
        lay.sets.append((pos, sid, slen))
        lay.fields.append((pos + 2, 2, "set_length"))
        lay.fields.append((pos, 2, "set_id"))
        if sid in (0, 1, 2, 3):
            _template_fields(p, version, sid, pos + 4, pos + slen, lay)
        pos += slen
        lay.boundaries.append(pos)
    lay.walk_end = pos
    return lay


def _template_fields(p: bytes, version: int, sid: int, pos: int, end: int, lay: Layout) -> None:
    options = sid in (1, 3)
    while end - pos >= 4:
        lay.boundaries.append(pos)
        if version == 9 and options:
            if end - pos < 6:
                return
            scope_len, opt_len = _u16(p, pos + 2), _u16(p, pos + 4)
            lay.fields += [(pos, 2, "template_id"), (pos + 2, 2, "scope_len"), (pos + 4, 2, "opt_len")]
            pos += 6
            n = (scope_len + opt_len) // 4
        else:
            n = _u16(p, pos + 2)
            lay.fields += [(pos, 2, "template_id"), (pos + 2, 2, "field_count")]
            pos += 4
            if options:
                lay.fields.append((pos, 2, "scope_count"))
                pos += 2
        if n == 0:
            return
        for _ in range(n):
            if end - pos < 4:
                return
            lay.fields.append((pos + 2, 2, "field_length"))
            pos += 8 if (version == 10 and p[pos] & 0x80) else 4


def sflow_layout(p: bytes) -> Layout:
    lay = Layout(end=len(p), walk_end=-1)
    if len(p) < 8 or _u32(p, 0) != 5:
        return lay
    atype = _u32(p, 4)
    alen = 4 if atype == 1 else 16 if atype == 2 else -1
    if alen < 0 or len(p) < 8 + alen + 16:
        return lay
    hlen = 8 + alen + 16
    lay.header_len = hlen
    lay.fields.append((hlen - 4, 4, "sample_count"))
    pos = hlen
    lay.boundaries.append(pos)
    n = _u32(p, hlen - 4)
    for _ in range(min(n, 4096)):
        if pos + 8 > len(p):
            return lay
        stype, slen = _u32(p, pos), _u32(p, pos + 4)
        if pos + 8 + slen > len(p):
            return lay
        lay.sets.append((pos, stype, slen + 8))
        lay.fields += [(pos + 4, 4, "sample_length"), (pos, 4, "sample_type")]
        body = pos + 8
        rec_at = {1: 28, 3: 40, 2: 8, 4: 12}.get(stype)
        if rec_at is not None and slen >= rec_at + 4:
            lay.fields.append((body + rec_at, 4, "record_count"))
            rpos, rend = body + rec_at + 4, body + slen
            for _ in range(min(_u32(p, body + rec_at), 4096)):
                if rpos + 8 > rend:
                    break
                rtype, rlen = _u32(p, rpos), _u32(p, rpos + 4)
                lay.fields.append((rpos + 4, 4, "record_length"))
                lay.boundaries.append(rpos)
                if rtype == 1 and stype in (1, 3) and rlen >= 16:
                    lay.fields.append((rpos + 8 + 12, 4, "header_length"))
                if rpos + 8 + rlen > rend:
                    break
                rpos += 8 + rlen
        pos = body + slen
        lay.boundaries.append(pos)
    lay.walk_end = pos
    return lay


LAYOUTS = {"netflow": netflow_layout, "sflow": sflow_layout}


# -- mutators ---------------------------------------------------------------------------------

def _put(p: bytearray, off: int, width: int, value: int) -> None:
    p[off:off + width] = (value % (1 << (8 * width))).to_bytes(width, "big")


def m_bitflip(rng, p: bytearray, kind, ctx) -> str:
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(p)))
        p[i] ^= 1 << int(rng.integers(8))
    return "bitflip"


def m_byteset(rng, p: bytearray, kind, ctx) -> str:
    for _ in range(int(rng.integers(1, 5))):
        p[int(rng.integers(len(p)))] = int(rng.choice([0, 255, int(rng.integers(256))]))
    return "byteset"


def m_truncate(rng, p: bytearray, kind, ctx) -> str:
    lay = LAYOUTS[kind](bytes(p))
    cuts = [b + d for b in lay.boundaries + [lay.header_len] for d in (-1, 0, 1, 2, 4)]
    cuts += [o + d for o, w, _ in lay.fields for d in (0, 1, w)]
    cuts = [c for c in cuts if 0 <= c < len(p)] or [int(rng.integers(len(p)))]
    cut = int(rng.choice(cuts)) if rng.random() < 0.8 else int(rng.integers(len(p)))
    del p[cut:]
    return "truncate"


def m_extend(rng, p: bytearray, kind, ctx) -> str:
    n = int(rng.choice([1, 3, 4, 8, 17, 64, 500]))
    junk = rng.choice(["zero", "ff", "random"])
    p += bytes(n) if junk == "zero" else b"\xff" * n if junk == "ff" else rng.integers(0, 256, n, np.uint8).tobytes()
    return "extend"


def m_length(rng, p: bytearray, kind, ctx) -> str:
    lay = LAYOUTS[kind](bytes(p))
    if not lay.fields:
        return m_byteset(rng, p, kind, ctx)
    off, width, role = lay.fields[int(rng.integers(len(lay.fields)))]
    old = int.from_bytes(p[off:off + width], "big")
    remaining = len(p) - off
    if width == 2:
        choices = [0, 1, 3, 4, remaining + 1, remaining + 4, 65535, old - 1, old + 1, old * 2, 0x7FFF, 0x8000,
                   int(rng.integers(65536))]
    else:
        choices = [0, 1, 3, 4, 5, remaining + 1, remaining + 8, 0xFFFFFFFF, 0x80000000, old - 1, old + 1, old + 2,
                   4097, 1 << 20, int(rng.integers(1 << 32))]
    _put(p, off, width, int(rng.choice(choices)))
    return f"length:{role}"


def m_template_id(rng, p: bytearray, kind, ctx) -> str:
    """Data set re-labelled with another template id of the corpus (options ↔ data collisions), or a template
    re-announced under a data template's id."""
    lay = LAYOUTS[kind](bytes(p))
    ids = ctx.get("template_ids") or [256]
    targets = [(o, w) for o, w, r in lay.fields if r in ("set_id", "template_id")]
    if not targets:
        return m_bitflip(rng, p, kind, ctx)
    off, width = targets[int(rng.integers(len(targets)))]
    if int.from_bytes(p[off:off + width], "big") in (0, 1, 2, 3) and rng.random() < 0.7:
        return m_bitflip(rng, p, kind, ctx)            # keep set ids of template sets mostly
    _put(p, off, width, int(rng.choice(ids)))
    return "template_id"


def m_varlen(rng, p: bytearray, kind, ctx) -> str:
    """In an IPFIX data set: a byte made 255 followed by a lying 2-byte length (or a huge 1-byte length)."""
    lay = netflow_layout(bytes(p))
    data = [(o, s, ln) for o, s, ln in lay.sets if s >= 256 and ln > 6]
    if not data:
        return m_byteset(rng, p, kind, ctx)
    o, _, ln = data[int(rng.integers(len(data)))]
    at = o + 4 + int(rng.integers(ln - 4))
    p[at] = 255
    if at + 2 < len(p):
        _put(p, at + 1, 2, int(rng.choice([0, 1, 255, 65535, ln, len(p) - at])))
    return "varlen"


def m_splice(rng, p: bytearray, kind, ctx) -> str:
    other = ctx["other"]
    a = int(rng.integers(len(p) + 1))
    b = int(rng.integers(len(other) + 1))
    p[a:] = other[b:]
    return "splice"


MUTATORS: list[tuple[Callable, float]] = [(m_bitflip, 3), (m_byteset, 3), (m_truncate, 2), (m_extend, 1),
                                          (m_length, 4), (m_template_id, 1.5), (m_varlen, 1), (m_splice, 0.5)]
_WEIGHTS = np.array([w for _, w in MUTATORS]) / sum(w for _, w in MUTATORS)


def random_with_version(rng, kind: str) -> tuple[bytes, str]:
    n = int(rng.choice([2, 4, 8, 16, 20, 24, 28, 40, 72, 120, 300, 1400]))
    body = bytearray(rng.integers(0, 256, n, np.uint8).tobytes())
    if kind == "netflow":
        v = int(rng.choice([1, 5, 9, 10]))
        body[0:2] = v.to_bytes(2, "big")
        if v == 10 and n >= 4 and rng.random() < 0.7:
            _put(body, 2, 2, n)
        if v in (1, 5, 9) and n >= 4 and rng.random() < 0.5:
            _put(body, 2, 2, int(rng.integers(0, 40)))
    else:
        v = int(rng.choice([2, 4, 5, 5]))
        body[0:4] = v.to_bytes(4, "big")
        if n >= 8:
            body[4:8] = int(rng.choice([1, 2])).to_bytes(4, "big")
    return bytes(body[:n]), f"random:v{v}"


def mutate(rng, corpus: Corpus, other: bytes) -> tuple[bytes, str]:
    if rng.random() < 0.05:
        return random_with_version(rng, corpus.kind)
    p = bytearray(corpus.packets[int(rng.integers(len(corpus.packets)))])
    ctx = {"other": other, "template_ids": _template_ids(corpus)}
    names = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        if not p:
            break
        mutator = MUTATORS[int(rng.choice(len(MUTATORS), p=_WEIGHTS))][0]
        names.append(mutator(rng, p, corpus.kind, ctx))
    return bytes(p), "+".join(names)


_TEMPLATE_IDS: dict[str, list[int]] = {}


def _template_ids(corpus: Corpus) -> list[int]:
    ids = _TEMPLATE_IDS.get(corpus.name)
    if ids is None:
        from engine.decoders.messages import parse_key
        ids = sorted({parse_key(m.key)[3] for m in corpus.snapshot} | {256}) if corpus.kind == "netflow" else [1]
        _TEMPLATE_IDS[corpus.name] = ids
    return ids


# -- constructed-invalid packets: exactly one decode error each ------------------------------

def make_invalid(rng, corpus: Corpus) -> Optional[tuple[bytes, str]]:
    """A clean packet of the corpus made invalid in one way that must count exactly one decode error."""
    if not corpus.clean:
        return None
    p = bytearray(corpus.packets[corpus.clean[int(rng.integers(len(corpus.clean)))]])
    lay = LAYOUTS[corpus.kind](bytes(p))
    options = ["trunc_header"]
    if corpus.kind == "sflow" and not lay.header_len:
        pass                                        # v2 / v4: no length fields to lie about
    elif lay.sets:
        options += ["trunc_in_set", "set_length_past_end"]
    if corpus.kind == "netflow":
        if lay.sets and lay.fields:
            options.append("set_length_below_4")
        v = _u16(p, 0)
        if v == 10:
            options.append("ipfix_length_past_end")
        if v in (1, 5) and lay.boundaries and len(lay.boundaries) > 1:
            options.append("v5_count_past_end")
    elif lay.header_len:
        options.append("sample_count_huge")
        if lay.walk_end == len(p):
            options.append("sample_count_plus_one")
    how = str(rng.choice(options))
    if how == "trunc_header":
        del p[int(rng.integers(0, max(1, lay.header_len or 4))):]
    elif how == "trunc_in_set":
        o, sid, ln = lay.sets[int(rng.integers(len(lay.sets)))]
        first = 4 if corpus.kind == "netflow" else 8
        if ln <= first:
            return None
        del p[o + int(rng.integers(first, ln)):]
    elif how == "set_length_past_end":
        o, sid, ln = lay.sets[int(rng.integers(len(lay.sets)))]
        if corpus.kind == "netflow":
            _put(p, o + 2, 2, int(rng.integers(lay.end - o + 1, 65536)))
        else:
            _put(p, o + 4, 4, int(rng.choice([len(p) - o - 8 + 1, len(p), 0xFFFFFFFF, 0x7FFFFFFC])))
    elif how == "set_length_below_4":
        o, sid, ln = lay.sets[int(rng.integers(len(lay.sets)))]
        _put(p, o + 2, 2, int(rng.integers(1, 4)))
    elif how == "ipfix_length_past_end":
        _put(p, 2, 2, int(rng.integers(len(p) + 1, 65536)) if len(p) < 65535 else int(rng.integers(0, 16)))
    elif how == "v5_count_past_end":
        hlen = lay.header_len
        _put(p, 2, 2, (len(p) - hlen) // 48 + int(rng.integers(1, 100)))
    elif how == "sample_count_huge":
        _put(p, lay.header_len - 4, 4, int(rng.choice([4097, 0x7FFFFFFF, 0xFFFFFFFF])))
    elif how == "sample_count_plus_one":
        _put(p, lay.header_len - 4, 4, len(lay.sets) + 1)
    return bytes(p), f"invalid:{how}"


# -- running batches ------------------------------------------------------------------------

@dataclass
class Failure:
    oracle: str
    detail: str
    seed: int
    batch: int
    kind: str
    corpora: list[str]
    packets: list[tuple[str, str, str]]      # (hex payload, hex exporter, what it is)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


@dataclass
class Report:
    cases: int = 0
    packets: int = 0
    batches: int = 0
    failures: dict = field(default_factory=dict)          # oracle → count
    examples: list = field(default_factory=list)          # Failure (first few per oracle)
    max_packet_ms: float = 0.0
    max_packet_what: str = ""
    max_batch_packet_ms: float = 0.0                      # batch time / packets in it
    invalid_checked: int = 0
    seconds: float = 0.0

    def fail(self, f: Failure, keep: int = 5) -> None:
        self.failures[f.oracle] = self.failures.get(f.oracle, 0) + 1
        if sum(1 for e in self.examples if e.oracle == f.oracle) < keep:
            self.examples.append(f)


def fresh_state(corpora: list[Corpus]) -> DecoderState:
    s = DecoderState()
    for c in corpora:
        s.apply(c.snapshot)
    return s


def _sum_counters(counter_dicts) -> dict[bytes, tuple]:
    total: dict[bytes, list] = {}
    for d in counter_dicts:
        for exp, c in d.items():
            row = total.setdefault(exp, [0] * len(COUNTER_FIELDS))
            for i, f in enumerate(COUNTER_FIELDS):
                row[i] += getattr(c, f)
    return {k: tuple(v) for k, v in total.items() if any(v)}


def _record_multiset(parts) -> list[bytes]:
    """Records as sorted byte strings of their named fields only (padding bytes between fields may be anything)."""
    rows = []
    for r in parts:
        if len(r):
            packed = np.zeros(len(r), dtype=[(n, r.dtype.fields[n][0]) for n in r.dtype.names])
            for n in r.dtype.names:
                packed[n] = r[n]
            rows.extend(bytes(x) for x in packed.view(np.uint8).reshape(len(r), -1))
    return sorted(rows)


TAIL = bytes([0xA5]) * 64


def alone(payload: bytes, exporter: bytes, arrival_us: int) -> PacketBatch:
    """A batch of one packet whose buffer runs on past it (as a shard's receive buffer does)."""
    b = PacketBatch.from_packets([(payload + TAIL, exporter, arrival_us)])
    b.lengths[0] = len(payload)
    return b


def _timed(decode, batch, state):
    t = time.perf_counter()
    res = decode(batch, state)
    return res, time.perf_counter() - t


def run_batch(corpora_all: list[Corpus], seed: int, index: int, kind: str, batch_size: int = 256,
              bad_share: float = 0.5, max_packet_ms: float = 50.0, report: Optional[Report] = None,
              reference: bool = True) -> Report:
    """Build batch `index` of `seed` for one decoder kind and check every oracle on it.

    reference=False (long runs, to go faster): no one-by-one reference, so no records / counters oracle and
    per-packet time only as the batch's time / its packets; invalid packets checked together per corpus."""
    import copy
    report = report or Report()
    rng = np.random.default_rng([seed, index, 0 if kind == "netflow" else 1])
    pool = [c for c in corpora_all if c.kind == kind]
    chosen = [pool[int(i)] for i in rng.choice(len(pool), size=min(4, len(pool)), replace=False)]
    packets: list[tuple[bytes, bytes, str]] = []
    invalid: list[tuple[bytes, Corpus, str]] = []
    for _ in range(batch_size):
        c = chosen[int(rng.integers(len(chosen)))]
        r = rng.random()
        if r < bad_share * 0.8:
            other = chosen[int(rng.integers(len(chosen)))]
            p, what = mutate(rng, c, other.packets[int(rng.integers(len(other.packets)))])
            report.cases += 1
        elif r < bad_share:
            made = make_invalid(rng, c)
            if made is None:
                continue
            p, what = made
            invalid.append((p, c, what))
            report.cases += 1
        else:
            p, what = c.packets[int(rng.integers(len(c.packets)))], "good"
        packets.append((p, c.exporter, what))
    names = [c.name for c in chosen]

    def failure(oracle: str, detail: str, pkts=None) -> None:
        pkts = packets if pkts is None else pkts
        report.fail(Failure(oracle, detail, seed, index, kind, names,
                            [(p.hex(), e.hex(), w) for p, e, w in pkts]))

    decode = DECODE[kind]
    state = fresh_state(chosen)
    ref_state = copy.deepcopy(state)
    batch = PacketBatch.from_packets([(p, e, ARRIVAL_US + i) for i, (p, e, _) in enumerate(packets)])
    report.packets += len(packets)
    report.batches += 1
    t_batch = time.perf_counter()
    try:
        res = decode(batch, state)
        per_packet_ms = (time.perf_counter() - t_batch) * 1000 / max(1, len(packets))
        report.max_batch_packet_ms = max(report.max_batch_packet_ms, per_packet_ms)
    except Exception as exc:                          # (a)
        failure("exception", f"batch: {type(exc).__name__}: {exc}")
        res = None
    singles, single_counters = [], []
    # the one-by-one reference: every packet alone, in order, in a copy of the state the batch started from
    for i, (p, e, what) in enumerate(packets if reference else []):
        one = alone(p, e, ARRIVAL_US + i)
        try:
            r1, dt = _timed(decode, one, ref_state)
        except Exception as exc:
            failure("exception", f"packet {i} ({what}) alone: {type(exc).__name__}: {exc}", [(p, e, what)])
            if res is not None:
                failure("exception", "batch held a packet that raises alone: records / counters not compared")
                res = None
            continue
        ms = dt * 1000
        if ms > max_packet_ms:                        # (b) re-time in a copy before it counts
            ms = min(ms, *(_timed(decode, one, copy.deepcopy(ref_state))[1] * 1000 for _ in range(3)))
            if ms > max_packet_ms:
                failure("time", f"packet {i} ({what}): {ms:.1f} ms", [(p, e, what)])
        if ms > report.max_packet_ms:
            report.max_packet_ms, report.max_packet_what = ms, what
        n1 = sum(c.packets for c in r1.counters.values())
        if n1 != 1:                                   # (c) alone
            failure("packets", f"packet {i} ({what}) alone counted {n1} packets", [(p, e, what)])
        singles.append(r1.records)
        single_counters.append(r1.counters)
    if res is None:
        return report
    n = sum(c.packets for c in res.counters.values())
    if n != len(packets):                              # (c)
        failure("packets", f"batch of {len(packets)} packets counted {n}")
    if not reference:
        _invalid_together(decode, invalid, report, failure)
        return report
    if _record_multiset([res.records]) != _record_multiset(singles):        # (d)
        failure("records", f"batch gave {len(res.records)} records, one by one {sum(len(s) for s in singles)}")
    got, want = _sum_counters([res.counters]), _sum_counters(single_counters)
    if got != want:
        diff = {exp.hex(): {f: (a, b) for f, a, b in zip(COUNTER_FIELDS, got.get(exp, (0,) * 15),
                                                        want.get(exp, (0,) * 15)) if a != b}
                for exp in set(got) | set(want) if got.get(exp) != want.get(exp)}
        failure("counters", f"batch vs one by one: {diff}")
    corpus_states: dict[str, DecoderState] = {}
    for p, c, what in invalid:                         # (e) alone, in the state of its corpus
        s = corpus_states.get(c.name) or corpus_states.setdefault(c.name, fresh_state([c]))
        try:
            r = decode(alone(p, c.exporter, ARRIVAL_US), s)
        except Exception:
            continue                                  # reported above as "exception"
        errors = sum(x.decode_errors for x in r.counters.values())
        report.invalid_checked += 1
        if errors != 1:
            failure("invalid", f"{what} in {c.name}: {errors} decode errors, expected 1", [(p, c.exporter, what)])
    return report


def _invalid_together(decode, invalid, report: Report, failure) -> None:
    """(e) for long runs: the invalid packets of each corpus as one batch, Σ decode errors == their number."""
    by_corpus: dict[str, list] = {}
    for p, c, what in invalid:
        by_corpus.setdefault(c.name, []).append((p, c, what))
    for items in by_corpus.values():
        c = items[0][1]
        try:
            r = decode(PacketBatch.from_packets([(p, c.exporter, ARRIVAL_US) for p, _, _ in items]), fresh_state([c]))
        except Exception as exc:
            failure("exception", f"invalid packets of {c.name}: {type(exc).__name__}: {exc}",
                    [(p, c.exporter, w) for p, _, w in items])
            continue
        errors = sum(x.decode_errors for x in r.counters.values())
        report.invalid_checked += len(items)
        if errors != len(items):
            failure("invalid", f"{len(items)} invalid packets of {c.name} together: {errors} decode errors",
                    [(p, c.exporter, w) for p, _, w in items])


def run(corpora: list[Corpus], cases: int, seed: int = 1, minutes: float = 0.0, batch_size: int = 256,
        max_packet_ms: float = 50.0, bad_share: float = 0.5, worker: int = 0, workers: int = 1,
        reference_every: int = 1, progress: Optional[Callable[[Report], None]] = None) -> Report:
    """Alternate NetFlow and sFlow batches until `cases` mutated packets were fed (or `minutes` ran out).

    Worker w of W runs batch indexes w, w + W, ... (so W workers together cover what one would)."""
    report = Report()
    t0 = time.perf_counter()
    index = worker
    kinds = [k for k in ("netflow", "sflow") if any(c.kind == k for c in corpora)]
    while report.cases < cases:
        kind = kinds[index % len(kinds)]
        run_batch(corpora, seed, index, kind, batch_size, bad_share, max_packet_ms, report,
                  reference=(index // len(kinds)) % reference_every == 0)
        index += workers
        report.seconds = time.perf_counter() - t0
        if progress and report.batches % 50 == 0:
            progress(report)
        if minutes and report.seconds > minutes * 60:
            break
    report.seconds = time.perf_counter() - t0
    return report


_FORKED: dict = {}


def _worker(args) -> Report:
    w, workers, cases, seed, minutes, batch_size, max_packet_ms, bad_share, reference_every = args
    progress = (lambda r: print(f"  [worker {w}] {r.cases} cases, {r.seconds:.0f} s, failures {r.failures}",
                                flush=True))
    return run(_FORKED["corpora"], cases, seed, minutes, batch_size, max_packet_ms, bad_share, w, workers,
               reference_every, progress)


def run_parallel(corpora: list[Corpus], cases: int, workers: int, seed: int = 1, minutes: float = 0.0,
                 batch_size: int = 256, max_packet_ms: float = 50.0, bad_share: float = 0.5,
                 reference_every: int = 1) -> Report:
    """run() split over `workers` forked processes; their reports merged."""
    import multiprocessing as mp
    _FORKED["corpora"] = corpora
    t0 = time.perf_counter()
    share = -(-cases // workers)
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_worker, [(w, workers, share, seed, minutes, batch_size, max_packet_ms, bad_share,
                                    reference_every) for w in range(workers)])
    total = Report()
    for r in parts:
        for name in ("cases", "packets", "batches", "invalid_checked"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        for oracle, n in r.failures.items():
            total.failures[oracle] = total.failures.get(oracle, 0) + n
        total.examples += [e for e in r.examples if sum(x.oracle == e.oracle for x in total.examples) < 5]
        total.max_batch_packet_ms = max(total.max_batch_packet_ms, r.max_batch_packet_ms)
        if r.max_packet_ms > total.max_packet_ms:
            total.max_packet_ms, total.max_packet_what = r.max_packet_ms, r.max_packet_what
    total.seconds = time.perf_counter() - t0
    return total


# -- (f) memory ---------------------------------------------------------------------------------

def memory_check(n_ids: int, seed: int = 1) -> dict[str, int]:
    """Feed n_ids random (domain, template id) templates, empty data sets of unknown templates, and sFlow
    datagrams with random sub-agents; return the DecoderState sizes afterwards."""
    import netflow_encoder as ne
    rng = np.random.default_rng(seed)
    state = DecoderState()
    exporter = exporter_for(0xFFFFFF)
    per_packet = 4000                                  # 4000 × 8 bytes of template records per packet
    fed = 0
    while fed < n_ids:
        k = min(per_packet, n_ids - fed)
        ids = rng.integers(256, 65536, k)
        body = b"".join(struct.pack(">HHHH", int(t), 1, 1, 4) for t in ids)
        domain = int(rng.integers(1 << 32))
        empty_sets = b"".join(struct.pack(">HH", int(t), 4) for t in rng.integers(256, 65536, 64))
        pkt = ne.ipfix_message([struct.pack(">HH", 2, 4 + len(body)) + body, empty_sets], domain_id=domain)
        decode_batch(PacketBatch.from_packets([(pkt, exporter, ARRIVAL_US)]), state)
        fed += k
    import sflow_encoder as se
    dgrams = [se.datagram("192.0.2.77", 1, [], sub_agent=int(s)) for s in rng.integers(0, 1 << 32, 2000)]
    decode_sflow_batch(PacketBatch.from_packets([(d, exporter, ARRIVAL_US) for d in dgrams]), state)
    return {"templates_fed": n_ids, "templates": len(state.templates), "pending_sets": len(state.pending),
            "pending_bytes": state.pending_bytes, "sequences": len(state.sequences),
            "sampling_exporters": len(state.sampling)}


# -- replay and command line ----------------------------------------------------------------------

def replay_case(line: str, corpora: list[Corpus]) -> object:
    """Re-run the packets of one failure line (JSON) in a state holding its corpora's templates."""
    f = json.loads(line)
    chosen = [c for c in corpora if c.name in f["corpora"]]
    state = fresh_state(chosen)
    batch = PacketBatch.from_packets([(bytes.fromhex(p), bytes.fromhex(e), ARRIVAL_US + i)
                                      for i, (p, e, _) in enumerate(f["packets"])])
    return DECODE[f["kind"]](batch, state)


def write_failures(report: Report, out: Path, seed: int) -> Optional[Path]:
    if not report.examples:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fuzz-failures-seed{seed}.jsonl"
    with open(path, "w") as fh:
        for f in report.examples:
            fh.write(f.to_json() + "\n")
    return path


def summary(report: Report) -> str:
    rate = report.cases / report.seconds if report.seconds else 0.0
    lines = [f"cases (mutated packets): {report.cases}", f"packets fed (with good ones): {report.packets}",
             f"batches: {report.batches}", f"constructed-invalid packets checked: {report.invalid_checked}",
             f"max per-packet time (decoded alone): {report.max_packet_ms:.2f} ms ({report.max_packet_what})",
             f"max batch time / packets in it: {report.max_batch_packet_ms:.3f} ms",
             f"elapsed: {report.seconds:.1f} s, {rate:.0f} cases/s"]
    for oracle in ("exception", "time", "packets", "records", "counters", "invalid"):
        lines.append(f"  {oracle:10s} failures: {report.failures.get(oracle, 0)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=0.0, help="stop after this long (0: no limit)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-packet-ms", type=float, default=50.0)
    ap.add_argument("--bad-share", type=float, default=0.5, help="share of mutated packets in a batch")
    ap.add_argument("--reference-every", type=int, default=1,
                    help="one-by-one reference (records / counters / per-packet time) on every Nth batch only")
    ap.add_argument("--workers", type=int, default=1, help="forked processes (batches split between them)")
    ap.add_argument("--memory-ids", type=int, default=1_000_000, help="random template ids for the memory check")
    ap.add_argument("--out", default=os.environ.get("TMPDIR", "/tmp") + "/pmengine-fuzz")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    corpora = build_corpora()
    print(f"corpora: {len(corpora)} ({sum(len(c.packets) for c in corpora)} seed packets), "
          f"built in {time.perf_counter() - t:.1f} s", flush=True)
    if args.workers > 1:
        report = run_parallel(corpora, args.cases, args.workers, args.seed, args.minutes, args.batch,
                              args.max_packet_ms, args.bad_share, args.reference_every)
    else:
        report = run(corpora, args.cases, args.seed, args.minutes, args.batch, args.max_packet_ms, args.bad_share,
                     reference_every=args.reference_every,
                     progress=lambda r: print(f"  ... {r.cases} cases, {r.seconds:.0f} s, failures {r.failures}",
                                              flush=True))
    print(summary(report))
    path = write_failures(report, Path(args.out), args.seed)
    if path:
        print(f"reproducers: {path}")
    if args.memory_ids:
        t = time.perf_counter()
        print(f"memory: {memory_check(args.memory_ids, args.seed)} ({time.perf_counter() - t:.0f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
