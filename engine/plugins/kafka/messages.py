"""Aggregated rows -> the Kafka messages nfacctd 1.7.7's kafka plugin sends (pure, vectorised per purge).

What nfacctd 1.7.7 sends (observed against a real broker, kafka_output json):
- one message per row: the print plugin's JSON object (same keys, order and
  values, stamp_inserted/stamp_updated with history) plus `"writer_id":
  "<plugin name>/<writer pid>"` as the last key; no trailing newline;
- kafka_multi_values N: several objects per message, each followed by "\\n";
  objects are added while the message stays shorter than N bytes (N counts a
  C string's terminating NUL: 3 objects of 280 bytes fit in 841, not in 840);
- kafka_markers: {"event_type": "purge_init", "writer_id": ...} before and
  {"event_type": "purge_close", "writer_id": ..., "purged_entries": n,
  "total_entries": n, "duration": s} after each purge, messages of their own;
- kafka_topic / kafka_partition_key variables are expanded per row:
  addresses with "." and ":" turned into "_" ("127_0_1_1"), "null" when the
  primitive is not aggregated; numbers in decimal, "0" when not aggregated;
  $tag/$tag2/$post_tag/$post_tag2 are "0" (pmengine has no tags).
Differences, on purpose: with kafka_multi_values and a partition key, rows are
grouped by key so that a message's key is the key of every row in it (nfacctd
sends each packed message with the key of the row that came next); markers
carry no key (nfacctd's purge_close carries the last row's key).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import repeat
from operator import add
from typing import Optional, Union

import numpy as np

from ..aggregate import AggregatedRows
from ..print_plugin import LineFormat
from ..render import RenderOptions, int_values, primitive_values

PURGE_EVENT = '"event_type": "purge",'      # what only row objects contain (markers are purge_init/_close)
_VARIABLES = re.compile(r"\$(peer_src_ip|post_tag2|post_tag|tag2|tag|src_host|dst_host|src_port|dst_port|"
                        r"proto|in_iface)")
_ZERO_VARIABLES = ("post_tag", "post_tag2")
_ADDRESS_VARIABLES = ("peer_src_ip", "src_host", "dst_host")
_NUMBER_VARIABLES = {"src_port": "src_port", "dst_port": "dst_port", "in_iface": "in_iface", "proto": "proto",
                     "tag": "tag", "tag2": "tag2"}      # a number variable not aggregated expands to 0
_UNDERSCORES = str.maketrans(".:", "__")

Texts = Union[str, list]        # one text for every row, or one per row


@dataclass
class MessageGroup:
    """Messages that share how they are addressed: topic and key are one text for all, or one per message."""
    topic: Texts
    values: list                # message texts
    key: Optional[Texts] = None
    rows: Optional[list] = None  # rows in each message (None: one each)

    @property
    def row_count(self) -> int:
        return len(self.values) if self.rows is None else sum(self.rows)


def row_objects(rows: AggregatedRows, fmt: LineFormat, writer_id: str) -> list:
    """The JSON object of every row, writer_id last (print's JSON line builder, then one C-level replace)."""
    lines = fmt.lines(rows)
    if not lines:
        return []
    text = "\n".join(lines) + "\n"
    text = text.replace("}\n", f', "writer_id": "{writer_id}"}}\n')
    out = text.split("\n")
    out.pop()
    return out


def marker_init(writer_id: str) -> str:
    return f'{{"event_type": "purge_init", "writer_id": "{writer_id}"}}'


def marker_close(writer_id: str, purged: int, total: int, duration: int) -> str:
    return (f'{{"event_type": "purge_close", "writer_id": "{writer_id}", "purged_entries": {purged}, '
            f'"total_entries": {total}, "duration": {duration}}}')


def _variable_texts(rows: AggregatedRows, name: str, opts: RenderOptions) -> Texts:
    if name in _ZERO_VARIABLES:
        return "0"
    if name in _ADDRESS_VARIABLES:
        if name not in rows.primitives:
            return "null"
        texts = primitive_values(rows, name, opts)
        return list(map(str.translate, texts, repeat(_UNDERSCORES)))
    primitive = _NUMBER_VARIABLES[name]
    if primitive not in rows.primitives:
        return "0"
    return list(map(str, int_values(rows.column(primitive))))


def expand(template: str, rows: AggregatedRows, opts: RenderOptions = RenderOptions()) -> Texts:
    """A kafka_topic / kafka_partition_key template for every row: one text if it is the same for all."""
    if "$" not in template:
        return template
    names = _VARIABLES.findall(template)
    columns = [_variable_texts(rows, name, opts) for name in names]
    pieces = _VARIABLES.split(template)         # literal, name, literal, name, ..., literal
    fmt_parts = []
    per_row = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            fmt_parts.append(piece.replace("%", "%%"))
            continue
        col = columns[i // 2]
        if isinstance(col, str):
            fmt_parts.append(col.replace("%", "%%"))
        else:
            fmt_parts.append("%s")
            per_row.append(col)
    fmt = "".join(fmt_parts)
    if not per_row:
        return fmt.replace("%%", "%")
    return list(map(fmt.__mod__, zip(*per_row)))


def static_topic(template: str) -> str:
    """A template with every variable as if its primitive were not aggregated (for markers)."""
    return _VARIABLES.sub(lambda m: "null" if m.group(1) in _ADDRESS_VARIABLES else "0", template)


def pack(values: list, limit: int) -> tuple[list, list]:
    """kafka_multi_values: objects -> (messages of newline-terminated objects, rows per message).

    Objects are added to a message while it stays shorter than `limit` bytes (ASCII text: chars are bytes);
    an object too big for `limit` on its own travels alone (nfacctd's plugin exits on it).
    """
    n = len(values)
    if n == 0:
        return [], []
    sizes = np.fromiter(map(len, values), np.int64, n) + 1
    ends = np.concatenate(([0], np.cumsum(sizes)))
    messages, counts = [], []
    i = 0
    while i < n:
        j = max(int(np.searchsorted(ends, ends[i] + limit, side="left")) - 1, i + 1)
        messages.append("\n".join(values[i:j]) + "\n")
        counts.append(j - i)
        i = j
    return messages, counts


def _grouped(labels: list) -> list[np.ndarray]:
    """Row indices of each distinct label, in first-seen order of the sorted labels (stable within a label)."""
    _, inverse = np.unique(np.array(labels, dtype=object), return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1]])
    return np.split(order, starts[1:])


def plan(rows: AggregatedRows, fmt: LineFormat, writer_id: str, topic: str, partition_key: Optional[str],
         multi_values: int) -> list[MessageGroup]:
    """The messages of a chunk of rows, grouped by how they are addressed."""
    if len(rows) == 0:
        return []
    values = row_objects(rows, fmt, writer_id)
    topics = expand(topic, rows, fmt.opts)
    keys = expand(partition_key, rows, fmt.opts) if partition_key else None
    if not multi_values:
        return [MessageGroup(topics, values, keys)]
    if isinstance(topics, str) and not isinstance(keys, list):
        messages, counts = pack(values, multi_values)
        return [MessageGroup(topics, messages, keys, counts)]
    if isinstance(topics, list) and isinstance(keys, list):
        labels = list(map(add, topics, map("\0".__add__, keys)))
    else:
        labels = topics if isinstance(topics, list) else keys
    groups = []
    values_arr = np.array(values, dtype=object)
    for idx in _grouped(labels):
        first = int(idx[0])
        messages, counts = pack(values_arr[idx].tolist(), multi_values)
        groups.append(MessageGroup(topics if isinstance(topics, str) else topics[first], messages,
                                   keys[first] if isinstance(keys, list) else keys, counts))
    return groups


def rows_in_message(value: bytes) -> int:
    """Rows in a message text (markers: 0): for delivery failures, the slow path."""
    return value.count(PURGE_EVENT.encode()) if value else 0
