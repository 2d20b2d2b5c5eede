"""Which columns a pgsql plugin writes, and their COPY text, as nfacctd 1.7.7 writes them.

What nfacctd 1.7.7 sends (observed with `log_statement = all`):
- column names: pmacct's (ip_src, ip_dst, net_src, port_src, ip_proto, as_src,
  peer_ip_src, iface_in, mac_src, tcp_flags, timestamp_start + _residual, ...);
- addresses as inet text (IPv4 dotted, IPv6 inet_ntop; absent '0.0.0.0'),
  MACs 'aa:bb:cc:dd:ee:ff', ip_proto numeric, etype lower-case hex ('800');
- timestamps as to_timestamp(<secs>) plus a <name>_residual column of µs;
  stamp_inserted to_timestamp(<bin start>), stamp_updated the purge time;
- sql_optimize_clauses: exactly the aggregate's columns (flows only with
  `aggregate: flows`; stamp_* only with sql_history);
- default tables (sql_table_version N, optimize off): every key column of
  version N is written, those not aggregated with their default (0,
  '0.0.0.0', '0:0:0:0:0:0', class_id 'unknown'); flows from v4 on (0 unless
  `aggregate: flows`); primitives outside the version are added (iface_in...);
- counters are added on update; tcp_flags is OR-ed;
- tag is column agent_id up to sql_table_version 8 (default and optimized tables alike) and tag from
  version 9 on; tag2 is tag2, label is label (text, '' when unlabelled); tag2 and label are in no
  default table version (sql/README.tag2, README.label: the table is extended by hand).
The text of each column is built column-wise (render.py); rows are joined in C.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..aggregate import AggregatedRows
from ..render import etype_text, host_text, label_text, mac_text, peer_text
from ..timebins import US

ABSENT_ADDR = "0.0.0.0"

# primitive -> (column, kind); kinds: host, peer, peer_dst, mac, int, etype, time
PRIMITIVE_COLUMNS: dict[str, tuple[str, str]] = {
    "src_host": ("ip_src", "host"), "dst_host": ("ip_dst", "host"),
    "src_net": ("net_src", "host"), "dst_net": ("net_dst", "host"),
    "src_mask": ("mask_src", "int"), "dst_mask": ("mask_dst", "int"),
    "src_port": ("port_src", "int"), "dst_port": ("port_dst", "int"),
    "proto": ("ip_proto", "int"), "tos": ("tos", "int"), "tcpflags": ("tcp_flags", "int"),
    "src_as": ("as_src", "int"), "dst_as": ("as_dst", "int"),
    "peer_src_as": ("peer_as_src", "int"), "peer_dst_as": ("peer_as_dst", "int"),
    "peer_src_ip": ("peer_ip_src", "peer"), "peer_dst_ip": ("peer_ip_dst", "peer_dst"),
    "in_iface": ("iface_in", "int"), "out_iface": ("iface_out", "int"),
    "src_mac": ("mac_src", "mac"), "dst_mac": ("mac_dst", "mac"),
    "vlan": ("vlan", "int"), "etype": ("etype", "etype"),
    "sampling_rate": ("sampling_rate", "int"), "export_proto_version": ("export_proto_version", "int"),
    "timestamp_start": ("timestamp_start", "time"), "timestamp_end": ("timestamp_end", "time"),
    "timestamp_arrival": ("timestamp_arrival", "time"),
    "tag": ("agent_id", "int"), "tag2": ("tag2", "int"), "label": ("label", "label"),
}
TAG_COLUMN_FROM_VERSION = 9     # sql_table_version from which the tag column is `tag` (before: `agent_id`)
COLUMN_PRIMITIVE = {col: prim for prim, (col, _) in PRIMITIVE_COLUMNS.items()}

# Key columns of pmacct's default tables (sql/pmacct-create-table_vN.pgsql), their order, and defaults.
_V1 = ("mac_src", "mac_dst", "ip_src", "ip_dst", "port_src", "port_dst", "ip_proto")
VERSION_KEYS: dict[int, tuple[str, ...]] = {
    1: _V1,
    2: ("agent_id", "mac_src", "mac_dst", "vlan") + _V1[2:],
    3: ("agent_id", "mac_src", "mac_dst", "vlan") + _V1[2:] + ("tos",),
    4: ("agent_id", "mac_src", "mac_dst", "vlan") + _V1[2:] + ("tos",),
    5: ("agent_id", "class_id", "mac_src", "mac_dst", "vlan") + _V1[2:] + ("tos",),
    6: ("agent_id", "class_id", "mac_src", "mac_dst", "vlan", "as_src", "as_dst") + _V1[2:] + ("tos",),
    7: ("agent_id", "class_id", "mac_src", "mac_dst", "vlan", "as_src", "as_dst") + _V1[2:] + ("tcp_flags", "tos"),
    8: ("agent_id", "class_id", "mac_src", "mac_dst", "vlan", "as_src", "as_dst") + _V1[2:] + ("tcp_flags", "tos"),
    9: ("tag", "class_id", "mac_src", "mac_dst", "vlan", "as_src", "as_dst") + _V1[2:] + ("tcp_flags", "tos"),
}
DEFAULT_TEXT = {"agent_id": "0", "tag": "0", "class_id": "unknown", "mac_src": "0:0:0:0:0:0",
                "mac_dst": "0:0:0:0:0:0", "ip_src": ABSENT_ADDR, "ip_dst": ABSENT_ADDR}


def default_table(version: int) -> str:
    """The table pmacct's docs (sql/README.pgsql) name for a version: acct, acct_v2 ... acct_v9."""
    return "acct" if version == 1 else f"acct_v{version}"


@dataclass(frozen=True)
class Column:
    """One written column: its name, how its text is made, and its role."""
    name: str
    render: Callable[[AggregatedRows], list]    # rows -> one str/int per row
    role: str = "key"           # key | counter | or (tcp_flags) | epoch (key, to_timestamp) | stamp


def _text(rows: AggregatedRows, primitive: str, kind: str) -> list:
    values = rows.column(primitive)
    if kind == "host":
        return host_text(values, rows.family(), ABSENT_ADDR)
    if kind == "peer":
        return peer_text(values, ABSENT_ADDR)
    if kind == "peer_dst":          # an absent (all-zero) next hop is '0.0.0.0' whatever the flow's family
        text = peer_text(values, ABSENT_ADDR, rows.family())
        zero = ~np.any(values, axis=1)
        if zero.any():
            out = np.array(text, dtype=object)
            out[zero] = ABSENT_ADDR
            text = out.tolist()
        return text
    if kind == "mac":
        return mac_text(values)
    if kind == "etype":
        return etype_text(values)
    if kind == "label":             # COPY text: a backslash is the escape character
        return [t.replace("\\", "\\\\") for t in label_text(values)]
    return np.asarray(values).tolist()


def column_name(primitive: str, version: int) -> str:
    """The column a primitive is written to under sql_table_version `version`."""
    if primitive == "tag" and version >= TAG_COLUMN_FROM_VERSION:
        return "tag"
    return PRIMITIVE_COLUMNS[primitive][0]


def _primitive_columns(primitive: str, version: int) -> list[Column]:
    name, kind = column_name(primitive, version), PRIMITIVE_COLUMNS[primitive][1]
    if kind == "time":
        return [Column(name, lambda r, p=primitive: (np.asarray(r.column(p)) // US).tolist(), "epoch"),
                Column(f"{name}_residual", lambda r, p=primitive: (np.asarray(r.column(p)) % US).tolist())]
    role = "or" if primitive == "tcpflags" else "key"
    return [Column(name, lambda r, p=primitive, k=kind: _text(r, p, k), role)]


def _constant(name: str, text: str) -> Column:
    return Column(name, lambda r: [text] * len(r))


def plan_columns(aggregate: tuple[str, ...], optimize: bool, version: int, history: bool) -> list[Column]:
    """The columns written for a plugin's aggregate, in pmacct's order (keys, counters, stamps)."""
    prims = [p for p in aggregate if p in PRIMITIVE_COLUMNS]
    cols: list[Column] = []
    if optimize:
        for p in prims:
            cols += _primitive_columns(p, version)
    else:
        by_column = {column_name(p, version): p for p in prims}
        for name in VERSION_KEYS[version]:
            if name in by_column:
                cols += _primitive_columns(by_column.pop(name), version)
            elif name == "tcp_flags":       # not a key column: left to its default when not aggregated
                continue
            else:
                cols.append(_constant(name, DEFAULT_TEXT.get(name, "0")))
        for p in prims:
            if column_name(p, version) in by_column:
                cols += _primitive_columns(p, version)
    cols.append(Column("packets", lambda r: r.packets.tolist(), "counter"))
    cols.append(Column("bytes", lambda r: r.bytes.tolist(), "counter"))
    if "flows" in aggregate:
        cols.append(Column("flows", lambda r: r.flows.tolist(), "counter"))
    elif not optimize and version >= 4:
        cols.append(Column("flows", lambda r: [0] * len(r), "counter"))
    if history:
        cols.append(Column("stamp_inserted", lambda r: r.stamp_inserted.tolist(), "epoch"))
        cols.append(Column("stamp_updated", lambda r: [r.stamp_updated] * len(r), "stamp"))
    return cols


def copy_text(rows: AggregatedRows, columns: list[Column]) -> str:
    """The rows as COPY text (tab-separated, newline-terminated); values never contain tabs or newlines."""
    if len(rows) == 0:
        return ""
    values = [c.render(rows) for c in columns]
    template = "\t".join(["%s"] * len(columns)) + "\n"
    return "".join(map(template.__mod__, zip(*values)))


def staged_columns(columns: list[Column]) -> list[Column]:
    """The columns sent by COPY (stamp_updated is the purge time, added by the statement)."""
    return [c for c in columns if c.role != "stamp"]


def key_columns(columns: list[Column]) -> list[Column]:
    return [c for c in columns if c.role in ("key", "epoch")]


def find(columns: list[Column], name: str) -> Optional[Column]:
    return next((c for c in columns if c.name == name), None)
