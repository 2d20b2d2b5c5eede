"""Key table section: pre_tag_map, pre_tag_filter / pre_tag2_filter / pre_tag_label_filter, aggregate_filter.

Every value is checked when the configuration is parsed (the map is loaded, the expressions parsed),
so a bad one is a configuration error naming key and line; the tree keeps the text, and each process
builds its own map / filters from it (engine/enrich).
"""
from __future__ import annotations

from engine.config.values import GLOBAL, PLUGIN, Key


def parse_pre_tag_map(text: str) -> str:
    """A pre_tag_map path whose map loads (a bad entry: ValueError naming the map's file and line)."""
    from engine.enrich.pretag import load_pretag_map
    load_pretag_map(text)               # MapError is a ValueError: "path:line: message"
    return text


def parse_aggregate_filter(text: str) -> str:
    """A libpcap filter expression pmengine can evaluate on flows (else ValueError naming it)."""
    from engine.filters import parse_filter
    parse_filter(text)
    return text


def parse_pre_tag_filter(text: str) -> str:
    from engine.enrich.tagfilter import parse_tag_filter
    parse_tag_filter(text)
    return text


def parse_pre_tag_label_filter(text: str) -> str:
    from engine.enrich.tagfilter import parse_label_filter
    parse_label_filter(text)
    return text


TAGS_KEYS: tuple[Key, ...] = (
    Key("pre_tag_map", parse_pre_tag_map, GLOBAL, None, ("core.pre_tag_map",),
        doc="tag/tag2/label by exporter and flow fields; reloaded on SIGUSR2 when maps_refresh is true"),
    Key("aggregate_filter", parse_aggregate_filter, PLUGIN, None, ("plugin.aggregate_filter",),
        doc="libpcap expression over the flow's fields: host, net, port, portrange, proto, tcp/udp/icmp, "
            "ip/ip6, vlan, src/dst, and/or/not, parentheses"),
    Key("pre_tag_filter", parse_pre_tag_filter, PLUGIN, None, ("plugin.pre_tag_filter",),
        doc="tags this plugin receives: N, A-B, -N (negation), comma separated; 0 is untagged"),
    Key("pre_tag2_filter", parse_pre_tag_filter, PLUGIN, None, ("plugin.pre_tag2_filter",)),
    Key("pre_tag_label_filter", parse_pre_tag_label_filter, PLUGIN, None, ("plugin.pre_tag_label_filter",),
        doc="labels this plugin receives, comma separated; null: unlabelled; -label: negation"),
)
