"""Aggregated rows -> the text values nfacctd 1.7.7 prints (formatted, CSV, JSON).

Every renderer takes whole columns and returns a Python list (str, or int
for numbers): table lookups, np.unique + one conversion per distinct value,
and C-level map/str.join/%-formatting; no Python code runs per value except
on the named slow path for IPv6 text (one inet_ntop per distinct address).

What nfacctd prints (observed on real captures and crafted flows):
- columns come in one fixed order (PRINT_ORDER), whatever the `aggregate` order;
  JSON adds stamp_inserted/stamp_updated (history on) before the counters,
  CSV and formatted output never print them;
- counters: packets, then flows (only with `aggregate: flows`), then bytes in
  JSON; PACKETS, FLOWS, BYTES in CSV/formatted;
- IPv4 addresses dotted, IPv6 as inet_ntop (v4-mapped as ::ffff:a.b.c.d);
  an absent address is "" in JSON/CSV and "::" in formatted output;
  peer_dst_ip of an IPv6 flow is always IPv6 text, of an IPv4 flow dotted;
- MACs lower-case colon hex; etype lower-case hex without 0x ("800", "86dd");
- tcp_flags decimal, as a JSON string; ip_proto a name from pmacct's table
  (else decimal), a JSON string even with print_num_protos;
- timestamps "YYYY-MM-DD HH:MM:SS.uuuuuu" (local time unless timestamps_utc),
  absent ones "0000-00-00 00:00:00.000000"; timestamps_since_epoch gives
  "<secs>.uuuuuu" ("0.000000"); timestamps_secs zeroes the microseconds;
  stamp_inserted/stamp_updated "YYYY-MM-DD HH:MM:SS" or "<secs>", JSON strings.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..schema import FIELD_BY_NAME, IPV4_MAPPED_PREFIX, PRIMITIVES
from .aggregate import AggregatedRows
from .timebins import US, local_offsets

PRINT_ORDER = (
    "tag", "tag2", "label", "src_mac", "dst_mac", "vlan", "etype", "src_as", "dst_as", "peer_src_as", "peer_dst_as",
    "peer_src_ip", "peer_dst_ip", "in_iface", "out_iface", "src_host", "src_net", "dst_host", "dst_net",
    "src_mask", "dst_mask", "src_port", "dst_port", "tcpflags", "proto", "tos", "sampling_rate",
    "timestamp_start", "timestamp_end", "timestamp_arrival", "export_proto_version",
)

# Formatted output: each column's width, separator spaces included (BYTES, last, is not padded).
FORMATTED_WIDTH = {
    "tag": 12, "tag2": 12, "label": 34,     # nfacctd prints tags as %-10llu + 2 spaces; it refuses label in formatted output
    "src_mac": 19, "dst_mac": 19, "vlan": 7, "etype": 7, "src_as": 12, "dst_as": 12,
    "peer_src_as": 12, "peer_dst_as": 12, "peer_src_ip": 47, "peer_dst_ip": 47, "in_iface": 12,
    "out_iface": 12, "src_host": 47, "src_net": 47, "dst_host": 47, "dst_net": 47, "src_mask": 10,
    "dst_mask": 10, "src_port": 10, "dst_port": 10, "tcpflags": 11, "proto": 12, "tos": 7,
    "sampling_rate": 14, "timestamp_start": 31, "timestamp_end": 31, "timestamp_arrival": 31,
    "export_proto_version": 22, "packets": 22, "flows": 22, "bytes": 0,
}

COUNTER_KEYS = {"packets": ("packets", "PACKETS"), "flows": ("flows", "FLOWS"), "bytes": ("bytes", "BYTES")}

# Protocol names as nfacctd 1.7.7 prints them (others: the number).
PROTO_NAMES = {
    1: "icmp", 2: "igmp", 3: "ggp", 4: "ipencap", 6: "tcp", 8: "egp", 9: "igp", 17: "udp", 18: "mux",
    41: "ipv6", 43: "ipv6-route", 44: "ipv6-frag", 46: "rsvp", 47: "gre", 50: "esp", 51: "ah",
    55: "mobile", 56: "tlsp", 58: "ipv6-icmp", 59: "ipv6-nonxt", 60: "ipv6-opts", 80: "iso-ip",
    83: "vines", 88: "eigrp", 89: "ospf", 91: "larp", 93: "ax.25", 94: "ipip", 98: "encap", 102: "pnni",
    103: "pim", 108: "IPcomp", 111: "ipx-in-ip", 112: "vrrp", 115: "l2tp", 124: "isis", 132: "sctp",
    133: "fc",
}
# Lookup tables of Python str objects: indexing them and .tolist() is C-level work.
_PROTO_TEXT = np.array([PROTO_NAMES.get(i, str(i)) for i in range(256)], dtype=object)
_DEC = np.array([str(i) for i in range(256)], dtype=object)
_HEX2 = np.array([f"{i:02x}" for i in range(256)], dtype=object)
_ABSENT_DATE = "0000-00-00 00:00:00"

# JSON: which primitives are JSON strings (the others are numbers).
JSON_STRING_KINDS = ("addr", "mac", "proto", "flags", "etype", "time", "label")


def json_is_string(primitive: str) -> bool:
    prim = PRIMITIVES[primitive]
    return prim.derived == "net" or FIELD_BY_NAME[prim.columns[0]].kind in JSON_STRING_KINDS


@dataclass(frozen=True)
class RenderOptions:
    num_protos: bool = False        # print_num_protos
    since_epoch: bool = False       # timestamps_since_epoch
    utc: bool = False               # timestamps_utc
    secs: bool = False              # timestamps_secs
    absent_addr: str = ""           # "" in JSON/CSV, "::" in formatted output

    @classmethod
    def from_plugin(cls, plugin, absent_addr: str = "") -> "RenderOptions":
        return cls(plugin.num_protos, plugin.timestamps_since_epoch, plugin.timestamps_utc,
                   plugin.timestamps_secs, absent_addr)


def _by_unique(values: np.ndarray, texts_for) -> list[str]:
    """Text of each value; texts_for(distinct values) -> their texts (values: 1-D, or rows of bytes)."""
    if len(values) == 0:
        return []
    if values.ndim > 1:
        values = np.ascontiguousarray(values).view(f"V{values.shape[1]}").ravel()
    uniq, inverse = np.unique(values, return_inverse=True)
    texts = np.empty(len(uniq), dtype=object)
    texts[:] = texts_for(uniq)
    return texts[inverse.ravel()].tolist()


def int_values(values: np.ndarray) -> list[int]:
    """Integers as Python ints: the line templates format them ("%s") in C."""
    return np.asarray(values).tolist()


def ipv4_text(addr4: np.ndarray) -> list[str]:
    """(n, 4) uint8 -> dotted quads."""
    return list(map(".".join, zip(*(_DEC[addr4[:, i]].tolist() for i in range(4)))))


def ipv6_text_slow(addr16: np.ndarray) -> list[str]:
    """(n, 16) uint8 -> inet_ntop text; slow path: one inet_ntop per distinct address."""
    return _by_unique(addr16, lambda uniq: [socket.inet_ntop(socket.AF_INET6, bytes(v)) for v in uniq])


_MAPPED_WORD1 = np.frombuffer(IPV4_MAPPED_PREFIX[8:] + bytes(4), "<u8")[0]     # bytes 8-11 of ::ffff:0:0
_LOW32 = np.uint64(0xFFFFFFFF)


def address_words(addr16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) uint8 addresses -> their two 8-byte halves as little-endian uint64 (cheap to compare)."""
    words = addr16.view("<u8") if addr16.strides[-1] == 1 else np.ascontiguousarray(addr16).view("<u8")
    return words[:, 0], words[:, 1]             # a view of a key column: no copy


def _address_text(addr16: np.ndarray, as_v4: np.ndarray, as_v6: np.ndarray, absent: str) -> list[str]:
    if as_v4.all():
        return ipv4_text(addr16[:, 12:])
    out = np.full(len(addr16), absent, dtype=object)
    if as_v4.any():
        out[as_v4] = ipv4_text(addr16[as_v4, 12:])
    if as_v6.any():
        out[as_v6] = ipv6_text_slow(addr16[as_v6])
    return out.tolist()


def host_text(addr16: np.ndarray, family: np.ndarray, absent: str = "") -> list[str]:
    """Flow addresses and networks: the flow's family (4 dotted, 6 IPv6, 0 absent) decides the form."""
    return _address_text(addr16, family == 4, family == 6, absent)


def peer_text(addr16: np.ndarray, absent: str = "", flow_family: Optional[np.ndarray] = None,
              missing: Optional[np.ndarray] = None) -> list[str]:
    """Exporter / next-hop addresses: IPv4-mapped is dotted, all zeros absent, anything else IPv6.

    With flow_family (peer_dst_ip), the next hop of an IPv6 flow is always IPv6 text, as nfacctd
    prints it ("::", "::ffff:0.0.0.0"), except where `missing` (schema peer_dst_missing: an sFlow
    sample without extended gateway) says none was exported: absent, as sfacctd prints it.
    """
    return _address_text(addr16, *peer_forms(addr16, flow_family, missing), absent)


def peer_forms(addr16: np.ndarray, flow_family: Optional[np.ndarray] = None,
               missing: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(dotted, IPv6 text) masks of peer_text's addresses; rows in neither are absent."""
    high, low = address_words(addr16)
    as_v4 = (high == 0) & ((low & _LOW32) == _MAPPED_WORD1)
    if flow_family is None and as_v4.all():     # the common case: IPv4 exporters
        return as_v4, np.zeros(len(as_v4), dtype=bool)
    as_v6 = ~as_v4 & ((high | low) != 0)
    if flow_family is not None:
        v6_flow = flow_family == 6
        if missing is not None:
            v6_flow &= missing == 0
        as_v4 &= ~v6_flow
        as_v6 |= v6_flow
    return as_v4, as_v6


def address_forms(rows: AggregatedRows, primitive: str) -> tuple[np.ndarray, np.ndarray]:
    """(dotted, IPv6 text) masks of an address primitive's rows, as primitive_values decides them."""
    values = rows.column(primitive)
    if PRIMITIVES[primitive].derived == "net" or primitive in ("src_host", "dst_host"):
        family = rows.family()
        return family == 4, family == 6
    if primitive != "peer_dst_ip":
        return peer_forms(values)
    names = rows.keys.dtype.names or ()
    missing = rows.keys["peer_dst_missing"] if "peer_dst_missing" in names else None
    return peer_forms(values, rows.family(), missing)


def mac_text(mac: np.ndarray) -> list[str]:
    """(n, 6) uint8 -> "aa:bb:cc:dd:ee:ff"."""
    return list(map(":".join, zip(*(_HEX2[mac[:, i]].tolist() for i in range(6)))))


def proto_text(proto: np.ndarray, numeric: bool = False) -> list[str]:
    return (_DEC if numeric else _PROTO_TEXT)[np.asarray(proto, dtype=np.uint8)].tolist()


def etype_text(etype: np.ndarray) -> list[str]:
    """Lower-case hex without leading zeros or 0x, as nfacctd prints it."""
    return _by_unique(np.asarray(etype, dtype=np.uint16), lambda uniq: [format(v, "x") for v in uniq.tolist()])


def _date_text(seconds: np.ndarray, utc: bool) -> list[str]:
    """Epoch seconds -> "YYYY-MM-DD HH:MM:SS" (local time unless utc), one conversion per distinct second."""
    def texts(uniq: np.ndarray) -> list[str]:
        local = (uniq + local_offsets(uniq, utc)).astype("datetime64[s]")
        text = np.char.replace(np.datetime_as_string(local, unit="s"), "T", " ")
        text[uniq == 0] = _ABSENT_DATE                  # an absent time
        return text.tolist()
    return _by_unique(np.asarray(seconds, dtype=np.int64), texts)


def timestamp_text(us: np.ndarray, opts: RenderOptions = RenderOptions()) -> list[str]:
    """µs since epoch -> timestamp_start/end/arrival text."""
    us = np.asarray(us, dtype=np.int64)
    if opts.secs:
        us = us - us % US
    secs, frac = np.divmod(us, US)
    if opts.since_epoch:
        return list(map("%d.%06d".__mod__, zip(secs.tolist(), frac.tolist())))
    return list(map("%s.%06d".__mod__, zip(_date_text(secs, opts.utc), frac.tolist())))


def stamp_text(seconds: np.ndarray, opts: RenderOptions = RenderOptions()) -> list[str]:
    """Epoch seconds -> stamp_inserted/stamp_updated text."""
    seconds = np.asarray(seconds, dtype=np.int64)
    if opts.since_epoch:
        return list(map(str, seconds.tolist()))
    return _date_text(seconds, opts.utc)


def primitive_values(rows: AggregatedRows, primitive: str, opts: RenderOptions) -> list:
    """One primitive for every row: str, or int for numeric primitives (formatted by the line templates)."""
    prim = PRIMITIVES[primitive]
    values = rows.column(primitive)
    if prim.derived == "net" or primitive in ("src_host", "dst_host"):
        return host_text(values, rows.family(), opts.absent_addr)
    kind = FIELD_BY_NAME[prim.columns[0]].kind
    if kind == "addr":
        if primitive != "peer_dst_ip":
            return peer_text(values, opts.absent_addr)
        names = rows.keys.dtype.names or ()
        missing = rows.keys["peer_dst_missing"] if "peer_dst_missing" in names else None
        return peer_text(values, opts.absent_addr, rows.family(), missing)
    if kind == "mac":
        return mac_text(values)
    if kind == "proto":
        return proto_text(values, opts.num_protos)
    if kind == "etype":
        return etype_text(values)
    if kind == "time":
        return timestamp_text(values, opts)
    if kind == "label":
        return label_text(values)
    return int_values(values)                   # int, flags


def label_text(labels: np.ndarray) -> list[str]:
    """(n, LABEL_BYTES) NUL-padded UTF-8 -> text ("" when unlabelled), one decode per distinct label."""
    return _by_unique(labels, lambda uniq: [bytes(v).rstrip(b"\0").decode("utf-8", "replace") for v in uniq])


def printed_primitives(primitives) -> list[str]:
    """The selected primitives in nfacctd's print order."""
    return [p for p in PRINT_ORDER if p in primitives]


def counter_names(with_flows: bool) -> list[str]:
    return ["packets", "flows", "bytes"] if with_flows else ["packets", "bytes"]
