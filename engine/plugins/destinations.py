"""Where a purge's rows go when the destination name has variables: print_output_file, sql_table, ...

A name may hold strftime variables (taken from each row's bin, stamp_inserted, with history, else from the
purge time) and $peer_src_ip ("10.0.0.1" -> "10_0_0_1", "null" when peer_src_ip is not aggregated), $ref
(refresh time), $hst (history seconds), $tzone.  Rows are split into one group per expanded name, vectorised.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional

import numpy as np

from ..config.tree import PluginConfig
from .aggregate import AggregatedRows
from .render import peer_text


def expand_name(template: str, when_s: Optional[int], peer: Optional[str], plugin: PluginConfig) -> str:
    """The destination name for a bin time (None: no strftime) and a $peer_src_ip text."""
    out = template
    if when_s is not None and "%" in out:
        tm = time.gmtime(when_s) if plugin.timestamps_utc else time.localtime(when_s)
        out = time.strftime(out, tm)
    if "$" in out:
        tm = time.localtime(when_s if when_s is not None else time.time())
        off = 0 if plugin.timestamps_utc else tm.tm_gmtoff
        tzone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
        out = (out.replace("$peer_src_ip", peer or "null").replace("$ref", str(plugin.refresh_time))
               .replace("$hst", str(plugin.history_secs)).replace("$tzone", tzone))
    return out


def split_by_name(template: str, rows: AggregatedRows,
                  plugin: PluginConfig) -> Iterator[tuple[str, np.ndarray, int, Optional[str]]]:
    """(expanded name, row indices, time it was expanded with, $peer_src_ip text) per destination."""
    by_time = "%" in template and rows.stamp_inserted is not None
    by_peer = "$peer_src_ip" in template and "peer_src_ip" in rows.primitives
    if not (by_time or by_peer):
        yield expand_name(template, rows.stamp_updated, None, plugin), np.arange(len(rows)), rows.stamp_updated, None
        return
    stamps = rows.stamp_inserted if by_time else np.zeros(len(rows), np.int64)
    peers, peer_ids = [None], np.zeros(len(rows), np.intp)
    if by_peer:
        packed = np.ascontiguousarray(rows.column("peer_src_ip")).view("V16").ravel()
        uniq, peer_ids = np.unique(packed, return_inverse=True)
        peer_ids = peer_ids.ravel()
        peers = [t.replace(".", "_").replace(":", "_") for t in peer_text(uniq.view(np.uint8).reshape(-1, 16))]
    order = np.lexsort((peer_ids, stamps))
    s_sorted, p_sorted = stamps[order], peer_ids[order]
    starts = np.flatnonzero(np.r_[True, (s_sorted[1:] != s_sorted[:-1]) | (p_sorted[1:] != p_sorted[:-1])])
    for idx in np.split(order, starts[1:]):
        first = idx[0]
        when = int(stamps[first]) if by_time else rows.stamp_updated
        peer = peers[peer_ids[first]]
        yield expand_name(template, when, peer, plugin), idx, when, peer
