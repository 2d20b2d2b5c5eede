"""Per-shard counters: per exporter (from the decoders) and per shard; saved as JSON for `stats` and tests.

The file (<runtime_dir>/stats/shard-N.json) is read by engine/ops/stats_model.py.  Counters are
cumulative over the shard's restarts: a restarted shard finds its predecessor's file (the runtime
dir is new at every engine start) and adds its counters to its own; `starts` counts incarnations.
Gauges (pending_sets_now, pending_bytes_now) are not carried over.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Optional

from ..schema import IPV4_MAPPED_PREFIX


def exporter_text(addr16: bytes) -> str:
    if addr16[:12] == IPV4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(addr16[12:]))
    return str(ipaddress.IPv6Address(addr16))


CARRIED = ("packets", "batches", "records_decoded", "records_from_bus", "records_offered")
# kernel_drops is not carried: it is the kernel's own counter of the socket, which the supervisor holds across
# a shard's restarts (like the rings' counters in shared memory), so every incarnation reads the whole count.


def load_previous(path: Optional[str]) -> dict:
    """The counters a previous incarnation of this shard saved at path ({} when none or unreadable)."""
    if not path:
        return {}
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


class ShardStats:
    def __init__(self, shard_id: int, path: Optional[str]) -> None:
        self.shard_id = shard_id
        self.path = path
        self.exporters: dict = {}          # addr16 -> ExporterCounters
        self.packets = 0
        self.batches = 0
        self.kernel_drops = 0
        self.rings: dict[str, dict] = {}
        self.ring_groups: list[list[str]] = []  # per plugin: its rings (one per worker); together offered each record
        self.enrich: dict[str, int] = {}   # allow file / pre_tag_map counters (engine/enrich ShardStage)
        self.records_decoded = 0           # records out of the decoders (and released by bus templates)
        self.records_from_bus = 0          # of those, released by templates from the bus (not in exporter flows)
        self.records_offered = 0           # records offered to each of this shard's rings (after enrichment)
        self.pending_sets_now = 0          # data sets waiting for their template now (gauge)
        self.pending_bytes_now = 0
        self.base = load_previous(path)    # the counters of this shard's previous incarnations

    def add_decode(self, counters: dict, packets: int) -> None:
        self.packets += packets
        self.batches += 1
        self._merge(counters)

    def add_expired(self, counters: dict) -> None:
        self._merge(counters)

    def _merge(self, counters: dict) -> None:
        for addr, c in counters.items():
            mine = self.exporters.get(addr)
            if mine is None:
                self.exporters[addr] = c
            else:
                mine.add(c)

    def as_dict(self) -> dict:
        base = self.base
        exporters = {name: dict(c) for name, c in base.get("exporters", {}).items()}
        for a, c in self.exporters.items():
            mine = exporters.setdefault(exporter_text(a), {})
            for k, v in asdict(c).items():
                mine[k] = mine.get(k, 0) + v
        enrich = dict(base.get("enrich", {}))
        for k, v in self.enrich.items():
            enrich[k] = enrich.get(k, 0) + v
        return {
            "shard": self.shard_id,
            "pid": os.getpid(),
            "time": time.time(),
            "starts": base.get("starts", 0) + 1,
            **{k: base.get(k, 0) + getattr(self, k) for k in CARRIED},
            "kernel_drops": self.kernel_drops,
            "pending_sets_now": self.pending_sets_now,
            "pending_bytes_now": self.pending_bytes_now,
            "rings": self.rings,            # shared-memory counters: they outlive a shard's restart by themselves
            "ring_groups": self.ring_groups,
            "enrich": enrich,
            "exporters": exporters,
        }

    def save(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.as_dict(), f)
        os.replace(tmp, self.path)

    def log_summary(self, log: logging.Logger, final: bool = False) -> None:
        d = self.as_dict()
        what = "final counters" if final else "counters"
        drops = sum(r.get("dropped_records", 0) for r in d["rings"].values())
        log.info("shard %d %s: packets=%d batches=%d kernel_drops=%d ring_dropped_records=%d",
                 self.shard_id, what, d["packets"], d["batches"], d["kernel_drops"], drops)
        if d["enrich"]:
            log.info("shard %d %s, enrichment: %s", self.shard_id, what,
                     " ".join(f"{k}={v}" for k, v in sorted(d["enrich"].items())))
        for name, c in sorted(d["exporters"].items()):
            log.info("shard %d %s, exporter %s: %s", self.shard_id, what, name,
                     " ".join(f"{k}={v}" for k, v in c.items()))
