"""The supervisor: owns shared memory and the template bus, spawns shards and plugins, restarts what dies.

Signal handlers only enqueue; one loop dispatches signals, reaps children and
tops them up.  Shutdown order (SIGTERM/SIGINT, or the end of a pcap file):
shards stop receiving and drain their sockets → plugins drain the rings and
make a final flush → the bus persists templates → shared memory is unlinked.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from .config.tree import Config, Listener
from .ipc.ring import Ring, cleanup_stale, ring_name
from .ipc.template_bus import TemplateBus
from .plugins import resolve_plugin
from .proc import EXIT_CONFIG, HELD_SIGNALS, READY_DIR_ENV, LogSetup, child_entry
from .schema import RECORD_DTYPE

log = logging.getLogger("pmengine.core")

SHM_PREFIX = "pme"
RESTART_BACKOFF_MAX = 30.0
SHARD_STOP_TIMEOUT = 15.0
PLUGIN_STOP_TIMEOUT = 120.0


@dataclass
class Child:
    role: str                       # "shard" or "plugin"
    name: str                       # "shard-0", "plugin-print-a"
    target: str                     # "module:function"
    args: tuple
    restartable: bool = True
    process: Optional[mp.process.BaseProcess] = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0
    finished: bool = False          # exited 0 on its own (a pcap shard that read its file)


@dataclass
class Supervisor:
    config: Config
    shards: int = 1
    log_setup: LogSetup = field(default_factory=LogSetup)

    def __post_init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.run_id = uuid.uuid4().hex[:8]
        self.runtime_dir = ""
        self.rings: list[Ring] = []
        self.children: list[Child] = []
        self.bus: Optional[TemplateBus] = None
        self.signals: list[int] = []
        self.stopping = False
        self.exit_code = 0

    # -- set-up -------------------------------------------------------------
    def setup(self) -> None:
        removed = cleanup_stale(SHM_PREFIX)
        if removed:
            log.warning("removed %d stale shared-memory segments left by a dead pmengine", len(removed))
        self.runtime_dir = tempfile.mkdtemp(prefix=f"pmengine-{self.run_id}-")
        os.chmod(self.runtime_dir, 0o700)
        os.makedirs(os.path.join(self.runtime_dir, "stats"), mode=0o700)
        os.makedirs(os.path.join(self.runtime_dir, "ready"), mode=0o700)
        os.environ[READY_DIR_ENV] = os.path.join(self.runtime_dir, "ready")
        core = self.config.core
        if core.pcap_savefile:
            self.shards = 1
        listeners = core.listeners or [Listener()]
        total = self.shards * len(listeners)      # N shards per listener; shard i serves listeners[i // N]
        self.bus = TemplateBus(self.runtime_dir, persist_path=core.templates_file)
        self.bus.start()
        ring_names: dict[int, list[str]] = {i: [] for i in range(total)}
        plugin_rings: dict[str, list[str]] = {p.name: [] for p in self.config.plugins}
        for p in self.config.plugins:
            capacity = max(1024, p.pipe_size // RECORD_DTYPE.itemsize)
            for i in range(total):
                ring = Ring.create(ring_name(f"{SHM_PREFIX}{self.run_id}", i, p.name), capacity)
                self.rings.append(ring)
                ring_names[i].append(ring.name)
                plugin_rings[p.name].append(ring.name)
        for p in self.config.plugins:
            self.children.append(Child(
                "plugin", f"plugin-{p.type}-{p.name}", resolve_plugin(p.type),
                (p, core, plugin_rings[p.name], self._stats_path(f"plugin-{p.name}"))))
        for i in range(total):
            listener = listeners[i // self.shards]
            self.children.append(Child(
                "shard", f"shard-{i}", "engine.shards.receiver:shard_main",
                (i, core, listener, ring_names[i], self.bus.endpoints, self._stats_path(f"shard-{i}")),
                restartable=not core.pcap_savefile))

    def _stats_path(self, name: str) -> str:
        return os.path.join(self.runtime_dir, "stats", f"{name}.json")

    # -- children ---------------------------------------------------------------
    def start_child(self, child: Child) -> None:
        proc = self.ctx.Process(target=child_entry, name=f"pmengine: {child.name}",
                                args=(child.role, child.target, self.log_setup, child.args), daemon=False)
        # the new process inherits this mask: a SIGTERM sent while it is still starting waits for its handler
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child.process, child.started = proc, time.monotonic()
        log.info("started %s (pid %d)", child.name, proc.pid)

    def reap(self) -> None:
        now = time.monotonic()
        for child in self.children:
            proc = child.process
            if proc is None or child.finished:
                if proc is None and not child.finished and not self.stopping and now >= child.next_start:
                    self.start_child(child)
                continue
            if proc.is_alive():
                continue
            code = proc.exitcode
            proc.join(0)
            child.process = None
            if not child.restartable:
                child.finished = True
                if code == 0:
                    log.info("%s finished", child.name)
                    continue
                # a pcap shard cannot be restarted (it would read the file again): flush what arrived, fail
                log.error("%s (pid %s) died with exit code %s; it cannot be restarted: stopping",
                          child.name, proc.pid, code)
                self.exit_code = self.exit_code or 1
                self.begin_stop()
                return
            if code == EXIT_CONFIG:
                log.error("%s stopped on a configuration error: halting", child.name)
                self.exit_code = EXIT_CONFIG
                self.begin_stop()
                return
            uptime = now - child.started
            child.backoff = 0.0 if uptime > 60 else min(RESTART_BACKOFF_MAX, max(0.5, child.backoff * 2))
            child.restarts += 1
            child.next_start = now + child.backoff
            log.error("%s (pid %s) died with exit code %s; restart #%d in %.1fs",
                      child.name, proc.pid, code, child.restarts, child.backoff)
            if child.backoff == 0.0:
                self.start_child(child)

    # -- signals ----------------------------------------------------------------
    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: self.signals.append(s))

    def dispatch_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s: stopping", signal.Signals(sig).name)
                self.begin_stop()
            elif sig == signal.SIGUSR1:
                self.log_stats()
                self.signal_children(signal.SIGUSR1)
            elif sig == signal.SIGUSR2:
                log.info("SIGUSR2: shards and plugins reload their maps")
                self.signal_children(signal.SIGUSR2)
            elif sig == signal.SIGHUP:
                log.info("SIGHUP: log files are reopened on rotation")

    def signal_children(self, sig: int, role: Optional[str] = None) -> None:
        for child in self.children:
            if child.process is not None and child.process.is_alive() and role in (None, child.role):
                try:
                    os.kill(child.process.pid, sig)
                except ProcessLookupError:
                    pass

    def log_stats(self) -> None:
        stats = self.collect_stats()
        for name, s in sorted(stats.items()):
            log.info("%s: %s", name, json.dumps(s, sort_keys=True))

    def collect_stats(self) -> dict:
        out = {}
        folder = os.path.join(self.runtime_dir, "stats")
        for fname in os.listdir(folder):
            if fname.endswith(".json"):
                try:
                    with open(os.path.join(folder, fname)) as f:
                        out[fname[:-5]] = json.load(f)
                except (OSError, ValueError):
                    continue
        return out

    # -- main loop and shutdown ----------------------------------------------------
    def begin_stop(self) -> None:
        self.stopping = True

    def run(self) -> int:
        self.install_signals()
        try:
            self.setup()
            for child in self.children:
                self.start_child(child)
            while not self.stopping:
                self.dispatch_signals()
                if self.stopping:
                    break
                self.reap()
                if self.config.core.pcap_savefile and not self.config.core.pcap_savefile_wait and all(
                        c.finished for c in self.children if c.role == "shard"):
                    log.info("pcap file read: flushing and exiting")
                    self.begin_stop()
                    break
                time.sleep(0.05)
            self.shutdown()
        finally:
            self.cleanup()
        return self.exit_code

    def wait_ready(self, role: str, timeout: float = 30.0) -> None:
        """Wait until every live child of `role` has its signal handlers (it is still starting otherwise)."""
        deadline = time.monotonic() + timeout
        for child in self.children:
            while (child.role == role and child.process is not None and child.process.is_alive()
                   and not os.path.exists(os.path.join(self.runtime_dir, "ready", str(child.process.pid)))
                   and time.monotonic() < deadline):
                time.sleep(0.02)

    def _stop_role(self, role: str, timeout: float) -> None:
        self.wait_ready(role)
        self.signal_children(signal.SIGTERM, role)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.role != role or child.process is None:
                continue
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.error("%s did not stop in %.0fs: killing it", child.name, timeout)
                child.process.kill()
                child.process.join(5)
            if child.process.exitcode != 0:
                log.error("%s ended with exit code %s during shutdown", child.name, child.process.exitcode)
                self.exit_code = self.exit_code or 1

    def revive_plugins(self) -> None:
        """A plugin waiting for its restart still owes the final flush of what is in its rings."""
        if self.exit_code == EXIT_CONFIG:
            return
        for child in self.children:
            if child.role == "plugin" and child.process is None:
                log.info("restarting %s for the final flush", child.name)
                self.start_child(child)

    def shutdown(self) -> None:
        self._stop_role("shard", SHARD_STOP_TIMEOUT)
        drops = sum(r.counters().get("dropped_records", 0) for r in self.rings)
        if drops:
            log.warning("rings dropped %d records in total", drops)
        self.revive_plugins()
        self._stop_role("plugin", PLUGIN_STOP_TIMEOUT)
        log.info("OK, exiting")

    def cleanup(self) -> None:
        for child in self.children:
            if child.process is not None and child.process.is_alive():
                child.process.kill()
                child.process.join(5)
        if self.bus is not None:
            try:
                self.bus.stop()
            except Exception as e:     # never keep shared memory around because the bus failed
                log.error("template bus stop failed: %s", e)
        for ring in self.rings:
            ring.close()
            ring.unlink()
        self.rings = []
        if self.runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
