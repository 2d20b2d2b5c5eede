"""Live benchmark: nfacctd/sfacctd 1.7.7 and pmengine, one after the other, same pcap, same rate; one table.

    python3 perf/bench.py [--flows 300000] [--rate 100000] [--scenarios v9-five,v9-matrix,...] [--runs 1]
    python3 perf/bench.py --quick          # tiny, for CI smoke
    python3 perf/bench.py --sweep          # highest zero-loss rate per collector (bisection on rate)

Per scenario and collector: start the daemon (print plugin, the scenario's aggregate, refresh 3600 s so the
purge at stop is the only one), wait until it listens, replay the pcap with perf/replay.py at the rate, wait for
the kernel queue to drain, stop it (nfacctd: SIGINT, pmengine: SIGTERM; SIGKILL by PID after a timeout), and read:
  CPU      CPU time of the daemon and every descendant: /proc (threads' schedstat in ns; utime+stime ticks where
           more, see cpu_seconds) sampled every 100 ms, plus the daemon's wait4() rusage (its reaped children roll
           up); start-up CPU (until it listens and its process tree has gone quiet: < 20 ms of CPU in 0.5 s) is
           subtracted and shown apart.  µs/flow = run CPU / flows sent.
  kept     Σ BYTES of the print output / the generator's expected bytes (perf/traffic.py JSON).
  RSS      peak of Σ VmRSS over the process tree; and per million aggregated entries (output rows).
  drops    kernel drops of the collector's UDP sockets (/proc/net/udp{,6} "drops", read before the stop).
  steal%   share of the box's CPU time the hypervisor gave to other guests from the replay to the exit
           (/proc/stat): a shared VM's steal makes CPU per flow and losses move between runs.  So a row's
           median is over its runs with at most --max-steal (3%) stolen: it runs until it has --runs of
           them or has made --attempts (3 x --runs) runs; column runs = quiet/made (none quiet: all made).
Workers: pmengine-N runs the 5-tuple scenarios with `plugin_workers: N` (--workers auto; the matrix keeps one
plugin process: a few hundred keys need no split); --workers K sets K for every pmengine run.
The shards 1 → 2 model: pmengine's processes are split into receivers (those holding a socket on the port:
shards; nfacctd's core) and the rest (plugin workers, supervisor, forkserver); with one core per process,
throughput at saturation is min(shards / receiver CPU per flow, 1 / CPU per flow of the busiest other
process), the median over a row's --runs runs; scaling = that ratio 2 vs 1 shards.  On this 2-CPU box the
sender, the shards and the workers share the CPUs, so the 2-shard rows pay for the contention (cold caches)
that a box with a core per process would not: the model measures the per-process cost under it.
The model reads each shard's cost where it works, so it is given twice: with the same total rate (the table's
pmengine-N row: each of N shards gets 1/N of the traffic, sleeps N times longer between its batches and finds
its caches colder -- the cost per flow of a shard rises as its load falls), and with the same load per shard
(an extra row `pmengine-N xN`: N shards at N times --rate, each shard as loaded as the single one; its ratio
column stays empty, the reference did not get that rate).  Throughput is what a loaded shard does, so
the second is the shards 1 -> N scaling; the first is shown for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

from replay import load_payloads, send  # noqa: E402
from traffic import AGGREGATES, TrafficSpec, generate  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Scenario:
    name: str
    protocol: str
    aggregate: str          # key of AGGREGATES
    ipv6_share: float = 0.0


SCENARIOS = {s.name: s for s in (
    Scenario("v9-five", "v9", "five"), Scenario("v9-matrix", "v9", "matrix"),
    Scenario("ipfix-five", "ipfix", "five"), Scenario("ipfix-matrix", "ipfix", "matrix"),
    Scenario("v5-five", "v5", "five"), Scenario("sflow-five", "sflow", "five"))}


@dataclass
class Result:
    collector: str          # nfacctd / sfacctd / pmengine-1 / pmengine-2
    flows: int
    startup_cpu: float = 0.0
    run_cpu: float = 0.0
    receiver_cpu: float = 0.0
    busiest_other_cpu: float = 0.0     # run CPU of the busiest process not holding a socket (a plugin worker)
    workers: int = 1
    shards: int = 1
    capacity: float = 0.0       # CPU-time model flows/s (capacity()): the median over the runs of this row
    send_rate: float = 0.0
    wall: float = 0.0
    bytes_kept: float = 0.0
    rows: int = 0
    peak_rss: int = 0
    peak_pss: int = 0           # Σ Pss: shared pages (pmengine's rings, nfacctd's pipes) counted once, not per process
    kernel_drops: int = 0
    ring_drops: int = 0
    exporters_exact: int = 0    # exporters whose Σ bytes equals the generator's (catches misattributed flows)
    steal: float = 0.0          # share of this box's CPU time the host stole from the replay to the exit
    load: int = 1               # the replay's rate as a multiple of --rate (pmengine-N xN: the same load per shard)
    quiet_runs: int = 1         # runs of this row within --max-steal (the median is over these) ...
    attempts: int = 1           # ... of the runs made
    notes: list = field(default_factory=list)

    @property
    def us_per_flow(self) -> float:
        return self.run_cpu / self.flows * 1e6 if self.flows else 0.0

    @property
    def rss_per_m_entries(self) -> float:
        return self.peak_rss / (self.rows / 1e6) if self.rows else 0.0

    @property
    def pss_per_m_entries(self) -> float:
        return self.peak_pss / (self.rows / 1e6) if self.rows else 0.0


# -- /proc ----------------------------------------------------------------------------------------------

def tree(pid: int) -> list[int]:
    """pid and all its descendants (via /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a process so far, as exactly as /proc tells it: its threads' run time in ns (schedstat), or
    utime+stime in clock ticks where those say more (threads that ended count only there).  The ticks alone
    read ~10 ms low per process (utime and stime are each truncated to 10 ms): a start-up CPU read from them
    comes out low by that, and the run CPU (exact rusage at the end minus it) high, by ~10 ms per process --
    0.05 us/flow over 1.2M flows for pmengine's six processes against 0.017 for nfacctd's two."""
    times = user_system_ticks(pid)
    if times is None:
        return None
    return max(sum(times) / CLK, threads_run_time(pid))


def user_system_ticks(pid: int) -> tuple[int, int] | None:
    """A process's utime and stime so far (/proc/PID/stat, clock ticks); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def threads_run_time(pid: int) -> float:
    """Seconds the process's live threads have run (/proc/PID/task/*/schedstat, first field: ns); 0 unknown."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def pss_bytes(pid: int) -> int:
    """Proportional set size: each shared page counts 1/N in each of the N processes mapping it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0


def udp_rows(port: int) -> list[list[str]]:
    """The rows of /proc/net/udp{,6} (split into columns) of the UDP sockets bound to local `port`."""
    rows = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        rows += [cols for cols in map(str.split, lines) if int(cols[1].rsplit(":", 1)[1], 16) == port]
    return rows


def udp_sockets(port: int) -> tuple[set[str], int]:
    """(socket inodes, Σ drops) of the UDP sockets bound to local `port`."""
    rows = udp_rows(port)
    return {cols[9] for cols in rows}, sum(int(cols[-1]) for cols in rows)


def holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


PSS_EVERY = 3


class TreeSampler(threading.Thread):
    """Every 100 ms: last CPU seen per pid, peak Σ RSS, and which pids hold the collector's socket; every
    PSS_EVERY samples peak Σ PSS (smaps_rollup walks the page tables: ~1 ms for a large process)."""

    def __init__(self, root: int, port: int) -> None:
        super().__init__(daemon=True)
        self.root, self.port = root, port
        self.cpu: dict[int, float] = {}
        self.receivers: set[int] = set()
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self.stop_flag = threading.Event()
        self.sample()

    def sample(self) -> None:
        pids = tree(self.root)
        rss = 0
        for p in pids:
            c = cpu_seconds(p)
            if c is not None:
                self.cpu[p] = c
            rss += rss_bytes(p)
        self.peak_rss = max(self.peak_rss, rss)
        if self.samples % PSS_EVERY == 0:
            self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in pids))
        self.samples += 1
        inodes, _ = udp_sockets(self.port)
        self.receivers |= {p for p in pids if p not in self.receivers and holds_socket(p, inodes)}

    def total(self) -> float:
        return sum(self.cpu.values())

    def receiver_total(self) -> float:
        return sum(c for p, c in self.cpu.items() if p in self.receivers)

    def busiest_other(self, since: dict[int, float]) -> float:
        """The most CPU one non-receiver process used since `since` (a copy of self.cpu taken earlier)."""
        return max((c - since.get(p, 0.0) for p, c in self.cpu.items() if p not in self.receivers), default=0.0)

    def run(self) -> None:
        while not self.stop_flag.wait(0.1):
            self.sample()


# -- collectors ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REFERENCE_PIPE = 204800000     # nfacctd/sfacctd's plugin_pipe_size here (with its 4 MB default it drops)


def workers_for(scenario: Scenario, shards: int, workers: str) -> int:
    """plugin_workers of a pmengine run: `auto` = shards for the 5-tuple, 1 for the matrix; or a number."""
    if workers != "auto":
        return int(workers)
    return shards if scenario.aggregate != "matrix" else 1


def print_conf(scenario: Scenario, daemon: str, port: int, out: Path, renormalize: bool,
               shards: int = 1, same_pipe: bool = False, workers: int = 1, socket_buffer: int = 8 << 20) -> str:
    """The collector's config; same_pipe: pmengine's rings (one per shard) hold REFERENCE_PIPE bytes in all,
    like the reference's one pipe (the zero-loss sweep compares the same buffering; the CPU/memory table
    runs pmengine with its default rings); socket_buffer: each UDP socket's receive buffer (*_pipe_size)."""
    prefix = "sfacctd" if scenario.protocol == "sflow" else "nfacctd"
    conf = (f"{prefix}_port: {port}\n{prefix}_ip: 127.0.0.1\n{prefix}_pipe_size: {socket_buffer}\n"
            f"plugins: print[p]\naggregate: {AGGREGATES[scenario.aggregate]}\nprint_output: csv\n"
            f"print_output_file: {out}\nprint_output_file_append: true\nprint_refresh_time: 3600\n")
    if renormalize:
        conf += f"{prefix}_renormalize: true\n"
    if daemon != "pmengine":
        conf = f"daemonize: false\nplugin_pipe_size: {REFERENCE_PIPE}\nplugin_buffer_size: 204800\n" + conf
    else:
        if same_pipe:
            conf += f"plugin_pipe_size: {REFERENCE_PIPE // shards}\n"     # split among its workers' rings
        if workers > 1:
            conf += f"plugin_workers: {workers}\n"
    return conf


def csv_totals(path: Path) -> tuple[int, int, dict[str, int]]:
    """(rows, Σ BYTES, Σ BYTES per PEER_SRC_IP) of a print plugin CSV file (appended purges' headers skipped)."""
    rows = total = 0
    col = peer = None
    per_peer: dict[str, int] = {}
    if not path.exists():
        return 0, 0, per_peer
    for line in open(path):
        cells = line.rstrip("\n").split(",")
        if "BYTES" in cells:
            col, peer = cells.index("BYTES"), cells.index("PEER_SRC_IP") if "PEER_SRC_IP" in cells else None
            continue
        if col is not None and len(cells) > col and cells[col].isdigit():
            rows += 1
            total += int(cells[col])
            if peer is not None:
                per_peer[cells[peer]] = per_peer.get(cells[peer], 0) + int(cells[col])
    return rows, total, per_peer


def wait_listening(proc: subprocess.Popen, port: int, sockets: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(udp_sockets(port)[0]) >= sockets:
            time.sleep(0.3)         # let plugins finish starting too
            return
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited early ({proc.returncode})")
        time.sleep(0.05)
    raise RuntimeError("collector did not start listening")


def wait_quiet(root: int, timeout: float = 30.0, window: float = 0.5, allowance: float = 0.02) -> None:
    """Wait until the collector's process tree has finished starting: less than `allowance` CPU seconds used over
    `window`.  Sockets appear before a collector is done starting (pmengine's supervisor opens them before its
    forkserver has imported numpy and forked the shards and plugins); start-up must not count as run CPU."""
    deadline = time.monotonic() + timeout
    def total() -> float:
        return sum(c for p in tree(root) if (c := cpu_seconds(p)) is not None)
    last = total()
    while time.monotonic() < deadline:
        time.sleep(window)
        now = total()
        if now - last < allowance:
            return
        last = now


def ring_drops(log_text: str) -> int:
    """pmengine: Σ ring drop counts from the stats files named in its log are not reachable after exit;
    the final shard summaries in the log carry them ('ring_drops=N' / 'dropped N')."""
    import re
    return sum(int(m) for m in re.findall(r"ring[_ ]drop\w*[=: ]+(\d+)", log_text))


def cpu_ticks() -> list[int]:
    """The box's CPU time by kind (/proc/stat's first line: user ... steal ...), in clock ticks."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """Share of the CPU time between two cpu_ticks() the hypervisor gave to other guests (field 8)."""
    spent = [b - a for a, b in zip(before, after)]
    return spent[7] / sum(spent) if len(spent) > 7 and sum(spent) > 0 else 0.0


def run_collector(scenario: Scenario, collector: str, pcap_payloads: list, expected: dict, rate_fps: float,
                  work: Path, renormalize: bool, same_pipe: bool = False, workers: str = "auto") -> Result:
    """One run: start, listen, replay at rate_fps flows/s, drain, stop, measure."""
    port = free_port()
    out = work / f"{collector}.csv"
    out.unlink(missing_ok=True)
    daemon = collector.split("-")[0]
    conf = work / f"{collector}.conf"
    shards = int(collector.split("-")[1]) if daemon == "pmengine" else 1
    nworkers = workers_for(scenario, shards, workers) if daemon == "pmengine" else 1
    conf.write_text(print_conf(scenario, daemon, port, out, renormalize, shards, same_pipe, nworkers))
    if daemon == "pmengine":
        cmd = [sys.executable, "-m", "engine.cli", "start", "--shards", str(shards), "-f", str(conf)]
    else:
        cmd = [shutil.which(daemon) or f"/usr/sbin/{daemon}", "-f", str(conf)]
    log = open(work / f"{collector}.log", "w")
    res = Result(collector, expected["flows"], workers=nworkers, shards=shards)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    sampler = None
    try:
        wait_listening(proc, port, shards)
        wait_quiet(proc.pid)
        sampler = TreeSampler(proc.pid, port)
        res.startup_cpu, receivers_startup = sampler.total(), sampler.receiver_total()
        startup_by_pid = dict(sampler.cpu)
        sampler.start()
        fpp = expected["flows"] / max(1, expected["datagrams"])
        t0, ticks = time.monotonic(), cpu_ticks()
        report = send(pcap_payloads, ("127.0.0.1", port), rate_fps / fpp if rate_fps > 0 else 0)
        res.send_rate = report.packets * fpp / report.seconds if report.seconds else 0.0
        time.sleep(1.0)                         # the kernel queue and rings drain
        res.kernel_drops = udp_sockets(port)[1]
        sampler.sample()
        proc.send_signal(signal.SIGTERM if daemon == "pmengine" else signal.SIGINT)
        try:
            _, status, usage = os.wait4(proc.pid, 0) if wait_with_timeout(proc, 60) else (0, 0, None)
        except ChildProcessError:
            usage = None
        res.wall = time.monotonic() - t0
        res.steal = steal_share(ticks, cpu_ticks())
        sampler.stop_flag.set()
        waited = (usage.ru_utime + usage.ru_stime) if usage else 0.0
        res.run_cpu = max(sampler.total(), waited) - res.startup_cpu
        res.receiver_cpu = sampler.receiver_total() - receivers_startup
        res.busiest_other_cpu = sampler.busiest_other(startup_by_pid)
        res.peak_rss = sampler.peak_rss
        res.peak_pss = sampler.peak_pss
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    time.sleep(0.5)                             # pmacct's forked print writers may still be flushing
    res.rows, got, per_peer = csv_totals(out)
    which = "bytes_renormalized" if renormalize else "bytes"
    want = expected[which]
    res.bytes_kept = got / want if want else 0.0
    res.exporters_exact = sum(per_peer.get(ip, 0) == e[which] for ip, e in expected["per_exporter"].items())
    res.ring_drops = ring_drops((work / f"{collector}.log").read_text(errors="replace"))
    return res


def wait_with_timeout(proc: subprocess.Popen, timeout: float) -> bool:
    """Poll without reaping until the process is a zombie (then wait4 reaps it with its rusage); SIGKILL after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return False
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    return True


# -- the table ----------------------------------------------------------------------------------------------

def reference_of(scenario: Scenario) -> str:
    return "sfacctd" if scenario.protocol == "sflow" else "nfacctd"


def median_result(results: list[Result]) -> Result:
    results = sorted(results, key=lambda r: r.run_cpu)
    return results[len(results) // 2]


def quiet_runs(run, runs: int, max_steal: float, attempts: int) -> tuple[list[Result], int]:
    """Call run() until `runs` results had at most max_steal of the box's CPU stolen, or `attempts` calls were
    made.  Returns the quiet results (all of them when none was quiet) and the number of calls.  A stolen run
    measures the hypervisor too: its CPU per flow and its losses move (perf/README.md, "steal")."""
    made, quiet = [], []
    while len(quiet) < runs and len(made) < max(runs, attempts):
        made.append(run())
        if made[-1].steal <= max_steal:
            quiet.append(made[-1])
    return (quiet or made), len(made)


def format_table(rows: list[tuple[Scenario, Result, Result | None]]) -> str:
    head = (f"{'scenario':13} {'collector':16} {'flows':>8} {'rate f/s':>9} {'start s':>7} {'µs/flow':>8} "
            f"{'ratio':>6} {'kept %':>7} {'exp ok':>6} {'rows':>7} {'peak RSS MB':>11} {'MB/M rows':>9} {'PSS MB':>7} "
            f"{'MB/M rows':>9} {'kdrops':>6} "
            f"{'rdrops':>6} {'steal%':>6} {'runs':>5}")
    lines = [head, "-" * len(head)]
    for sc, r, ref in rows:
        ratio = f"{r.us_per_flow / ref.us_per_flow:6.2f}" if ref is not None and ref.us_per_flow else f"{'':6}"
        label = r.collector if r.workers == 1 else f"{r.collector} w{r.workers}"     # plugin_workers
        label += f" x{r.load}" if r.load != 1 else ""
        lines.append(f"{sc.name:13} {label:16} {r.flows:8d} {r.send_rate:9,.0f} {r.startup_cpu:7.2f} "
                     f"{r.us_per_flow:8.2f} {ratio} {100 * r.bytes_kept:7.2f} {r.exporters_exact:6d} {r.rows:7d} "
                     f"{r.peak_rss / 2**20:11.1f} {r.rss_per_m_entries / 2**20:9.0f} {r.peak_pss / 2**20:7.1f} "
                     f"{r.pss_per_m_entries / 2**20:9.0f} {r.kernel_drops:6d} "
                     f"{r.ring_drops:6d} {100 * r.steal:6.1f} {f'{r.quiet_runs}/{r.attempts}':>5}")
    return "\n".join(lines)


def capacity(r: Result) -> float:
    """min(shards / receiver CPU per flow, 1 / busiest other process's CPU per flow): flows/s with one core
    per process."""
    rec, other = r.receiver_cpu / r.flows, max(r.busiest_other_cpu, 1e-9) / r.flows
    return min(r.shards / rec if rec > 0 else float("inf"), 1 / other)


def scaling_model(one: Result, two: Result, loaded: Result | None = None) -> str:
    """Shards 1 -> 2 by capacity(): each row's median over its runs (its components shown are the median-CPU
    run's); `loaded`: the 2-shard row at twice the rate (the same load per shard), the scaling then read."""
    c1, c2 = one.capacity or capacity(one), two.capacity or capacity(two)
    line = (f"CPU-time model: shards 1 → {c1:,.0f} flows/s, shards 2 → {c2:,.0f} flows/s "
            f"(receiver µs/flow {one.receiver_cpu / one.flows * 1e6:.2f} / {two.receiver_cpu / two.flows * 1e6:.2f}, "
            f"busiest other process {one.busiest_other_cpu / one.flows * 1e6:.2f} / "
            f"{two.busiest_other_cpu / two.flows * 1e6:.2f}, plugin workers {one.workers} / {two.workers}): ")
    if loaded is None:
        return line + f"scaling {c2 / c1:.2f}x"
    c3 = loaded.capacity or capacity(loaded)
    return (line + f"{c2 / c1:.2f}x at the same total rate; the same load per shard (2 shards at {loaded.load}x "
            f"the rate: receiver {loaded.receiver_cpu / loaded.flows * 1e6:.2f} µs/flow, busiest other "
            f"{loaded.busiest_other_cpu / loaded.flows * 1e6:.2f}) → {c3:,.0f} flows/s: scaling {c3 / c1:.2f}x")


EXPORTERS = 4                   # default exporters of the generated traffic (--exporters)


def prepare(scenario: Scenario, flows: int, work: Path, sampling_rate: int,
            exporters: int = EXPORTERS) -> tuple[list, dict]:
    spec = TrafficSpec(scenario.protocol, flows, exporters=exporters, cardinality=max(1000, min(flows, 1 << 24)),
                       ipv6_share=scenario.ipv6_share, sampling_rate=sampling_rate)
    pcap = work / f"{scenario.name}.pcap"
    expected = generate(spec, pcap, work / f"{scenario.name}.json")
    return load_payloads(pcap), expected


def collectors_of(scenario: Scenario, shards: list[int], rate: float = 0.0) -> list[tuple[str, int]]:
    """(collector, load) per row: the reference and pmengine-N at --rate, then with shards 1 in the list and a
    set rate, pmengine-N (N > 1) at N times the rate (the same load per shard: the scaling model's row)."""
    rows = [(reference_of(scenario), 1)] + [(f"pmengine-{n}", 1) for n in shards]
    if 1 in shards and rate > 0:
        rows += [(f"pmengine-{n}", n) for n in shards if n > 1]
    return rows


def bench(scenarios: list[Scenario], flows: int, rate: float, runs: int, shards: list[int], work: Path,
          sampling_rate: int = 1, workers: str = "auto", exporters: int = EXPORTERS, max_steal: float = 1.0,
          attempts: int = 0) -> list[tuple[Scenario, Result, Result | None]]:
    table = []
    for sc in scenarios:
        payloads, expected = prepare(sc, flows, work, sampling_rate, exporters)
        ref = None
        for collector, load in collectors_of(sc, shards, rate):
            results, made = quiet_runs(lambda: run_collector(sc, collector, payloads, expected, rate * load, work,
                                                             sampling_rate > 1, workers=workers),
                                       runs, max_steal, attempts)
            r = median_result(results)
            r.quiet_runs, r.attempts = sum(x.steal <= max_steal for x in results), made
            r.capacity = sorted(capacity(x) for x in results)[len(results) // 2]
            r.load = load
            ref = r if ref is None else ref
            table.append((sc, r, None if r is ref or load != 1 else ref))
            print(format_table([table[-1]]).splitlines()[-1], file=sys.stderr, flush=True)
    return table


def sweep(scenarios: list[Scenario], flows: int, shards: list[int], work: Path, low: float, high: float,
          steps: int, workers: str = "auto") -> list[str]:
    """Per scenario and collector: bisection on rate for the highest rate with all bytes kept."""
    lines = [f"{'scenario':13} {'collector':11} {'zero-loss flows/s':>18} {'first loss at':>14}"]
    for sc in scenarios:
        payloads, expected = prepare(sc, flows, work, 1)
        for collector, _ in collectors_of(sc, shards):
            ok, bad = 0.0, None
            lo, hi = low, high
            r = run_collector(sc, collector, payloads, expected, hi, work, False, same_pipe=True, workers=workers)
            if r.bytes_kept >= 1.0:
                ok = r.send_rate
            else:
                bad = hi
                for _ in range(steps):
                    mid = (lo + hi) / 2
                    r = run_collector(sc, collector, payloads, expected, mid, work, False, same_pipe=True, workers=workers)
                    if r.bytes_kept >= 1.0:
                        ok, lo = max(ok, r.send_rate), mid
                    else:
                        bad, hi = mid, mid
            lines.append(f"{sc.name:13} {collector:11} {ok:18,.0f} "
                         f"{(f'{bad:,.0f}' if bad else f'> {high:,.0f}'):>14}")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=300_000)
    ap.add_argument("--rate", type=float, default=100_000, help="flows/s (0: as fast as the sender goes)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--shards", default="1,2")
    ap.add_argument("--runs", type=int, default=1, help="runs per collector; the median CPU one is shown")
    ap.add_argument("--sampling-rate", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny: 6000 flows of v9-five at 20k flows/s")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-range", default="20000,400000")
    ap.add_argument("--sweep-steps", type=int, default=4)
    ap.add_argument("--workers", default="auto", help="plugin_workers of pmengine runs: auto (= shards for the "
                    "5-tuple, 1 for the matrix) or a number")
    ap.add_argument("--exporters", type=int, default=EXPORTERS, help="exporters (source addresses) of the "
                    "traffic: SO_REUSEPORT spreads them over the shards, so few exporters can load shards unevenly")
    ap.add_argument("--max-steal", type=float, default=3.0, help="%% of the box's CPU the hypervisor may steal "
                    "during a run for it to count: a row runs until it has --runs such runs or --attempts runs "
                    "(the table's runs column: quiet/made; with none quiet, the median of all)")
    ap.add_argument("--attempts", type=int, default=0, help="most runs per row (default 3 x --runs)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", help="keep pcaps, configs, logs and outputs in this folder")
    a = ap.parse_args(argv)
    if a.quick:
        a.flows, a.rate, a.scenarios = 6000, 20_000, "v9-five"
        a.attempts = a.attempts or a.runs           # a smoke test: no re-runs
    scenarios = [SCENARIOS[s] for s in a.scenarios.split(",")]
    shards = [int(s) for s in a.shards.split(",")]
    with tempfile.TemporaryDirectory(prefix="pmbench-") as tmp:
        work = Path(a.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if a.sweep:
            lo, hi = (float(x) for x in a.sweep_range.split(","))
            print("\n".join(sweep(scenarios, a.flows, shards, work, lo, hi, a.sweep_steps, a.workers)))
            return 0
        table = bench(scenarios, a.flows, a.rate, a.runs, shards, work, a.sampling_rate, a.workers, a.exporters,
                      a.max_steal / 100, a.attempts or 3 * a.runs)
    print(f"{a.flows} flows per scenario at {a.rate:,.0f} flows/s, {os.cpu_count()} CPUs, "
          f"runs={a.runs} with at most {a.max_steal:g}% stolen; ratio = pmengine µs/flow / reference µs/flow")
    print(format_table(table))
    for sc in scenarios:
        by = {(r.collector, r.load): r for s, r, _ in table if s is sc}
        if ("pmengine-1", 1) in by and ("pmengine-2", 1) in by:
            print(f"{sc.name}: {scaling_model(by['pmengine-1', 1], by['pmengine-2', 1], by.get(('pmengine-2', 2)))}")
    if a.json:
        Path(a.json).write_text(json.dumps([dict(scenario=s.name, **{k: v for k, v in vars(r).items()})
                                            for s, r, _ in table], indent=1))
    return 0 if all(r.bytes_kept == 1.0 for _, r, _ in table) else 1


if __name__ == "__main__":
    sys.exit(main())
