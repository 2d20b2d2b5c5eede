"""Per-shard counters: per exporter (from the decoders) and per shard; saved as JSON for `stats` and tests."""
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


class ShardStats:
    def __init__(self, shard_id: int, path: Optional[str]) -> None:
        self.shard_id = shard_id
        self.path = path
        self.exporters: dict = {}          # addr16 -> ExporterCounters
        self.packets = 0
        self.batches = 0
        self.kernel_drops = 0
        self.rings: dict[str, dict] = {}
        self.enrich: dict[str, int] = {}   # allow file / pre_tag_map counters (engine/enrich ShardStage)

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
        return {
            "shard": self.shard_id,
            "pid": os.getpid(),
            "time": time.time(),
            "packets": self.packets,
            "batches": self.batches,
            "kernel_drops": self.kernel_drops,
            "rings": self.rings,
            "enrich": self.enrich,
            "exporters": {exporter_text(a): asdict(c) for a, c in self.exporters.items()},
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
