"""The memory plugin process: drain the rings into a MemoryTable and serve queries on imt_path.

Signals as runner.plugin_main: SIGINT ignored, SIGTERM drains every ring then
exits 0 (the socket is unlinked), SIGUSR1 logs the counters.  Counters are
saved as JSON at stats_path about once a second.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from ...config.keys_memory import MemoryOptions
from ...config.tree import CoreConfig, PluginConfig
from ..loop import IdlePause, RingLoop, install_signals
from .server import QueryServer
from .table import MemoryTable, entry_bytes

IDLE_SLEEP = 0.01           # seconds to sleep when every ring is empty and no query is pending (loop.IdlePause:
IDLE_SLEEP_MAX = 0.04       # doubling per empty turn up to IDLE_SLEEP_MAX: a query waits at most that long)


def table_for(plugin: PluginConfig) -> MemoryTable:
    """The plugin's table, bounded by imt_mem_pools_number * imt_mem_pools_size bytes of entries."""
    options = plugin.options if isinstance(plugin.options, MemoryOptions) else MemoryOptions()
    table = MemoryTable(tuple(plugin.aggregate), None, bool(plugin.timestamps_secs))
    limit = options.max_bytes()
    if limit is not None:
        table.max_rows = max(1, limit // entry_bytes(table.spec))
    return table


class MemoryLoop(RingLoop):
    """State of one memory plugin process; step() is one loop turn."""

    def __init__(self, plugin: PluginConfig, rings: list, server: Optional[QueryServer],
                 stats_path: Optional[str] = None, log: Optional[logging.Logger] = None,
                 core: Optional[CoreConfig] = None) -> None:
        super().__init__(plugin, core, rings, stats_path, log)
        self.pause = IdlePause(IDLE_SLEEP, IDLE_SLEEP_MAX, self.ring_capacities())
        self.server = server
        self.table = table_for(plugin)

    def consume(self, batch) -> None:
        self.table.add(batch)

    def counters(self) -> dict:
        t = self.table
        return {
            **self.base_counters(), "rows": len(t.keys), "max_rows": t.max_rows, "table_bytes": t.nbytes,
            "dropped_keys": t.dropped_keys, "dropped_flows": t.dropped_flows,
            "dropped_packets": t.dropped_packets, "dropped_bytes": t.dropped_bytes,
            "queries": self.server.queries if self.server else 0,
            "query_errors": self.server.query_errors if self.server else 0,
        }

    def log_counters(self) -> None:
        c = self.counters()
        drops = self.ring_drops(c)
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
        self.serve_requests(time.time())
        if got or served:
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
            if self.server:
                self.server.close()
            self.close_rings()


def memory_main(plugin: PluginConfig, core: CoreConfig, ring_names: list[str],
                stats_path: Optional[str] = None) -> None:
    """Entry point of a memory plugin process (started with multiprocessing 'spawn')."""
    from ...ipc.ring import Ring
    log = logging.getLogger(f"pmengine.plugin.{plugin.name}")
    options = plugin.options if isinstance(plugin.options, MemoryOptions) else MemoryOptions()
    rings = [Ring.attach(name) for name in ring_names]
    try:
        server = QueryServer(options.path, 0o666 & ~core.files_umask, log)   # files_umask 077: 0600
    except OSError as e:                # in use, not a socket, no such folder: a restart cannot fix it
        from ...config import ConfigError
        raise ConfigError(f"plugin '{plugin.name}': cannot serve queries on imt_path {options.path}: {e}",
                          "imt_path") from None
    loop = MemoryLoop(plugin, rings, server, stats_path, log=log, core=core)
    install_signals(loop)
    log.info("memory plugin %s started: aggregate %s, imt_path %s, %s, %d ring(s)", plugin.name,
             ", ".join(plugin.aggregate), options.path,
             f"at most {loop.table.max_rows} rows" if loop.table.max_rows else "unbounded", len(rings))
    loop.run()
    log.info("memory plugin %s stopped: %d records, %d rows, %d queries", plugin.name, loop.records,
             len(loop.table.keys), server.queries)
