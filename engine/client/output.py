"""Rows -> the text pmacct 1.7.7's client prints: formatted table, CSV, JSON lines, -N counters.

What the Debian pmacct 1.7.7 client prints (observed against nfacctd's memory plugin):
- columns in one fixed order: TAG, TAG2, IN_IFACE, OUT_IFACE first, then the print plugin's order
  (SRC_MAC, DST_MAC, VLAN, ETYPE, SRC_AS, ...); counters PACKETS, [FLOWS,] BYTES;
  the formatted widths are the print plugin's (render.FORMATTED_WIDTH), except TAG / TAG2: "%-10s  "
  (a longer value pushes the next column right; two spaces always follow);
- LABEL: nfacctd's memory plugin refuses the label primitive ("variable-length primitives ... are not
  supported in IMT plugin"); pmengine keeps it, after TAG2, formatted "%-32s  " (LABEL_BYTES wide);
- formatted: title line, rows, an empty line, "For a total of: N entries";
  CSV: header and rows, no total; JSON: one object per row (", " and ": " separators,
  numbers unquoted), no total, nothing at all for an empty table;
- an absent address is "0" in the formatted table, "" in CSV/JSON;
- timestamps "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (RFC 3339; the local offset when not UTC),
  epoch "secs.uuuuuu" with -I;
- -N: one line per query (or one with -S): bytes by default, "-n all" gives
  "packets bytes flows entries".
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..plugins.aggregate import AggregatedRows, KeySpec
from ..plugins.render import (FORMATTED_WIDTH, PRINT_ORDER, RenderOptions, json_is_string, primitive_values)
from ..plugins.timebins import US, local_offsets
from ..schema import LABEL_BYTES, PRIMITIVES

CLIENT_FIRST = ("tag", "tag2", "label", "in_iface", "out_iface")
CLIENT_ORDER = CLIENT_FIRST + tuple(p for p in PRINT_ORDER if p not in CLIENT_FIRST)
# Formatted columns whose value is padded and then followed by separator spaces (an overlong value shifts the rest).
CLIENT_FORMAT = {"tag": "%-10s  ", "tag2": "%-10s  ", "label": f"%-{LABEL_BYTES}s  "}
TIME_PRIMITIVES = ("timestamp_start", "timestamp_end", "timestamp_arrival")


@dataclass(frozen=True)
class OutputOptions:
    kind: str = "formatted"         # -O formatted | csv | json
    separator: str = ","            # -E
    since_epoch: bool = False       # -I
    num_protos: bool = False        # -u
    utc: bool = False               # -0
    all_fields: bool = False        # -a


def header_name(primitive: str) -> str:
    return PRIMITIVES[primitive].csv_header


def client_timestamps(us: np.ndarray, opts: OutputOptions) -> list[str]:
    """µs since epoch -> RFC 3339 text with microseconds, as the client prints them."""
    us = np.asarray(us, dtype=np.int64)
    secs, frac = np.divmod(us, US)
    if opts.since_epoch:
        return list(map("%d.%06d".__mod__, zip(secs.tolist(), frac.tolist())))
    offs = local_offsets(secs, opts.utc)
    text = np.datetime_as_string((secs + offs).astype("datetime64[s]"), unit="s").tolist()
    zone = [("Z" if o == 0 else "%s%02d:%02d" % ("+" if o > 0 else "-", abs(o) // 3600, abs(o) % 3600 // 60))
            for o in np.unique(offs).tolist()]
    if len(zone) == 1:
        return list(map(f"%s.%06d{zone[0]}".__mod__, zip(text, frac.tolist())))
    zones = {o: z for o, z in zip(np.unique(offs).tolist(), zone)}
    return ["%s.%06d%s" % (t, f, zones[o]) for t, f, o in zip(text, frac.tolist(), offs.tolist())]  # DST slow path


def widen(rows: AggregatedRows) -> AggregatedRows:
    """-a: the rows with every primitive pmengine keeps (absent ones zero)."""
    spec = KeySpec.create(CLIENT_ORDER, False)
    keys = np.zeros(len(rows), dtype=spec.dtype)
    for name in rows.keys.dtype.names:
        if name in spec.dtype.names and not name.startswith("_"):
            keys[name] = rows.keys[name]
    return AggregatedRows(tuple(CLIENT_ORDER), keys, rows.packets, rows.bytes, rows.flows, None,
                          rows.stamp_updated, rows.with_flows, rows.tcp_flags if rows.tcp_flags is not None
                          else np.zeros(len(rows), np.uint8))


def columns(rows: AggregatedRows, opts: OutputOptions) -> tuple[list[str], list[str]]:
    prims = [p for p in CLIENT_ORDER if p in rows.primitives]
    counters = ["packets", "flows", "bytes"] if rows.with_flows else ["packets", "bytes"]
    return prims, counters


def values(rows: AggregatedRows, primitive: str, opts: OutputOptions) -> list:
    if primitive in TIME_PRIMITIVES:
        return client_timestamps(rows.column(primitive), opts)
    render = RenderOptions(num_protos=opts.num_protos, utc=opts.utc,
                           absent_addr="0" if opts.kind == "formatted" else "")
    return primitive_values(rows, primitive, render)


def table_lines(rows: AggregatedRows, opts: OutputOptions) -> list[str]:
    """Title/header and one line per row (formatted and CSV); JSON: one object per row."""
    if opts.all_fields:
        rows = widen(rows)
    prims, counters = columns(rows, opts)
    cols = [values(rows, p, opts) for p in prims] + [getattr(rows, c).tolist() for c in counters]
    names = prims + counters
    if opts.kind == "json":                 # JSON keeps the print plugin's order (interfaces after the peers)
        order = [p for p in PRINT_ORDER if p in prims]
        cols = [cols[prims.index(p)] for p in order] + cols[len(prims):]
        prims = order
        keys = [PRIMITIVES[p].json_key for p in prims] + counters
        quoted = [json_is_string(p) for p in prims] + [False] * len(counters)
        parts = [json.dumps(k) + ": %s" for k in keys]
        cols = [list(map(json.dumps, c)) if q else c for c, q in zip(cols, quoted)]
        template = "{" + ", ".join(parts) + "}"
        return list(map(template.__mod__, zip(*cols))) if len(rows) else []
    if opts.kind == "csv":
        sep = opts.separator.replace("%", "%%")
        header = opts.separator.join([header_name(p) for p in prims] + [c.upper() for c in counters])
        template = sep.join(["%s"] * len(names))
        return [header] + (list(map(template.__mod__, zip(*cols))) if len(rows) else [])
    formats = [CLIENT_FORMAT.get(p) or f"%-{FORMATTED_WIDTH[p]}s" for p in prims]
    formats += [f"%-{FORMATTED_WIDTH[c]}s" if FORMATTED_WIDTH[c] else "%s" for c in counters]
    titles = [header_name(p) for p in prims] + [c.upper() for c in counters]
    template = "".join(formats)
    lines = [template % tuple(titles)]
    if len(rows):
        lines += map(template.__mod__, zip(*cols))
    return lines


def render_table(rows: AggregatedRows, opts: OutputOptions) -> str:
    lines = table_lines(rows, opts)
    if opts.kind == "formatted":
        lines += ["", f"For a total of: {len(rows)} entries"]
    return "".join(line + "\n" for line in lines)


def counter_line(sums: list[int], which: str) -> str:
    """-N: [packets, bytes, flows, entries] -> the line for -n which."""
    if which == "all":
        return " ".join(str(v) for v in sums)
    return str(sums[{"packets": 0, "bytes": 1, "flows": 2}[which]])
