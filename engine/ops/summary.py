"""The stats model as readable key=value lines: one per total, shard, ring, plugin and exporter.

Written to the supervisor log on SIGUSR1 and printed by `pmengine stats` (without --json).
"""
from __future__ import annotations


def _kv(d: dict, skip: tuple[str, ...] = ()) -> str:
    parts = []
    for k, v in d.items():
        if k in skip or isinstance(v, (dict, list)) or v is None:
            continue
        parts.append(f"{k}={v}")
    return " ".join(parts)


def summary_lines(model: dict) -> list[str]:
    lines = [f"stats totals: {_kv(model['totals'])}"]
    for sid, s in model["shards"].items():
        enrich = "".join(f" {k}={v}" for k, v in sorted(s["enrich"].items()))
        lines.append(f"stats shard {sid}: {_kv(s)}{enrich}")
    for name, r in sorted(model["rings"].items()):
        lines.append(f"stats ring {name}: {_kv(r)}")
    for name, p in model["plugins"].items():
        sink = "".join(f" sink_{k}={v}" for k, v in sorted(p["sink"].items()))
        enrich = "".join(f" {k}={v}" for k, v in sorted(p["enrich"].items()))
        lines.append(f"stats plugin {name}: {_kv(p)}{sink}{enrich}")
    for name, e in sorted(model["exporters"].items()):
        lines.append(f"stats exporter {name}: {_kv(e)} shards={','.join(map(str, e['shards']))}")
    bal = model["balance"]
    lines.append("stats balance: ok" if bal["ok"] else f"stats balance: NOT OK: {'; '.join(bal['problems'])}")
    return lines
