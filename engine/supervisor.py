"""The supervisor: owns shared memory and the template bus, spawns shards and plugins, restarts what dies.

Signal handlers only enqueue; one loop dispatches signals, reaps children and
tops them up.  Shutdown order (SIGTERM/SIGINT, or the end of a pcap file):
shards stop receiving and drain their sockets → plugins drain the rings and
make a final flush → the bus persists templates → shared memory is unlinked.

Children are forked from a forkserver that has numpy, zmq and the engine
preloaded, so a restart costs a fork, not a Python start-up (~0.1 s, not ~1 s).
Every child beats its heartbeat slot each loop turn (engine.ipc.heartbeat):
one silent for longer than its hang timeout is killed (SIGKILL, by pid) and
restarted like a dead one.  Shard turns are bounded by the 100 ms poll plus
one batch (a few ms), so 0.5 s is 4x a healthy shard's worst gap and a hung
shard is back within 1 s; plugin turns drain up to 256k records per ring and
declare their purges busy, so they get 3 s.  A child restarting more than
CRASH_LOOP_RESTARTS times in CRASH_LOOP_WINDOW_S backs off (0.5 s doubling to
30 s) with one log line saying so.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_any
from typing import Optional

from .config.fields_needed import needed_fields
from .shards.preaggregate import fold_specs
from .config.tree import Config, Listener
from .ipc import heartbeat
from .ipc.heartbeat import Heartbeats, heartbeat_name
from .ipc.ring import Ring, RingSpaceError, _proc_stat, _process_alive, cleanup_stale, ring_name
from .ipc.template_bus import TemplateBus
from .plugins import resolve_plugin
from .shards.partition import partition_specs
from .proc import (EXIT_CONFIG, HELD_SIGNALS, READY_DIR_ENV, ChildEnv, LogSetup, SignalWakeup, child_entry,
                   reopen_logs)
from .schema import RECORD_DTYPE
from .shards.sockets import open_udp

log = logging.getLogger("pmengine.core")

SHM_PREFIX = "pme"
RESTART_BACKOFF_MAX = 30.0
SHARD_STOP_TIMEOUT = 15.0
PLUGIN_STOP_TIMEOUT = 120.0
HANG_TIMEOUT_S = {"shard": 0.5, "plugin": 3.0}
# Past its timeout a silent child is killed at once when it is blocked or stopped (state S/D/T: a deadlock) or
# when it burnt SPIN_CPU_S of CPU since we noticed (a loop); a runnable child that got no CPU (a starved one, on
# a loaded or stolen machine) is not hung: it is given up to STARVED_LIMIT_S.
SPIN_CPU_S = 0.2
STARVED_LIMIT_S = 5.0
PCAP_SHARD_HANG_TIMEOUT_S = 30.0    # a pcap shard cannot be restarted: killing it stops the engine, so be patient
START_GRACE_S = 15.0                # a starting child has this long before its beats are watched
CRASH_LOOP_WINDOW_S = 60.0
# The loop sleeps until the first child's hang deadline (its last beat or declared busy time, plus its role's
# timeout; + DEADLINE_SLACK_S: past it, not on it) or restart time, within TURN_MIN_S..TURN_MAX_S; a child's exit
# or a signal wakes it at once.  Children that beat keep moving their deadlines on, so an idle engine's
# supervisor wakes twice a second, not ten times (a wakeup costs ~0.25 ms of CPU on a VM); a child that hangs
# right after declaring itself busy for a while is still caught within TURN_MAX_S of its deadline.
TURN_MIN_S = 0.1
TURN_MAX_S = 0.5
DEADLINE_SLACK_S = 0.02
CRASH_LOOP_RESTARTS = 3             # restarts in the window that are immediate; more back off
RUNTIME_PREFIX = "pmengine-"
PRELOAD = ["engine.forkserver_preload"]


def forkserver_context() -> mp.context.BaseContext:
    """Children forked from a server with the engine preloaded (fast restarts); spawn where unavailable."""
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _pid_gone(pid: int) -> bool:
    """The process has exited (absent, or a zombie waiting for whoever reaps it)."""
    state, _ = _state_and_cpu(pid)
    return state in ("", "Z", "X")


def _state_and_cpu(pid: int) -> tuple[str, float]:
    """A process's state letter and CPU seconds (user + system) from /proc/PID/stat; ("", 0.0) if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", 0.0
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_forkserver() -> None:
    """Stop and reap the forkserver: the CPU time of the children it reaped then adds up in ours
    (getrusage(RUSAGE_CHILDREN) of whoever waits for us, e.g. perf/pcap_cpu.py), and no process is left behind."""
    try:
        from multiprocessing import forkserver
        forkserver._forkserver._stop()          # private, but the only way to wait for it (CPython 3.8+)
    except Exception as e:                      # never fail an exit over it
        log.debug("forkserver stop: %s", e)


class ListenError(Exception):
    """A shard's UDP socket could not be opened (address in use, not local, ...)."""


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
    slot: int = -1                  # heartbeat slot
    recent: deque = field(default_factory=deque)    # monotonic times of recent restarts
    died_at: float = 0.0
    silent_cpu: Optional[float] = None     # its CPU seconds when we first saw it silent past its timeout

    @property
    def hang_timeout(self) -> float:
        """Seconds of silence past its last beat (or declared busy time) after which it counts as hung."""
        return HANG_TIMEOUT_S[self.role] if self.restartable else PCAP_SHARD_HANG_TIMEOUT_S


@dataclass
class Supervisor:
    config: Config
    shards: int = 1
    log_setup: LogSetup = field(default_factory=LogSetup)

    def __post_init__(self) -> None:
        self.ctx = forkserver_context()
        self.run_id = uuid.uuid4().hex[:8]
        self.beats: Optional[Heartbeats] = None
        self.started_wall = time.time()
        self.restart_delays: list[float] = []      # seconds from death (or hang kill) to the new process
        self.runtime_dir = ""
        self.rings: list[Ring] = []
        self.lost_in_flight: dict[str, int] = {}  # shard name -> datagrams it died with, taken but not decoded
        self.sockets: list = []          # one per live shard, held so that a restart loses no queued datagram
        self.children: list[Child] = []
        self.bus: Optional[TemplateBus] = None
        self.signals: list[int] = []
        self._signal_wakeup: Optional[SignalWakeup] = None     # install_signals(): wait_turn wakes for signals
        self.stopping = False
        self.exit_code = 0
        self.ops = None                 # engine.ops.services.OpsServices: locator files, Prometheus, SIGUSR1 summary

    # -- set-up -------------------------------------------------------------
    def setup(self) -> None:
        removed = cleanup_stale(SHM_PREFIX) + heartbeat.cleanup_stale(SHM_PREFIX)
        if removed:
            log.warning("removed %d stale shared-memory segments left by a dead pmengine", len(removed))
        stale_dirs = cleanup_stale_runtime_dirs()
        if stale_dirs:
            log.warning("removed %d runtime folders left by a dead pmengine", len(stale_dirs))
        self.runtime_dir = tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{self.run_id}-", dir=runtime_base())
        os.chmod(self.runtime_dir, 0o700)
        write_owner_file(self.runtime_dir)
        log.info("runtime folder %s (run %s)", self.runtime_dir, self.run_id)
        os.makedirs(os.path.join(self.runtime_dir, "stats"), mode=0o700)
        os.makedirs(os.path.join(self.runtime_dir, "ready"), mode=0o700)
        os.environ[READY_DIR_ENV] = os.path.join(self.runtime_dir, "ready")
        from .ops.services import OpsServices
        self.ops = OpsServices(self.config.core, self.runtime_dir, log).start()
        core = self.config.core
        if core.pcap_savefile:
            self.shards = 1
        listeners = core.listeners or [Listener()]
        total = self.shards * len(listeners)      # N shards per listener; shard i serves listeners[i // N]
        self.bus = TemplateBus(self.runtime_dir, persist_path=core.templates_file)
        self.bus.start()
        # a ring per (shard, plugin worker): shard i writes ring_names[i][plugin][worker]
        ring_names: dict[int, list[list[str]]] = {i: [] for i in range(total)}
        for p in self.config.plugins:
            capacity = max(1024, p.pipe_size // RECORD_DTYPE.itemsize // p.workers)   # workers share pipe_size
            worker_rings: list[list[str]] = [[] for _ in range(p.workers)]
            for i in range(total):
                ring_names[i].append([])
                for k in range(p.workers):
                    label = p.name if p.workers == 1 else f"{p.name}#{k}"
                    ring = Ring.create(ring_name(f"{SHM_PREFIX}{self.run_id}", i, label), capacity)
                    self.rings.append(ring)
                    ring_names[i][-1].append(ring.name)
                    worker_rings[k].append(ring.name)
            self._add_plugin(p, core, worker_rings)
        partitions = partition_specs(self.config)
        for p, spec in zip(self.config.plugins, partitions):
            if spec is not None and not spec.columns:
                log.warning("plugin %s: no key column reaches its %d workers as the record holds it: "
                            "worker 0 aggregates everything", p.name, p.workers)
        if not core.pcap_savefile:
            # We open the shards' sockets and keep a copy: a shard that dies (even by SIGKILL) loses no datagram,
            # since its socket stays in the SO_REUSEPORT group, queueing, until the restarted shard reads on.
            for i in range(total):
                listener = listeners[i // self.shards]
                try:
                    self.sockets.append(open_udp(listener))
                except OSError as e:
                    raise ListenError(f"cannot listen on [{listener.ip}]:{listener.port}: {e}") from e
        for i in range(total):
            listener = listeners[i // self.shards]
            self.children.append(Child(
                "shard", f"shard-{i}", "engine.shards.receiver:shard_main",
                (i, core, listener, ring_names[i], self.bus.endpoints, self._stats_path(f"shard-{i}"),
                 needed_fields(self.config), self.sockets[i] if self.sockets else None, fold_specs(self.config),
                 partitions),
                restartable=not core.pcap_savefile))
        for slot, child in enumerate(self.children):
            child.slot = slot
        self.beats = Heartbeats.create(heartbeat_name(SHM_PREFIX, self.run_id), len(self.children))

    def _add_plugin(self, p, core, worker_rings: list[list[str]]) -> None:
        """The plugin's process, or its workers' (plugin_workers): worker k drains ring k of every shard and
        shares its output files through a PurgeRounds folder (engine/plugins/purge_rounds.py)."""
        shared: tuple = ()
        if p.workers > 1:
            shared = (os.path.join(self.runtime_dir, "purges"),)
            os.makedirs(shared[0], mode=0o700, exist_ok=True)
        for k, rings in enumerate(worker_rings):
            worker = dataclasses.replace(p, worker=k)
            self.children.append(Child("plugin", f"plugin-{p.type}-{worker.label}", resolve_plugin(p.type),
                                       (worker, core, rings, self._stats_path(f"plugin-{worker.label}"), *shared)))

    def _stats_path(self, name: str) -> str:
        return os.path.join(self.runtime_dir, "stats", f"{name}.json")

    # -- children ---------------------------------------------------------------
    def start_child(self, child: Child) -> None:
        env = ChildEnv(os.path.join(self.runtime_dir, "ready"), self.beats.name if self.beats else None, child.slot,
                       os.getpid())
        proc = self.ctx.Process(target=child_entry, name=f"pmengine: {child.name}",
                                args=(child.role, child.target, self.log_setup, child.args, env), daemon=False)
        # the new process inherits this mask: a SIGTERM sent while it is still starting waits for its handler;
        # so does the forkserver (started by the first start()), which a terminal's SIGHUP must not kill
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS | {signal.SIGHUP})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child.process, child.started = proc, time.monotonic()
        if self.beats is not None:
            self.beats.arm(child.slot, proc.pid, START_GRACE_S)
        if child.died_at:
            self.restart_delays.append(child.started - child.died_at)
            log.info("restarted %s (pid %d) %.3f s after it ended", child.name, proc.pid,
                     child.started - child.died_at)
            child.died_at = 0.0
        else:
            log.info("started %s (pid %d)", child.name, proc.pid)
        self.write_children()

    def next_turn_in(self) -> float:
        """Seconds until a turn has something to look at: a child's hang deadline or restart time."""
        now, now_ns = time.monotonic(), time.monotonic_ns()
        first = TURN_MAX_S
        for child in self.children:
            if child.finished:
                continue
            if child.process is None:
                first = min(first, child.next_start - now)
            elif self.beats is not None and child.slot >= 0:
                first = min(first, child.hang_timeout - self.beats.silent_for(child.slot, now_ns) + DEADLINE_SLACK_S)
        return max(TURN_MIN_S, first)

    def wait_turn(self, timeout: float) -> set:
        """Sleep up to `timeout`, less when a child ends or a signal arrives; the sentinels of ended children."""
        watched = [c.process.sentinel for c in self.children if c.process is not None and not c.finished]
        wake = self._signal_wakeup
        ready = set(wait_for_any(watched + [wake.fd] if wake is not None else watched, timeout))
        if wake is not None and wake.fd in ready:
            wake.clear()
            ready.discard(wake.fd)
        return ready

    def reap(self, ended: Optional[set] = None) -> None:
        """Restart what ended (ended: the sentinels wait_turn saw ready; None: look at every child)."""
        now = time.monotonic()
        for child in self.children:
            proc = child.process
            if proc is None or child.finished:
                if proc is None and not child.finished and not self.stopping and now >= child.next_start:
                    self.start_child(child)
                continue
            if (ended is not None and proc.sentinel not in ended) or proc.is_alive():
                continue
            code = proc.exitcode
            proc.join(0)
            child.process = None
            self.count_in_flight(child, proc.pid)
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
            child.restarts += 1
            child.died_at = child.died_at or now
            recent = child.recent
            recent.append(now)
            while recent and now - recent[0] > CRASH_LOOP_WINDOW_S:
                recent.popleft()
            if len(recent) <= CRASH_LOOP_RESTARTS:
                child.backoff = 0.0
                log.error("%s (pid %s) died with exit code %s: restarting it (restart #%d)",
                          child.name, proc.pid, code, child.restarts)
            else:
                child.backoff = min(RESTART_BACKOFF_MAX, max(0.5, child.backoff * 2))
                log.error("%s (pid %s) died with exit code %s: crash loop, %d restarts in the last %.0f s "
                          "(#%d in all): next start in %.1f s", child.name, proc.pid, code, len(recent),
                          CRASH_LOOP_WINDOW_S, child.restarts, child.backoff)
            child.next_start = now + child.backoff
            self.write_children()
            if child.backoff == 0.0:
                self.start_child(child)

    def count_in_flight(self, child: Child, pid: int) -> None:
        """What a dead shard had taken off its socket but not finished is lost: count it, say it."""
        if self.beats is None or child.role != "shard" or child.slot < 0:
            return
        lost = self.beats.in_flight(child.slot)
        if not lost:
            return
        self.lost_in_flight[child.name] = self.lost_in_flight.get(child.name, 0) + lost
        log.error("%s (pid %d) died with %d datagrams taken but not decoded: lost (%d in all)", child.name, pid,
                  lost, sum(self.lost_in_flight.values()))
        path = self._stats_path("supervisor")
        try:
            with open(f"{path}.tmp", "w") as f:
                json.dump({"lost_in_flight_datagrams": self.lost_in_flight}, f)
            os.replace(f"{path}.tmp", path)
        except OSError as e:
            log.warning("cannot save %s: %s", path, e)

    def kill_hung(self, now: float) -> None:
        """SIGKILL (by pid) every child silent for longer than its role's hang timeout; reap() restarts it."""
        if self.beats is None:
            return
        now_ns = time.monotonic_ns()
        for child in self.children:
            proc = child.process
            if proc is None or child.finished or child.slot < 0:
                continue
            limit = child.hang_timeout
            late = self.beats.silent_for(child.slot, now_ns) - limit
            if late <= 0 or not proc.is_alive():
                child.silent_cpu = None
                continue
            state, cpu = _state_and_cpu(proc.pid)
            if state == "R" and late + limit < STARVED_LIMIT_S:
                if child.silent_cpu is None:
                    child.silent_cpu = cpu
                if cpu - child.silent_cpu < SPIN_CPU_S:
                    continue            # runnable but not running: starved, not hung
            child.silent_cpu = None
            log.error("%s (pid %d) hung: no heartbeat for %.2f s: killing it", child.name, proc.pid, late + limit)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.died_at = now
            proc.join(1.0)

    # -- signals ----------------------------------------------------------------
    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: self.signals.append(s))
        self._signal_wakeup = SignalWakeup()    # wait_turn() wakes at once for a signal, not at its next turn

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
                reopen_logs()
                log.info("SIGHUP: log files reopened (supervisor and children)")
                self.signal_children(signal.SIGHUP)

    def signal_children(self, sig: int, role: Optional[str] = None) -> None:
        for child in self.children:
            if child.process is not None and child.process.is_alive() and role in (None, child.role):
                try:
                    os.kill(child.process.pid, sig)
                except ProcessLookupError:
                    pass

    def log_stats(self) -> None:
        if self.ops is not None:
            self.ops.log_summary()          # merged key=value lines (engine/ops/summary.py)

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
            try:
                self.setup()
            except (ListenError, RingSpaceError) as e:
                log.error("%s", e)
                return 1
            for child in self.children:
                self.start_child(child)
            planned = time.monotonic()          # when this turn was meant to come
            ended: Optional[set] = None         # the first turn looks at every child
            while not self.stopping:
                self.dispatch_signals()
                if self.stopping:
                    break
                now = time.monotonic()
                if now - planned < HANG_TIMEOUT_S["shard"] / 2:     # not woken late ourselves: fresh enough to judge
                    self.kill_hung(now)
                self.reap(ended)
                if self.config.core.pcap_savefile and not self.config.core.pcap_savefile_wait and all(
                        c.finished for c in self.children if c.role == "shard"):
                    log.info("pcap file read: flushing and exiting")
                    self.begin_stop()
                    break
                sleep = self.next_turn_in()
                planned = time.monotonic() + sleep
                ended = self.wait_turn(sleep)
            self.shutdown()
        finally:
            self.cleanup()
            # stopped: a second SIGTERM/SIGINT must not kill the exiting interpreter (Python restores the
            # default handlers while it finalizes; ignored signals stay ignored)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
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
            pid = child.process.pid
            # a forkserver that died (a SIGTERM sent to the whole process group: timeout(1), systemd) reports
            # its children as ended (255) while they still run their final flush: wait for the pid itself
            while not _pid_gone(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if child.process.is_alive() or not _pid_gone(pid):
                log.error("%s did not stop in %.0fs: killing it", child.name, timeout)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.process.join(5)
            if child.process.exitcode == 255 and _pid_gone(pid):
                log.info("%s ended during shutdown (its exit code was lost with the forkserver)", child.name)
            elif child.process.exitcode != 0:
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
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        stop_forkserver()
        if self.beats is not None:
            self.beats.close()
            self.beats.unlink()
            self.beats = None
        if self.ops is not None:
            self.ops.stop()
        if self.runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # -- status ---------------------------------------------------------------------
    def write_children(self) -> None:
        """children.json in the runtime folder, for `pmengine status`."""
        if not self.runtime_dir:
            return
        now, wall = time.monotonic(), time.time()
        rows = [{"name": c.name, "role": c.role, "pid": c.process.pid if c.process is not None else None,
                 "started": wall - (now - c.started) if c.process is not None else None,
                 "restarts": c.restarts, "finished": c.finished} for c in self.children]
        path = os.path.join(self.runtime_dir, "children.json")
        try:
            with open(path + ".tmp", "w") as f:
                json.dump({"pid": os.getpid(), "started": self.started_wall, "children": rows}, f)
            os.replace(path + ".tmp", path)
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)


OWNER_FILE = "supervisor.pid"


def write_owner_file(runtime_dir: str) -> None:
    """'<pid> <start time>' of the supervisor, so a later start knows whether this folder is stale."""
    stat = _proc_stat(os.getpid())
    with open(os.path.join(runtime_dir, OWNER_FILE), "w") as f:
        f.write(f"{os.getpid()} {stat[1] if stat else 0}\n")


def _owner(folder: str) -> Optional[tuple[int, int]]:
    try:
        with open(os.path.join(folder, OWNER_FILE)) as f:
            pid, start = f.read().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def runtime_base() -> str:
    """Where runtime folders go: $PMENGINE_RUNTIME_BASE, else /dev/shm (memory: the stats files that shards and
    plugins rewrite every second must never wait for a busy disk, or their heartbeats stall), else $TMPDIR."""
    for folder in (os.environ.get("PMENGINE_RUNTIME_BASE"), "/dev/shm"):
        if folder and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return tempfile.gettempdir()


def runtime_dirs() -> list[str]:
    """This user's pmengine runtime folders."""
    out = []
    for folder in glob.glob(os.path.join(runtime_base(), f"{RUNTIME_PREFIX}*")):
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if os.path.isdir(folder) and not os.path.islink(folder) and st.st_uid == os.getuid():
            out.append(folder)
    return out


def cleanup_stale_runtime_dirs() -> list[str]:
    """Remove runtime folders whose supervisor is gone (a SIGKILLed run); returns them."""
    removed = []
    for folder in runtime_dirs():
        owner = _owner(folder)
        if owner is None or _process_alive(*owner):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def status_report(pid: int) -> tuple[str, bool]:
    """`pmengine status`: (text, every child alive) for the supervisor `pid`."""
    stat = _proc_stat(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/uptime") as f:
            boot = time.time() - float(f.read().split()[0])
    except OSError:
        boot = None
    lines = []
    uptime = time.time() - (boot + stat[1] / ticks) if stat and boot is not None else None
    lines.append(f"pmengine running, pid {pid}" + (f", up {_duration(uptime)}" if uptime is not None else ""))
    folder = next((f for f in runtime_dirs() if (_owner(f) or (0,))[0] == pid), None)
    if folder is None:
        return "\n".join(lines + ["children: unknown (no runtime folder)"]), False
    try:
        with open(os.path.join(folder, "children.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return "\n".join(lines + ["children: unknown (still starting?)"]), False
    healthy = True
    for c in info["children"]:
        alive = c["pid"] is not None and _process_alive(c["pid"], 0)
        if c["finished"]:
            state = "finished"
        elif alive:
            state = f"alive, pid {c['pid']}, up {_duration(time.time() - c['started'])}"
        else:
            state, healthy = "DOWN (restarting)", False
        lines.append(f"  {c['name']}: {state}, restarts {c['restarts']}")
    alive_count = sum(1 for c in info["children"] if c["pid"] is not None and _process_alive(c["pid"], 0))
    lines.insert(1, f"children: {alive_count}/{len(info['children'])} alive")
    return "\n".join(lines), healthy


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"
