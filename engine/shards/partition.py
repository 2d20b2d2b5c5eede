"""Splitting a plugin's records among its workers (`plugin_workers: N`).

A plugin with N workers is N processes, each aggregating its own share of the keys: the shard sends every
record to the worker numbered by a hash of the record's key, so one key always reaches the same worker (from
every shard) and the workers' rows never overlap -- their purges together are the plugin's purge.

The hash reads only key columns that the plugin keeps as they are in the record: a key column computed in
the plugin (src_net / dst_net from host and mask, the time bin) or one its networks_file enrichment may
rewrite (masks, AS numbers, next hop; hosts with networks_file_filter) is left out, since records equal on
such a key may differ in the record.  Equal keys then always have equal hashed columns.  An aggregation
with no such column (only src_as, dst_as with nfacctd_as: file, say) sends everything to worker 0; the
supervisor logs that.

The hash is a multiply-add of the columns' 8-byte record words (bytes of other fields masked off) with a
final mix, computed the same way in every shard; the top bits pick the worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config.tree import Config, PluginConfig
from ..enrich.networks import settings_for
from ..plugins.aggregate import KeySpec
from ..schema import RECORD_DTYPE
from .fold_tables import RECORD_WORDS, _MULTS
from .preaggregate import FoldSpec, WordPlan

# record fields the plugin's networks enrichment (engine/enrich/networks.py) may rewrite
NETWORKS_WRITES = frozenset({"src_host", "dst_host", "src_mask", "dst_mask", "src_as", "dst_as",
                             "peer_src_as", "peer_dst_as", "peer_dst_ip", "peer_dst_missing"})
HASH_ROUND = 1          # fold_tables' multipliers of round 1 (the fold's dictionary uses round 0)
MIX = np.uint64(0xFF51AFD7ED558CCD)
ALL = 2 ** 64 - 1


@dataclass(frozen=True)
class PartitionSpec:
    """How a shard splits one plugin's records: the hashed record columns and the number of workers."""
    columns: tuple[str, ...]
    workers: int


def partition_columns(cfg: Config, plugin: PluginConfig) -> tuple[str, ...]:
    """Key columns of the plugin that reach its aggregation exactly as the record holds them."""
    spec = KeySpec.create(tuple(plugin.aggregate), False)
    columns = [n for n in spec.dtype.names if n in RECORD_DTYPE.names]
    if plugin.networks_file or settings_for(plugin, cfg.core).active:
        columns = [n for n in columns if n not in NETWORKS_WRITES]
    return tuple(columns)


def partition_specs(cfg: Config) -> list[Optional[PartitionSpec]]:
    """Per plugin: its PartitionSpec, or None when one process aggregates it."""
    return [PartitionSpec(partition_columns(cfg, p), p.workers) if p.workers > 1 else None for p in cfg.plugins]


class Partitioner:
    """worker_of(records) -> worker index per record; split(records) -> one array per worker."""

    def __init__(self, spec: PartitionSpec) -> None:
        plan = WordPlan.create(FoldSpec(spec.columns, or_flags=False))
        words = list(plan.words[:plan.key_rows])
        masks = [ALL if m is None else m for m in plan.masks]
        # whole words first, then the masked ones: the mask is one in-place op on the trailing columns only
        order = sorted(range(len(words)), key=lambda i: masks[i] != ALL)
        self.words = np.array([words[i] for i in order], dtype=np.intp)
        self.masks = np.array([masks[i] for i in order], dtype=np.uint64)
        self.first_masked = sum(m == ALL for m in masks)
        self.mults = _MULTS[HASH_ROUND][:len(self.words)]
        self.workers = spec.workers
        # 2**k workers: the top k bits; otherwise floor(top 32 bits * workers / 2**32)
        self.top_bits = spec.workers.bit_length() - 1 if spec.workers & (spec.workers - 1) == 0 else None

    def worker_of(self, records: np.ndarray) -> np.ndarray:
        n = len(records)
        words = np.ascontiguousarray(records).view(np.uint64).reshape(n, RECORD_WORDS)
        columns = words[:, self.words]                  # (n, key words): one gather
        if self.first_masked < len(self.words):
            columns[:, self.first_masked:] &= self.masks[self.first_masked:]
        columns *= self.mults
        h = columns.sum(axis=1, dtype=np.uint64)        # wraps mod 2**64
        h ^= h >> np.uint64(29)
        h *= MIX
        if self.top_bits is not None:                   # well-mixed top bits
            return h >> np.uint64(64 - self.top_bits) if self.top_bits else np.zeros(n, np.uint64)
        h >>= np.uint64(32)                             # 32 well-mixed bits
        h *= np.uint64(self.workers)
        return h >> np.uint64(32)                       # floor(bits * workers / 2**32): 0..workers-1

    def split(self, records: np.ndarray) -> list[np.ndarray]:
        """Per worker, the row numbers of its records (for Ring.write_rows: gathered straight into its ring)."""
        if len(records) == 0:
            return [np.zeros(0, dtype=np.intp)] * self.workers
        worker = self.worker_of(records)
        return [np.flatnonzero(worker == k) for k in range(self.workers)]


def partitioners_for(specs: Optional[list[Optional[PartitionSpec]]], plugins: int) -> list[Optional[Partitioner]]:
    specs = specs or [None] * plugins
    return [Partitioner(s) if s is not None else None for s in specs]
