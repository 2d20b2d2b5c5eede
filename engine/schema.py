"""The one canonical flow record, declared once as a table.

Everything else is generated from FIELDS: the numpy dtype every decoder writes
into and every ring carries (RECORD_DTYPE), the aggregation primitives that
`aggregate:` accepts (PRIMITIVES), and the JSON keys / CSV headers that the
print plugin and later sinks use.

Conventions
- Addresses are 16 bytes in network order; IPv4 is stored IPv4-mapped
  (::ffff:a.b.c.d).  A row's address family is the `family` field (4 or 6; 0
  when the flow carried no L3 address).
- MAC addresses are 6 bytes in network order.
- Times are int64 microseconds since the Unix epoch (UTC); 0 means "absent".
- Counters are uint64.
- Integers are in native byte order (decoders byteswap from the wire).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

ADDR = ("u1", (16,))
MAC = ("u1", (6,))
LABEL_BYTES = 32
LABEL = ("u1", (LABEL_BYTES,))


@dataclass(frozen=True)
class Field:
    name: str                       # column name in RECORD_DTYPE
    dtype: object                   # numpy dtype spec
    primitive: Optional[str]        # pmacct aggregate primitive that selects it (None: internal)
    json_key: Optional[str]         # pmacct JSON key
    csv_header: Optional[str]       # pmacct CSV / formatted header
    kind: str                       # how it is rendered: int, addr, mac, proto, flags, etype, time, counter, internal
    doc: str = ""


# Order here is the order of the record in memory (largest first keeps it aligned).
FIELDS: tuple[Field, ...] = (
    Field("ts_start", "i8", "timestamp_start", "timestamp_start", "TIMESTAMP_START", "time", "flow start, µs since epoch"),
    Field("ts_end", "i8", "timestamp_end", "timestamp_end", "TIMESTAMP_END", "time", "flow end, µs since epoch"),
    Field("ts_arrival", "i8", "timestamp_arrival", "timestamp_arrival", "TIMESTAMP_ARRIVAL", "time", "export packet arrival, µs"),
    Field("bytes", "u8", None, "bytes", "BYTES", "counter"),
    Field("packets", "u8", None, "packets", "PACKETS", "counter"),
    Field("flows", "u8", None, "flows", "FLOWS", "counter"),
    Field("src_host", ADDR, "src_host", "ip_src", "SRC_IP", "addr"),
    Field("dst_host", ADDR, "dst_host", "ip_dst", "DST_IP", "addr"),
    Field("peer_src_ip", ADDR, "peer_src_ip", "peer_ip_src", "PEER_SRC_IP", "addr", "exporter address"),
    Field("peer_dst_ip", ADDR, "peer_dst_ip", "peer_ip_dst", "PEER_DST_IP", "addr", "BGP next hop"),
    Field("ip_next_hop", ADDR, None, None, None, "internal", "IP next hop (IE 15/62), for use_ip_next_hop"),
    Field("tag", "u8", "tag", "tag", "TAG", "int", "pre_tag_map set_tag"),
    Field("tag2", "u8", "tag2", "tag2", "TAG2", "int", "pre_tag_map set_tag2"),
    Field("src_as", "u4", "src_as", "as_src", "SRC_AS", "int"),
    Field("dst_as", "u4", "dst_as", "as_dst", "DST_AS", "int"),
    Field("peer_src_as", "u4", "peer_src_as", "peer_as_src", "PEER_SRC_AS", "int"),
    Field("peer_dst_as", "u4", "peer_dst_as", "peer_as_dst", "PEER_DST_AS", "int"),
    Field("in_iface", "u4", "in_iface", "iface_in", "IN_IFACE", "int"),
    Field("out_iface", "u4", "out_iface", "iface_out", "OUT_IFACE", "int"),
    Field("sampling_rate", "u4", "sampling_rate", "sampling_rate", "SAMPLING_RATE", "int"),
    Field("sampler_id", "u4", None, None, None, "internal", "sampler id (IE 48/302), resolved to sampling_rate"),
    Field("domain_id", "u4", None, None, None, "internal", "source id / observation domain id"),
    Field("src_port", "u2", "src_port", "port_src", "SRC_PORT", "int"),
    Field("dst_port", "u2", "dst_port", "port_dst", "DST_PORT", "int"),
    Field("vlan", "u2", "vlan", "vlan", "VLAN", "int"),
    Field("etype", "u2", "etype", "etype", "ETYPE", "etype"),
    Field("export_proto_version", "u2", "export_proto_version", "export_proto_version", "EXPORT_PROTO_VERSION", "int"),
    Field("label", LABEL, "label", "label", "LABEL", "label",
          "pre_tag_map set_label: UTF-8, NUL-padded to LABEL_BYTES (longer labels are a map error)"),
    Field("src_mac", MAC, "src_mac", "mac_src", "SRC_MAC", "mac"),
    Field("dst_mac", MAC, "dst_mac", "mac_dst", "DST_MAC", "mac"),
    Field("src_mask", "u1", "src_mask", "mask_src", "SRC_MASK", "int"),
    Field("dst_mask", "u1", "dst_mask", "mask_dst", "DST_MASK", "int"),
    Field("proto", "u1", "proto", "ip_proto", "PROTOCOL", "proto"),
    Field("tos", "u1", "tos", "tos", "TOS", "int"),
    Field("tcp_flags", "u1", "tcpflags", "tcp_flags", "TCP_FLAGS", "flags"),
    Field("family", "u1", None, None, None, "internal", "4, 6, or 0 when no L3 address"),
    Field("direction", "u1", None, None, None, "internal", "IE 61 flowDirection (0 ingress, 1 egress)"),
    Field("peer_dst_missing", "u1", None, None, None, "internal",
          "1: the export had no BGP next hop (sFlow sample without extended gateway): peer_dst_ip prints as "
          "absent whatever the flow family (0, NetFlow: an IPv6 flow's next hop prints as IPv6 text)"),
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

RECORD_DTYPE = np.dtype([(f.name, f.dtype) for f in FIELDS], align=True)


@dataclass(frozen=True)
class Primitive:
    """An `aggregate:` primitive: which record columns make up its key."""
    name: str
    columns: tuple[str, ...]        # record columns the key is built from
    json_key: str
    csv_header: str
    derived: Optional[str] = None   # how the key is derived from the columns (e.g. "net")


def _build_primitives() -> dict[str, Primitive]:
    prims: dict[str, Primitive] = {}
    for f in FIELDS:
        if f.primitive:
            prims[f.primitive] = Primitive(f.primitive, (f.name,), f.json_key, f.csv_header)
    # src_net / dst_net: the host address masked by the flow's mask.
    prims["src_net"] = Primitive("src_net", ("src_host", "src_mask", "family"), "net_src", "SRC_NET", derived="net")
    prims["dst_net"] = Primitive("dst_net", ("dst_host", "dst_mask", "family"), "net_dst", "DST_NET", derived="net")
    return prims


PRIMITIVES: dict[str, Primitive] = _build_primitives()

# Counters every aggregated row carries.
COUNTERS = ("packets", "flows", "bytes")

IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def empty(n: int) -> np.ndarray:
    """A zeroed batch of n canonical records."""
    return np.zeros(n, dtype=RECORD_DTYPE)
