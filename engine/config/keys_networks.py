"""Key table section: networks_file, nfacctd_net / sfacctd_net, nfacctd_as / sfacctd_as, use_ip_next_hop, allow files.

nfacctd_net / nfacctd_as / use_ip_next_hop / the allow files are global (as in pmacct); networks_file and
its companions may be scoped to a plugin (`networks_file[name]`).  netflow and sflow are one source here
("flow": what the export protocol carried).  Semantics: engine/enrich/networks.py, engine/enrich/allow.py.
"""
from __future__ import annotations

from engine.config.values import GLOBAL, PLUGIN, Key, format_bool, int_range, parse_bool, parse_text, positive_int

_NOT_YET = ("igp", "bgp", "bmp")


def _source_parser(allowed: tuple[str, ...]):
    def parse(text: str) -> str:
        low = text.strip().lower()
        if low in ("netflow", "sflow"):
            return "flow"
        if low in allowed:
            return low
        if low in _NOT_YET:
            raise ValueError(f"{low!r} is not implemented yet (supported: netflow, sflow, {', '.join(allowed)})")
        raise ValueError(f"bad value {text!r} (expected one of: netflow, sflow, {', '.join(allowed)})")
    return parse


parse_net_source = _source_parser(("mask", "file", "longest"))
parse_as_source = _source_parser(("file", "longest"))


def format_source(value: str) -> str:
    return "netflow" if value == "flow" else value


NETWORKS_KEYS: tuple[Key, ...] = (
    Key("nfacctd_net", parse_net_source, GLOBAL, None, ("core.net_source",), format=format_source,
        doc="netflow | sflow | mask | file | longest (igp/bgp/bmp: not yet); unset: netflow"),
    Key("sfacctd_net", parse_net_source, GLOBAL, None, ("core.sflow_net_source",), format=format_source,
        doc="used where nfacctd_net is not set"),
    Key("nfacctd_as", parse_as_source, GLOBAL, None, ("core.as_source",), format=format_source,
        doc="netflow | sflow | file | longest (bgp/bmp: not yet); unset: netflow"),
    Key("sfacctd_as", parse_as_source, GLOBAL, None, ("core.sflow_as_source",), format=format_source,
        doc="used where nfacctd_as is not set"),
    Key("use_ip_next_hop", parse_bool, GLOBAL, False, ("core.use_ip_next_hop",), format=format_bool),
    Key("nfacctd_allow_file", parse_text, GLOBAL, None, ("core.allow_file",),
        doc="exporters allowed (addresses/prefixes); others are dropped before decoding and counted"),
    Key("sfacctd_allow_file", parse_text, GLOBAL, None, ("core.sflow_allow_file",)),
    Key("networks_file", parse_text, PLUGIN, None, ("plugin.networks_file",)),
    Key("networks_file_filter", parse_bool, PLUGIN, False, ("plugin.networks_file_filter",), format=format_bool),
    Key("networks_file_no_lpm", parse_bool, PLUGIN, False, ("plugin.networks_file_no_lpm",), format=format_bool),
    Key("networks_mask", int_range(0, 128), PLUGIN, None, ("plugin.networks_mask",)),
    Key("networks_cache_entries", positive_int, PLUGIN, None, ("plugin.networks_cache_entries",),
        doc="accepted; the lookup is a vectorised interval search and needs no cache"),
)
