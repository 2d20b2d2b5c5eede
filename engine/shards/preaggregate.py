"""Pre-aggregation in the shard: before a batch goes into a plugin's ring, records that plugin cannot tell apart
are folded into one (counters summed, tcp flags OR-ed).

A plugin reads from a record only its aggregation key (the key columns of aggregate.KeySpec, the host/mask/family
of src_net/dst_net, the flow's second when it bins by time) and the counters packets, bytes, flows, tcp_flags
(memory and tcpflags OR it, never a key).  Two records equal on those key columns are the same to it, so folding
them first changes nothing it writes -- and a low-cardinality plugin (a traffic matrix: a few hundred keys per
batch of ~10k flows) then receives a few hundred records instead of ~10k: one ring copy and one aggregation per
key instead of per flow.  High-cardinality batches barely shrink; the folder notices and stops trying for a while.

Folding is off for a plugin whenever the configuration has a consumer whose reads we do not list
(fields_needed.needed_fields() is None: filters, maps, networks, tags), like the field projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config.fields_needed import needed_fields
from ..config.tree import Config, PluginConfig
from ..plugins.aggregate import KeySpec, _item_type, copy_runs, flow_seconds, group
from ..plugins.timebins import TimeBins
from ..schema import PRIMITIVES, RECORD_DTYPE

SECOND = "_flow_second"
SUMMED = ("packets", "bytes", "flows")
WORTH_IT = 0.5          # fold while a batch shrinks to at most this share of its records
JUDGE_FROM = 1024       # smaller batches are written as they are, and say nothing about the next ones
SKIP_BATCHES = 32       # batches written as they are after one that did not shrink enough, before trying again


@dataclass(frozen=True)
class FoldSpec:
    """What tells one plugin's records apart: record columns, and the flow's second (time bins) or not."""
    columns: tuple[str, ...]
    flow_second: bool = False
    use_arrival: bool = False       # nfacctd_time_new: bins by arrival


def fold_spec(cfg: Config, plugin: PluginConfig) -> Optional[FoldSpec]:
    """The FoldSpec of a plugin, or None when its records must travel as they are."""
    if needed_fields(cfg) is None:
        return None
    history = plugin.type != "memory" and TimeBins.create(plugin.history, plugin.history_secs,
                                                          plugin.history_roundoff, 0.0).enabled
    spec = KeySpec.create(tuple(plugin.aggregate), history)
    columns = [n for n in spec.dtype.names if n in RECORD_DTYPE.names]
    for name in spec.derived:
        prim = PRIMITIVES.get(name)
        if prim is not None and prim.derived == "net":
            columns += [*prim.columns[:2], "family"]
    return FoldSpec(tuple(dict.fromkeys(columns)), history, bool(cfg.core.time_new))


def fold_specs(cfg: Config) -> list[Optional[FoldSpec]]:
    return [fold_spec(cfg, p) for p in cfg.plugins]


def _key_dtype(spec: FoldSpec) -> np.dtype:
    """The key columns packed in record order (record neighbours stay neighbours: one copy per run), then the
    flow's second, padded to whole 8-byte words."""
    names = sorted(spec.columns, key=lambda n: RECORD_DTYPE.fields[n][1])
    fields = [(n, RECORD_DTYPE.fields[n][0]) for n in names]
    if spec.flow_second:
        fields.append((SECOND, np.dtype("i8")))
    width = sum(f[1].itemsize for f in fields)
    if width % 8 or not width:
        fields.append(("_pad", np.dtype((np.uint8, 8 - width % 8 if width % 8 else 8))))
    return np.dtype(fields)


def _counter_words() -> Optional[int]:
    """Word index of packets/bytes/flows when the record holds them as three adjacent aligned uint64 (then one
    gather and one reduceat fold all three), else None."""
    offs = sorted(RECORD_DTYPE.fields[n][1] for n in SUMMED)
    if RECORD_DTYPE.itemsize % 8 or offs[0] % 8 or offs != [offs[0], offs[0] + 8, offs[0] + 16]:
        return None
    return offs[0] // 8


COUNTER_WORD = _counter_words()
RECORD_WORDS = RECORD_DTYPE.itemsize // 8


class PreAggregator:
    """fold(records) -> records: the batch with indistinguishable records folded, or as it was."""

    def __init__(self, spec: FoldSpec) -> None:
        self.spec = spec
        self.dtype = _key_dtype(spec)
        self.runs = [(koff, roff, size, _item_type(koff, roff, size)) for koff, roff, size in copy_runs(self.dtype)]
        self.skip = 0

    def keys(self, records: np.ndarray) -> np.ndarray:
        n = len(records)
        keys = np.zeros(n, dtype=self.dtype)
        dst = keys.view(np.uint8).reshape(n, self.dtype.itemsize)
        src = np.ascontiguousarray(records).view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
        for koff, roff, size, item in self.runs:
            dst[:, koff:koff + size].view(item)[:, 0] = src[:, roff:roff + size].view(item)[:, 0]
        if self.spec.flow_second:
            keys[SECOND] = flow_seconds(records, self.spec.use_arrival)
        return keys

    def fold(self, records: np.ndarray) -> np.ndarray:
        n = len(records)
        if n < JUDGE_FROM:
            return records
        if self.skip:
            self.skip -= 1
            return records
        records = np.ascontiguousarray(records)
        order, starts, _ = group(self.keys(records))
        if len(starts) > WORTH_IT * n:
            self.skip = SKIP_BATCHES
            return records
        out = records.take(order.take(starts))
        if COUNTER_WORD is not None:
            words = records.view(np.uint64).reshape(n, RECORD_WORDS)[:, COUNTER_WORD:COUNTER_WORD + 3]
            sums = np.add.reduceat(words.take(order, axis=0), starts, axis=0)
            out.view(np.uint64).reshape(len(out), RECORD_WORDS)[:, COUNTER_WORD:COUNTER_WORD + 3] = sums
        else:
            for name in SUMMED:
                out[name] = np.add.reduceat(records[name].take(order), starts)
        out["tcp_flags"] = np.bitwise_or.reduceat(records["tcp_flags"].take(order), starts)
        return out


def folders_for(specs: Optional[list[Optional[FoldSpec]]], rings: int) -> list[Optional[PreAggregator]]:
    specs = specs or [None] * rings
    return [PreAggregator(s) if s is not None else None for s in specs]

