"""Enrichment and tagging between decoding and aggregation, as pmacct places it.

Two stages, each built once per process from the typed configuration:

- ShardStage (in every shard): what pmacct's core process does before the plugins see a flow —
  `nfacctd_allow_file` / `sfacctd_allow_file` (admit: packets from unlisted exporters are dropped
  before decoding and counted) and `pre_tag_map` (tag, tag2, label set on the records).
- PluginStage (in every plugin process): what pmacct does per plugin — `networks_file` with
  `nfacctd_net` / `nfacctd_as` (src/dst net, mask, AS, peer_dst_as, peer_dst_ip by longest prefix),
  `pre_tag_filter` / `pre_tag2_filter` / `pre_tag_label_filter` and `aggregate_filter`.

Every step works on whole batches with numpy.  reload() re-reads the maps (maps_refresh, SIGUSR2);
a map that fails to load is logged and the old one kept.
"""
from __future__ import annotations

import logging

import numpy as np

from ..config.tree import CoreConfig, Listener, PluginConfig
from ..decoders.batch import PacketBatch
from .allow import AllowStage
from .networks import NetworksStage
from .plugin_filters import PluginFilters
from .pretag import PretagStage


class ShardStage:
    """Core-level enrichment of one shard."""

    def __init__(self, core: CoreConfig, listener: Listener, log: logging.Logger) -> None:
        self.core = core
        self.listener = listener
        self.log = log
        self.counters: dict[str, int] = {}
        self.allow = AllowStage(core.sflow_allow_file if listener.protocol == "sflow" else core.allow_file,
                                log, self.counters)
        self.pretag = PretagStage(core.pre_tag_map, core.maps_refresh, log, self.counters)

    def admit(self, batch: PacketBatch) -> PacketBatch:
        """The packets of exporters the allow file lists (all of them without an allow file)."""
        return self.allow.admit(batch)

    def apply(self, records: np.ndarray) -> np.ndarray:
        """Records after core-level tagging (pre_tag_map)."""
        return self.pretag.apply(records)

    def reload(self) -> None:
        """Re-read the maps; keep the old ones when a new one is bad."""
        self.allow.reload()
        self.pretag.reload()


class PluginStage:
    """Plugin-level enrichment and filtering of one plugin."""

    def __init__(self, plugin: PluginConfig, core: CoreConfig, log: logging.Logger) -> None:
        self.plugin = plugin
        self.core = core
        self.log = log
        self.counters: dict[str, int] = {}
        self.networks = NetworksStage(plugin, core, log, self.counters)
        self.filters = PluginFilters.from_plugin(plugin)

    def apply(self, records: np.ndarray) -> np.ndarray:
        """Records this plugin aggregates, with networks/AS fields filled as configured."""
        records = self.networks.apply(records)          # networks first, then the filters
        return self.filters.apply(records, self.counters)

    def reload(self) -> None:
        """Re-read the maps; keep the old ones when a new one is bad."""
        self.networks.reload()
