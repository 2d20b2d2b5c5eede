"""One merged model of a running engine's counters, from the JSON files in <runtime_dir>/stats/.

Sources: shard-N.json (engine/shards/stats.py: per shard, per exporter, the shard's view of its rings)
and plugin-NAME.json (engine/plugins/loop.py base_counters + the plugin's counters: records, purges,
the writer's sink counters, the plugin's view of its rings).  build_model() is pure: files in, a
JSON-ready dict out:

    exporters  address -> counters summed over shards (+ "shards": where it was seen)
    shards     "N"     -> packets, kernel_drops, records decoded/offered, ring drops, balance
    rings      name    -> shard, plugin, written / dropped (shard's view), read (plugin's view), in flight
    plugins    name    -> records read, ring drops, records offered, sink counters, lost rows (a plugin with
                          plugin_workers > 1: one entry per worker process, NAME.w0, NAME.w1 ...)
    totals             -> the sums an operator looks at first
    balance            -> ok, problems: per shard flows decoded = records delivered to its rings;
                          per ring records offered = written + dropped + folded (shard
                          pre-aggregation, engine/shards/preaggregate.py), per plugin Σ offered over its
                          workers' rings = the shard's records delivered; per plugin records read = Σ rings read

Shard and plugin files are saved about once a second, each at its own moment: while traffic flows, a
ring's read count (plugin file) may run ahead of its written count (shard file); `in_flight` is then
clamped at 0.  The balance holds exactly once traffic stops and the files are refreshed.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

from ..config.tree import worker_label

EXPORTER_COUNTERS = ("packets", "bytes", "flows", "seq_gaps", "decode_errors", "no_template_sets", "pending_sets",
                     "pending_expired_sets", "templates", "options_records", "samples", "counter_samples",
                     "unknown_samples", "unknown_records", "frame_bytes")
SHARD_COUNTERS = ("packets", "batches", "kernel_drops", "records_decoded", "records_from_bus", "records_offered")
SHARD_GAUGES = ("pending_sets_now", "pending_bytes_now", "starts")
WRITER_COUNTERS = ("written_records", "written_batches", "dropped_records", "dropped_batches", "folded_records")
RING_COUNTERS = ("written_records", "dropped_records", "dropped_batches", "folded_records", "read_records", "resyncs")
PLUGIN_COUNTERS = ("purges", "rows_purged", "purge_errors", "rows_written", "write_errors", "hash_collisions",
                   "records_lost_in_restart")
# sink counters (the writer's counters(), memory plugin's table) that are levels, not running totals
SINK_GAUGES = ("rows_buffered", "queued", "rows", "max_rows", "table_bytes", "groups_pending", "purges_waiting")
# sink counters of rows that will never reach the sink
SINK_LOST = ("rows_dropped", "rows_failed", "rows_lost_at_exit", "failed_rows", "dropped_rows", "lost_rows",
             "dropped_keys")


def read_stats_dir(runtime_dir: str) -> dict[str, dict]:
    """{file stem: parsed JSON} of <runtime_dir>/stats/*.json; unreadable or half-written files are skipped."""
    folder = os.path.join(runtime_dir, "stats")
    out: dict[str, dict] = {}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(d, dict):
            out[name[:-5]] = d
    return out


def load_model(runtime_dir: str) -> dict:
    return build_model(read_stats_dir(runtime_dir), runtime_dir)


def _int(d: dict, key: str) -> int:
    v = d.get(key, 0)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _add(into: dict, key: str, value: int) -> None:
    into[key] = into.get(key, 0) + value


def build_model(files: dict[str, dict], runtime_dir: Optional[str] = None) -> dict:
    shard_files = sorted((d for n, d in files.items() if n.startswith("shard-")), key=lambda d: _int(d, "shard"))
    plugin_files = sorted((d for n, d in files.items() if n.startswith("plugin-")), key=lambda d: str(d.get("plugin")))
    exporters: dict[str, dict] = {}
    shards: dict[str, dict] = {}
    rings: dict[str, dict] = {}
    problems: list[str] = []
    for d in shard_files:
        sid = _int(d, "shard")
        s = {k: _int(d, k) for k in SHARD_COUNTERS + SHARD_GAUGES}
        s["pid"] = _int(d, "pid")
        s["enrich"] = dict(d.get("enrich") or {})
        flows = 0
        per_exporter = d.get("exporters") or {}
        for name, c in per_exporter.items():
            mine = exporters.setdefault(name, {k: 0 for k in EXPORTER_COUNTERS} | {"shards": []})
            for k in EXPORTER_COUNTERS:
                _add(mine, k, _int(c, k))
            mine["shards"].append(sid)
            flows += _int(c, "flows")
        for k in ("flows", "decode_errors", "seq_gaps", "no_template_sets", "pending_expired_sets"):
            s[k] = sum(_int(c, k) for c in per_exporter.values())
        s["exporters"] = len(per_exporter)
        s["ring_dropped_records"] = 0
        for rname, rc in (d.get("rings") or {}).items():
            ring = rings.setdefault(rname, {"shard": sid, "plugin": None})
            for k in WRITER_COUNTERS:
                ring[k] = _int(rc, k)
            ring["offered_records"] = ring["written_records"] + ring["dropped_records"] + ring["folded_records"]
            s["ring_dropped_records"] += ring["dropped_records"]
        # per plugin, its rings (one per worker: plugin_workers) were offered every record the shard delivered
        for group in d.get("ring_groups") or [[n] for n in (d.get("rings") or {})]:
            offered = sum(rings[n]["offered_records"] for n in group if n in rings)
            if offered != s["records_offered"]:
                problems.append(f"shard {sid}: ring{'s' if len(group) > 1 else ''} {', '.join(group)} "
                                f"{'were' if len(group) > 1 else 'was'} offered {offered} records, "
                                f"the shard delivered {s['records_offered']}")
        if flows + s["records_from_bus"] != s["records_decoded"]:
            problems.append(f"shard {sid}: exporters' flows {flows} + released by bus templates "
                            f"{s['records_from_bus']} != records decoded {s['records_decoded']}")
        shards[str(sid)] = s
    plugins: dict[str, dict] = {}
    for d in plugin_files:
        name = worker_label(str(d.get("plugin")), _int(d, "worker"), _int(d, "workers") or 1)
        p = {"type": d.get("type"), "pid": _int(d, "pid"), "records": _int(d, "records")}
        if (_int(d, "workers") or 1) > 1:
            p.update(plugin=str(d.get("plugin")), worker=_int(d, "worker"), workers=_int(d, "workers"))
        for k in PLUGIN_COUNTERS:
            p[k] = _int(d, k)
        p["groups_pending"] = _int(d, "groups_pending")
        sink = {k: v for k, v in (d.get("writer") or {}).items() if isinstance(v, (int, float))}
        if d.get("type") == "memory":
            sink.update({k: _int(d, k) for k in ("rows", "max_rows", "table_bytes", "dropped_keys", "dropped_flows",
                                                  "queries", "query_errors") if k in d})
        p["sink"] = sink
        p["sink_lost_rows"] = sum(_int(sink, k) for k in SINK_LOST if k != "lost_rows") or _int(sink, "lost_rows")
        p["enrich"] = dict(d.get("enrich") or {})
        read = dropped = offered = written = 0
        for rname, rc in (d.get("rings") or {}).items():
            ring = rings.setdefault(rname, {"shard": None})
            ring["plugin"] = name
            ring["read_records"] = _int(rc, "read_records")
            ring["resyncs"] = _int(rc, "resyncs")
            if "written_records" not in ring:         # no shard file yet: the plugin's own view of the writer side
                for k in WRITER_COUNTERS:
                    ring[k] = _int(rc, k)
                ring["offered_records"] = ring["written_records"] + ring["dropped_records"] + ring["folded_records"]
            read += ring["read_records"]
            dropped += ring["dropped_records"]
            offered += ring["offered_records"]
            written += ring["written_records"]
        p.update(records_read=read, ring_dropped_records=dropped, records_offered=offered,
                 records_in_flight=max(0, written - read))
        if p["records"] != read:
            problems.append(f"plugin {name}: consumed {p['records']} records, its rings gave {read}")
        plugins[name] = p
    for ring in rings.values():
        ring.setdefault("read_records", 0)
        ring["in_flight"] = max(0, ring.get("written_records", 0) - ring["read_records"])
    totals = {k: sum(e[k] for e in exporters.values()) for k in
              ("packets", "flows", "bytes", "seq_gaps", "decode_errors", "no_template_sets", "pending_expired_sets")}
    totals["pending_sets_now"] = sum(s["pending_sets_now"] for s in shards.values())
    totals["kernel_drops"] = sum(s["kernel_drops"] for s in shards.values())
    totals["ring_dropped_records"] = sum(r.get("dropped_records", 0) for r in rings.values())
    totals["sink_lost_rows"] = sum(p["sink_lost_rows"] for p in plugins.values())
    totals["records_lost_in_restart"] = sum(p["records_lost_in_restart"] for p in plugins.values())
    lost = (files.get("supervisor") or {}).get("lost_in_flight_datagrams") or {}
    totals["datagrams_lost_in_dead_shards"] = sum(v for v in lost.values() if isinstance(v, int))
    totals["write_errors"] = sum(p["write_errors"] + p["purge_errors"] for p in plugins.values())
    return {"time": time.time(), "runtime_dir": runtime_dir, "totals": totals, "exporters": exporters,
            "shards": shards, "rings": rings, "plugins": plugins,
            "balance": {"ok": not problems, "problems": problems}}
