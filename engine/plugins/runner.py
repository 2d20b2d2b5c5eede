"""The plugin process main loop: drain the rings, aggregate, purge to the writer every refresh_time.

Refreshes are aligned on the wall clock like nfacctd's (a 10 s refresh purges
at :00, :10, :20 ...).  Signals: SIGINT is ignored (the supervisor
coordinates), SIGTERM asks for a clean stop (drain every ring, final purge,
exit 0), SIGUSR1 logs the counters, SIGUSR2 reloads the maps.  A writer error is logged and counted,
never fatal.  Counters are saved as JSON at stats_path for `pmengine stats`.
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from typing import Optional

from ..config.tree import CoreConfig, PluginConfig
from .aggregate import Aggregator
from ..proc import busy
from ..shards.stats import load_previous
from .loop import IdlePause, RingLoop, install_signals

IDLE_SLEEP = 0.05           # seconds to sleep when every ring is empty (loop.IdlePause: up to IDLE_SLEEP_MAX)
IDLE_SLEEP_MAX = 0.1
PURGE_BUSY_S = 600.0        # longest purge (sink retries included) before the supervisor calls it hung
FOLD_BACKLOG_DIVISOR = 8     # a due fold of the spill buffer waits until the rings are at most 1/8 full


def next_refresh(now: float, refresh: int) -> float:
    """The next wall-clock multiple of refresh seconds after now."""
    refresh = max(1, int(refresh))
    return (int(now) // refresh + 1) * refresh


def make_writer(plugin: PluginConfig, core: CoreConfig, log: logging.Logger):
    from . import WRITERS
    target = WRITERS.get(plugin.type)
    if target is None:
        raise ValueError(f"plugin type {plugin.type!r} has no writer")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(plugin, core, log)


class PluginLoop(RingLoop):
    """State of one plugin process; run() is the loop, the rest is testable on its own."""

    def __init__(self, plugin: PluginConfig, core: CoreConfig, rings: list, stats_path: Optional[str] = None,
                 writer=None, log: Optional[logging.Logger] = None) -> None:
        super().__init__(plugin, core, rings, stats_path, log)
        self.pause = IdlePause(IDLE_SLEEP, IDLE_SLEEP_MAX, self.ring_capacities())
        self.aggregator = Aggregator(plugin, core)
        # a due fold runs once the rings hold at most this many records (a fold can wait: compaction_due)
        self.fold_backlog = min(self.ring_capacities(), default=0) // FOLD_BACKLOG_DIVISOR
        self.writer = writer or make_writer(plugin, core, self.log)
        self.purges = 0
        self.purge_errors = 0
        self.rows_purged = 0
        self.next_purge = next_refresh(time.time(), plugin.refresh_time)
        self.account_restart()

    def account_restart(self) -> None:
        """A restarted plugin (its predecessor killed or crashed) counts what the predecessor had read from the
        rings but not purged: it was lost with that process.  The rings' read counters live in shared memory and
        the predecessor saved `records_flushed` (ring records read up to its last purge) right after each purge."""
        self.read_base = sum(r.get("read_records", 0) for r in self.ring_counters().values())
        self.records_flushed = self.read_base
        self.records_lost_in_restart = 0
        previous = load_previous(self.stats_path)
        if not previous:
            return
        self.records_lost_in_restart = int(previous.get("records_lost_in_restart", 0))
        lost = self.read_base - int(previous.get("records_flushed", 0))
        if lost > 0:
            self.records_lost_in_restart += lost
            self.log.error("plugin %s restarted: %d records its predecessor had read but not purged are lost "
                           "(%d in all)", self.plugin.name, lost, self.records_lost_in_restart)

    def consume(self, batch) -> None:
        self.aggregator.add(batch)

    def purge(self) -> None:
        """Hand everything aggregated to the writer, with nfacctd-like log lines."""
        pid = os.getpid()
        started = time.time()
        self.log.info("*** Purging cache - START (PID: %d) ***", pid)
        busy(PURGE_BUSY_S)              # the supervisor's hang watch: a big purge is not a hang
        rows = self.aggregator.purge()
        self.writer.purge_round = int(self.next_purge)     # the refresh boundary: the same in every worker
        try:
            written = self.writer.write(rows)
        except Exception as e:          # a writer bug or I/O problem must not kill the plugin
            written = 0
            self.purge_errors += 1
            self.log.error("purge failed: %s", e, exc_info=True)
        busy(0.0)
        self.purges += 1
        self.rows_purged += len(rows)
        self.records_flushed = self.read_base + self.records
        self.save_stats()               # at once: a successor must know what reached the writer
        elapsed = str(int(time.time() - started)) if len(rows) else "X"
        self.log.info("*** Purging cache - END (PID: %d, QN: %d/%d, ET: %s) ***", pid, written, len(rows), elapsed)

    def poll_writer(self) -> None:
        """Give the writer a turn between purges (retries, delivery reports), if it wants one.

        A writer's poll() must return quickly (no blocking I/O): the loop must keep draining the rings.
        """
        poll = getattr(self.writer, "poll", None)
        if poll is None:
            return
        try:
            poll()
        except Exception as e:          # a sink problem must not kill the plugin
            self.log.error("writer poll failed: %s", e, exc_info=True)

    def counters(self) -> dict:
        return {
            **self.base_counters(), "records": self.read_base + self.records,   # all incarnations: = rings read
            "records_flushed": self.records_flushed, "records_lost_in_restart": self.records_lost_in_restart,
            "groups_pending": self.aggregator.rows, "purges": self.purges,
            "rows_purged": self.rows_purged, "purge_errors": self.purge_errors,
            "rows_written": getattr(self.writer, "rows_written", 0),
            "write_errors": getattr(self.writer, "write_errors", 0),
            "hash_collisions": self.aggregator.collisions, "writer": self._writer_counters(),
        }

    def _writer_counters(self) -> dict:
        """The writer's own counters (sink failures, buffered rows, deliveries...), when it has any."""
        counters = getattr(self.writer, "counters", None)
        if counters is None:
            return {}
        try:
            return dict(counters())
        except Exception as e:          # counters are diagnostics: never fatal
            self.log.warning("writer counters: %s", e)
            return {}

    def log_counters(self) -> None:
        c = self.counters()
        drops = self.ring_drops(c)
        self.log.info("plugin %s: records=%d purges=%d rows_written=%d write_errors=%d groups_pending=%d "
                      "ring_dropped_records=%d", c["plugin"], c["records"], c["purges"], c["rows_written"],
                      c["write_errors"], c["groups_pending"], drops)

    def step(self) -> bool:
        """One loop turn; False once a requested stop is complete."""
        if self.stop_requested:
            while self.drain_once():
                pass
            self.purge()
            return False
        got = self.drain_once()
        if self.aggregator.compaction_due and self.ring_backlog() <= self.fold_backlog:
            self.aggregator.compact_if_due()      # the fold's stall starts with (nearly) empty rings
        self.poll_writer()
        now = time.time()
        if now >= self.next_purge:
            self.purge()
            self.next_purge = next_refresh(now, self.plugin.refresh_time)
        elif self.aggregator.full:
            self.log.warning("cache full (%d groups): purging early", self.aggregator.rows)
            self.purge()
        self.serve_requests(now)
        if got:
            self.pause.busy(got, time.monotonic())
        else:
            self.pause.sleep()
        return True

    def run(self) -> None:
        try:
            while self.step():
                pass
        finally:
            self.save_stats()
            self.close_rings()
            close = getattr(self.writer, "close", None)
            if close:
                close()


def plugin_main(plugin: PluginConfig, core: CoreConfig, ring_names: list[str],
                stats_path: Optional[str] = None, shared_dir: Optional[str] = None) -> None:
    """Entry point of a plugin process (started with multiprocessing 'spawn').  With plugin_workers > 1 this is
    worker plugin.worker of plugin.workers; shared_dir holds what the workers' writers share (PurgeRounds)."""
    from ..ipc.ring import Ring
    label = plugin.label
    log = logging.getLogger(f"pmengine.plugin.{label}")
    rings = [Ring.attach(name) for name in ring_names]
    loop = PluginLoop(plugin, core, rings, stats_path, log=log)
    coordinate = getattr(loop.writer, "coordinate", None)
    if plugin.workers > 1 and shared_dir and coordinate is not None:
        from .purge_rounds import PurgeRounds
        coordinate(PurgeRounds(shared_dir, plugin.name))
    install_signals(loop)
    log.info("%s plugin %s started: aggregate %s, refresh %ds, %d ring(s)", plugin.type, label,
             ", ".join(plugin.aggregate), plugin.refresh_time, len(rings))
    loop.run()
    log.info("%s plugin %s stopped: %d records, %d purges", plugin.type, label, loop.records, loop.purges)
