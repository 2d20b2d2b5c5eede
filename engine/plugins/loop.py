"""What every plugin process loop shares: draining its rings through the plugin's enrichment stage,
requests set by signal handlers, the stats JSON file, and closing the rings.

Subclasses (runner.PluginLoop for print/pgsql/kafka, memory.plugin.MemoryLoop) say what a batch becomes
(consume), what their counters are (counters, log_counters) and what one loop turn does (step).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Optional

import numpy as np

from ..config.tree import CoreConfig, PluginConfig
from ..enrich import PluginStage
from ..proc import beat, busy, handlers_installed

READ_CHUNK = 1 << 14        # records taken from one ring per read (4 MiB: the copy is still in cache when aggregated)
STATS_EVERY = 1.0           # seconds between stats file refreshes
RING_RATE_BOUND = 1_000_000  # records/s one ring is assumed to take at most, when bounding the idle sleep


class IdlePause:
    """How long a loop sleeps after a turn that found its rings empty: `shortest` after a turn that read
    records, twice as long per empty turn after that, up to `longest` -- and never longer than half the
    smallest ring takes to fill at RING_RATE_BOUND, nor at the rate records were read lately (rises at once,
    falls slowly).  Every wakeup of an idle process costs ~0.1-0.3 ms of CPU on a VM (cold caches); a fixed
    20 ms sleep cost an idle plugin ~1% of a core."""

    FALL = 0.3                  # weight of a lower newest rate in the estimate
    WINDOW_S = 0.1              # the rate is measured over at least this long (records a turn reads piled up
                                # since before the previous turn: back-to-back turns would inflate it)

    def __init__(self, shortest: float, longest: float, ring_capacities: list[int]) -> None:
        self.ring = min(ring_capacities, default=0)
        bound = self.ring / 2 / RING_RATE_BOUND
        self.shortest = shortest
        self.longest = max(shortest, min(longest, bound)) if ring_capacities else shortest
        self.now = shortest
        self.rate = 0.0                 # records/s read lately
        self.window_start = 0.0         # the current measuring window: since when, how many records
        self.window_records = 0

    def busy(self, records: int = 0, now: float = 0.0) -> None:
        """A turn read `records` (at monotonic time `now`)."""
        self.now = self.shortest
        if not records:
            return
        if not self.window_start:
            self.window_start = now
            return
        self.window_records += records
        span = now - self.window_start
        if span >= self.WINDOW_S:
            rate = self.window_records / span
            self.rate = rate if rate >= self.rate else self.rate + self.FALL * (rate - self.rate)
            self.window_start, self.window_records = now, 0

    def pause(self) -> float:
        if self.rate > 0 and self.ring:
            return max(0.001, min(self.now, self.ring / 2 / self.rate))
        return self.now

    def sleep(self) -> None:
        time.sleep(self.pause())
        self.now = min(self.longest, self.now * 2)


class RingLoop:
    def __init__(self, plugin: PluginConfig, core: Optional[CoreConfig], rings: list, stats_path: Optional[str],
                 log: Optional[logging.Logger]) -> None:
        self.plugin = plugin
        self.rings = rings
        self.stats_path = stats_path
        self.log = log or logging.getLogger(f"pmengine.plugin.{plugin.name}")
        self.stage = PluginStage(plugin, core or CoreConfig(), self.log)
        self.records = 0
        self.stop_requested = False     # SIGTERM
        self.stats_requested = False    # SIGUSR1
        self.reload_requested = False   # SIGUSR2
        self._stats_due = 0.0

    def consume(self, batch: np.ndarray) -> None:
        raise NotImplementedError

    def counters(self) -> dict:
        raise NotImplementedError

    def log_counters(self) -> None:
        raise NotImplementedError

    def drain_once(self) -> int:
        """Read every ring once through the enrichment stage into consume(); records read."""
        got = 0
        for ring in self.rings:
            beat()                      # the supervisor's hang watch: once per ring read
            view = ring.read_view(READ_CHUNK)
            n = len(view)
            if n:
                got += n
                batch = self.stage.apply(view)
                if len(batch):
                    self.consume(batch)     # consumers copy what they keep (keys, counters): the view is released
                del view, batch
                ring.release(n)
        self.records += got
        return got

    def ring_backlog(self) -> int:
        """Records waiting in the rings now."""
        return sum(int(ring.pending()) for ring in self.rings)

    def ring_capacities(self) -> list[int]:
        return [int(getattr(ring, "capacity", 0)) for ring in self.rings]

    def ring_counters(self) -> dict:
        rings = {}
        for ring in self.rings:
            try:
                rings[ring.name] = ring.counters()
            except Exception:           # a closed ring
                continue
        return rings

    def base_counters(self) -> dict:
        return {"plugin": self.plugin.name, "worker": self.plugin.worker, "workers": self.plugin.workers,
                "type": self.plugin.type, "pid": os.getpid(), "time": time.time(),
                "records": self.records, "rings": self.ring_counters(), "enrich": dict(self.stage.counters)}

    def ring_drops(self, counters: dict) -> int:
        return sum(r.get("dropped_records", 0) for r in counters["rings"].values())

    def save_stats(self) -> None:
        if not self.stats_path:
            return
        try:
            tmp = f"{self.stats_path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.counters(), f)
            os.replace(tmp, self.stats_path)
        except OSError as e:
            self.log.warning("cannot save stats to %s: %s", self.stats_path, e)

    def serve_requests(self, now: float) -> None:
        """Map reloads and counter logs asked for by signals; the stats file about once a second."""
        if self.reload_requested:
            self.reload_requested = False
            busy(60.0)
            self.stage.reload()
            busy(0.0)
        if self.stats_requested:
            self.stats_requested = False
            self.log_counters()
        if now >= self._stats_due:
            self.save_stats()
            self._stats_due = now + STATS_EVERY

    def close_rings(self) -> None:
        for ring in self.rings:
            try:
                ring.close()
            except Exception as e:
                self.log.warning("closing ring %s: %s", getattr(ring, "name", "?"), e)


def install_signals(loop: RingLoop) -> None:
    """SIGINT ignored (the supervisor coordinates), SIGTERM/SIGUSR1/SIGUSR2 set the loop's requests; then tell
    the supervisor the handlers are in place (it holds SIGTERM back until then)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(_sig, _frame):
        loop.stop_requested = True

    def on_usr1(_sig, _frame):
        loop.stats_requested = True

    def on_usr2(_sig, _frame):
        loop.reload_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)
    handlers_installed()
