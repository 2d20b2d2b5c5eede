"""The memory plugin process: drain the rings into a MemoryTable and serve queries on imt_path.

Signals as runner.plugin_main: SIGINT ignored, SIGTERM drains every ring then
exits 0 (the socket is unlinked), SIGUSR1 logs the counters.  Counters are
saved as JSON at stats_path about once a second.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Optional

from ...config.keys_memory import MemoryOptions
from ...config.tree import CoreConfig, PluginConfig
from ...enrich import PluginStage
from ...proc import handlers_installed
from .server import QueryServer
from .table import MemoryTable, entry_bytes

IDLE_SLEEP = 0.01           # seconds to sleep when every ring is empty and no query is pending
READ_CHUNK = 1 << 18        # records taken from one ring per read
STATS_EVERY = 1.0


def table_for(plugin: PluginConfig) -> MemoryTable:
    """The plugin's table, bounded by imt_mem_pools_number * imt_mem_pools_size bytes of entries."""
    options = plugin.options if isinstance(plugin.options, MemoryOptions) else MemoryOptions()
    table = MemoryTable(tuple(plugin.aggregate), None, bool(plugin.timestamps_secs))
    limit = options.max_bytes()
    if limit is not None:
        table.max_rows = max(1, limit // entry_bytes(table.spec))
    return table


class MemoryLoop:
    """State of one memory plugin process; step() is one loop turn."""

    def __init__(self, plugin: PluginConfig, rings: list, server: Optional[QueryServer],
                 stats_path: Optional[str] = None, log: Optional[logging.Logger] = None,
                 core: Optional[CoreConfig] = None) -> None:
        self.plugin = plugin
        self.rings = rings
        self.server = server
        self.stats_path = stats_path
        self.log = log or logging.getLogger(f"pmengine.plugin.{plugin.name}")
        self.table = table_for(plugin)
        self.stage = PluginStage(plugin, core or CoreConfig(), self.log)
        self.reload_requested = False
        self.records = 0
        self.stop_requested = False
        self.stats_requested = False
        self._stats_due = 0.0

    def drain_once(self) -> int:
        got = 0
        for ring in self.rings:
            batch = ring.read(READ_CHUNK)
            if len(batch):
                got += len(batch)
                batch = self.stage.apply(batch)
                if len(batch):
                    self.table.add(batch)
        self.records += got
        return got

    def counters(self) -> dict:
        rings = {}
        for ring in self.rings:
            try:
                rings[ring.name] = ring.counters()
            except Exception:               # a closed ring
                continue
        t = self.table
        return {
            "plugin": self.plugin.name, "type": self.plugin.type, "pid": os.getpid(), "time": time.time(),
            "records": self.records, "rows": len(t.keys), "max_rows": t.max_rows, "table_bytes": t.nbytes,
            "dropped_keys": t.dropped_keys, "dropped_flows": t.dropped_flows,
            "dropped_packets": t.dropped_packets, "dropped_bytes": t.dropped_bytes,
            "queries": self.server.queries if self.server else 0,
            "query_errors": self.server.query_errors if self.server else 0,
            "rings": rings,
        }

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

    def log_counters(self) -> None:
        c = self.counters()
        drops = sum(r.get("dropped_records", 0) for r in c["rings"].values())
        self.log.info("plugin %s: records=%d rows=%d dropped_keys=%d queries=%d query_errors=%d "
                      "ring_dropped_records=%d", c["plugin"], c["records"], c["rows"], c["dropped_keys"],
                      c["queries"], c["query_errors"], drops)

    def step(self) -> bool:
        """One loop turn; False once a requested stop is complete."""
        if self.stop_requested:
            while self.drain_once():
                pass
            return False
        got = self.drain_once()
        served = self.server.poll(self.table) if self.server else 0
        if self.table.dropped_keys and not getattr(self, "_full_logged", False):
            self._full_logged = True
            self.log.warning("memory table full (%s rows): new keys are dropped", self.table.max_rows)
        if self.reload_requested:
            self.reload_requested = False
            self.stage.reload()
        if self.stats_requested:
            self.stats_requested = False
            self.log_counters()
        now = time.time()
        if now >= self._stats_due:
            self.save_stats()
            self._stats_due = now + STATS_EVERY
        if not got and not served:
            time.sleep(IDLE_SLEEP)
        return True

    def run(self) -> None:
        try:
            while self.step():
                pass
        finally:
            self.save_stats()
            if self.server:
                self.server.close()
            for ring in self.rings:
                try:
                    ring.close()
                except Exception as e:
                    self.log.warning("closing ring %s: %s", getattr(ring, "name", "?"), e)


def memory_main(plugin: PluginConfig, core: CoreConfig, ring_names: list[str],
                stats_path: Optional[str] = None) -> None:
    """Entry point of a memory plugin process (started with multiprocessing 'spawn')."""
    from ...ipc.ring import Ring
    log = logging.getLogger(f"pmengine.plugin.{plugin.name}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    options = plugin.options if isinstance(plugin.options, MemoryOptions) else MemoryOptions()
    rings = [Ring.attach(name) for name in ring_names]
    try:
        server = QueryServer(options.path, 0o666 & ~core.files_umask, log)   # files_umask 077: 0600
    except OSError as e:                # in use, not a socket, no such folder: a restart cannot fix it
        from ...config import ConfigError
        raise ConfigError(f"plugin '{plugin.name}': cannot serve queries on imt_path {options.path}: {e}",
                          "imt_path") from None
    loop = MemoryLoop(plugin, rings, server, stats_path, log=log, core=core)

    def on_term(_sig, _frame):
        loop.stop_requested = True

    def on_usr1(_sig, _frame):
        loop.stats_requested = True

    signal.signal(signal.SIGTERM, on_term)
    def on_usr2(_sig, _frame):
        loop.reload_requested = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)
    handlers_installed()
    log.info("memory plugin %s started: aggregate %s, imt_path %s, %s, %d ring(s)", plugin.name,
             ", ".join(plugin.aggregate), options.path,
             f"at most {loop.table.max_rows} rows" if loop.table.max_rows else "unbounded", len(rings))
    loop.run()
    log.info("memory plugin %s stopped: %d records, %d rows, %d queries", plugin.name, loop.records,
             len(loop.table.keys), server.queries)
