"""Field projection: which RECORD_DTYPE fields a configuration's consumers read.

Shards give the answer to the decoders (DecoderState.wanted), which then leave
the other fields zero and skip their conversion.  None means "fill every
field": whenever a configuration has a consumer whose reads we do not list
here (maps, filters, network enrichment, plugin types we do not know), we
answer None rather than guess.
"""
from __future__ import annotations

from typing import Optional

from ..schema import PRIMITIVES
from .tree import Config

# Read whatever the aggregation: counters, time binning
# (start, else arrival), family / etype (address rendering, net derivation), the exporter (print file
# names, allow files, sampling maps), sampling and renormalisation, the export version, what the
# peer_dst_ip rendering needs.
ALWAYS = frozenset({
    "bytes", "packets", "flows", "ts_start", "ts_arrival", "family", "etype",
    "export_proto_version", "peer_src_ip", "sampling_rate", "sampler_id", "domain_id", "peer_dst_missing",
})
KNOWN_PLUGIN_TYPES = ("print", "memory", "kafka", "pgsql")


def needed_fields(cfg: Config) -> Optional[frozenset[str]]:
    """Names of the RECORD_DTYPE fields some consumer of `cfg` reads, or None (fill all) when unsure."""
    core = cfg.core
    if (core.pre_tag_map or core.net_source or core.as_source or core.sflow_net_source or core.sflow_as_source
            or core.use_ip_next_hop):
        return None
    needed = set(ALWAYS)
    for plugin in cfg.plugins:
        if plugin.type not in KNOWN_PLUGIN_TYPES:
            return None
        if (plugin.aggregate_filter or plugin.pre_tag_filter or plugin.pre_tag2_filter
                or plugin.pre_tag_label_filter or plugin.networks_file or plugin.networks_mask is not None):
            return None
        if plugin.type == "memory":
            needed.add("tcp_flags")            # the memory table ORs tcp flags into every entry
        for name in plugin.aggregate:
            prim = PRIMITIVES.get(name)
            if prim is None:
                return None
            needed.update(prim.columns)
    return frozenset(needed)
