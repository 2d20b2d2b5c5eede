"""Saturated throughput with the sender out of the way: queue a whole replay on a stopped pmengine, then time its
shards draining it.

    python3 perf/drain.py --scenario v9-matrix --flows 1200000 --shards 1,2 --runs 3 --exporters 16
    python3 perf/drain.py --scenario ipfix-five --flows 7200000 --shards 1,2 --workers 2 --exporters 256 \
        --plugin-pipe-size 2147483648 --pin 2,3          # a many-core box: long drains, no ring drops

On a box with CPUs to spare (the 16-core runs in perf/README.md), the plugin, the kernel's frees and the poll run
beside the shards instead of on their CPUs, so the wall time is the throughput; there, drains of a few 100k
flows per shard are too short to read a 10% difference (single runs of one shard moved 0.156-0.227 us/flow):
use millions.  `--workers` holds plugin_workers fixed across shard counts (bench.py's `auto` gives the 5-tuple
one worker per shard, and a shard that splits its records among workers pays for the split: a cost of the
workers, not of the second shard).

Per run: start pmengine (print plugin, the scenario's aggregate, as perf/bench.py) with socket receive buffers
that hold the whole replay (nfacctd_pipe_size, forced past rmem_max as root), wait until it listens and is quiet,
SIGSTOP its supervisor and shards (by PID: processes this script started), replay the pcap as fast as the sender
goes, then SIGCONT the shards and poll each socket's queue (/proc/net/udp rx_queue) every 2 ms until all are
empty. That is done twice: first with a small warm-up replay, unmeasured (a shard's first full batches fault in
its receive slots and batch buffers: the kernel clearing pages, a one-off cost that a cold drain charges twice as
often to 2 shards as to 1), then with the measured one. Then SIGCONT the supervisor (its hang watch then finds
the shards beating again; a shard it restarted anyway is counted), stop it, check every byte reached the output.
While the shards drain, nothing else of the bench runs: every receive comes back full and no shard sleeps, so
this is the receivers' throughput at saturation -- the sender "runs elsewhere" in time. The exporters' source
ports pick the shard (SO_REUSEPORT), so a few exporters can load the shards unevenly: the wall time is the
slowest shard's, and the CPU model (shards / Σ shard CPU per flow, a core per shard) does not depend on the
spread.

Besides the shards' CPU per flow, a run reports the part of it spent in the kernel (stime ticks) and the whole
machine's busy CPU per flow (/proc/stat): with one shard the kernel frees the drained datagrams partly on the
other, idle CPU (skb_attempt_defer_free, which hands a buffer back to the CPU that allocated it), work that
counts for no shard; with two, both CPUs are shards'.  `--skb-defer-max 0` (root; the old value is put back
after) turns that hand-back off for the run, so every shard frees what it drained itself and pays for it with
one shard as with two: the same accounting for both counts.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (CLK, REPO, SCENARIOS, cpu_seconds, cpu_ticks, csv_totals, free_port, prepare,  # noqa: E402
                   print_conf, udp_rows, udp_sockets, user_system_ticks, wait_listening, wait_quiet,
                   wait_with_timeout, workers_for)
from phases import names  # noqa: E402
from replay import send  # noqa: E402

SKB_DEFER_MAX = Path("/proc/sys/net/core/skb_defer_max")
POLL_S = 0.002          # the queues' poll: ~1% of a 200 ms drain; faster polls take CPU the shards need
DRAIN_TIMEOUT_S = 60.0


def socket_queues(port: int) -> dict[str, int]:
    """Bytes queued per UDP socket bound to `port`: inode -> rx_queue."""
    return {cols[9]: int(cols[4].split(":")[1], 16) for cols in udp_rows(port)}


def machine_busy() -> float:
    """CPU seconds all CPUs of the machine spent busy so far (/proc/stat: everything but idle and iowait)."""
    ticks = cpu_ticks()
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK


def shards_ticks(pids) -> tuple[int, int]:
    """The processes' utime and stime so far, summed (clock ticks; a process gone counts 0)."""
    times = [t for t in map(user_system_ticks, pids) if t is not None]
    return sum(u for u, _ in times), sum(k for _, k in times)


def buffer_for(payloads: list) -> int:
    """A receive buffer that holds the whole replay in one socket: the kernel charges a datagram ~2x its payload
    + ~0.6 KiB (engine/shards/gather.py); half as much again to spare."""
    charged = sum(2 * len(p) + 640 for _, p in payloads)
    return min(1 << 31, int(1.5 * charged) + (8 << 20))


def shards_of(root: int) -> set[int]:
    """The PIDs of the shards of the pmengine whose supervisor is `root`."""
    return {pid for pid, name in names(root).items() if name.startswith("shard-")}


def pin_tree(root: int, shard_pids: set[int], cpus: list[int]) -> None:
    """Shard k (by PID order) on cpus[k % len(cpus)]; the engine's other processes and this script on the CPUs
    left (where there are any): on a VM whose CPUs differ in speed (siblings of a busy core, say) the same
    CPUs then run 1 shard and 2, and the plugin and the poll stay off them.  Processes this script started."""
    for k, pid in enumerate(sorted(shard_pids)):
        os.sched_setaffinity(pid, {cpus[k % len(cpus)]})
    rest = os.sched_getaffinity(0) - set(cpus)
    if rest:
        for pid in set(names(root)) - shard_pids:
            try:
                os.sched_setaffinity(pid, rest)
            except ProcessLookupError:              # a child that has just exited
                pass
        os.sched_setaffinity(0, rest)


def drain_run(scenario, shards: int, payloads: list, expected: dict, work: Path,
              warmup: tuple[list, dict] | None = None, pipe_size: int | None = None,
              pin: list[int] | None = None, workers: str = "auto") -> dict:
    """One run; with warmup (payloads, expected totals), those are queued and drained first, unmeasured: the
    shards' first full batches fault in their receive slots and batch buffers (kernel page clearing, ~10% of
    a cold drain), which a collector pays once, not per flow.  pipe_size: the plugin's plugin_pipe_size (None:
    the default rings): a drain is a burst far faster than a plugin aggregates it, so where the records are
    not folded much a ring must hold most of the replay, or the shard drops (and stops copying) records.
    pin: CPUs for the shards (pin_tree)."""
    warm_payloads, warm_expected = warmup or ([], {"bytes": 0})
    port = free_port()
    out = work / f"drain-{shards}.csv"
    out.unlink(missing_ok=True)
    conf = print_conf(scenario, "pmengine", port, out, False, shards, workers=workers_for(scenario, shards, workers),
                      socket_buffer=buffer_for(max(payloads, warm_payloads, key=len)))
    if pipe_size:
        conf += f"plugin_pipe_size: {pipe_size}\n"
    (work / "drain.conf").write_text(conf)
    log = open(work / f"drain-{shards}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "start", "--shards", str(shards), "-f",
                             str(work / "drain.conf")], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    stopped: list[int] = []
    try:
        wait_listening(proc, port, shards)
        wait_quiet(proc.pid)
        shard_pids = shards_of(proc.pid)
        assert len(shard_pids) == shards, names(proc.pid)
        if pin:
            pin_tree(proc.pid, shard_pids, pin)
        os.kill(proc.pid, signal.SIGSTOP)               # the supervisor first: no hang watch while they stop
        stopped.append(proc.pid)
        if warm_payloads:
            _queue_and_drain(warm_payloads, port, shard_pids, stopped)
        queued, drops, emptied, shard_cpu, kernel_share, machine = _queue_and_drain(payloads, port, shard_pids,
                                                                                    stopped)
        os.kill(proc.pid, signal.SIGCONT)
        stopped.clear()
        time.sleep(1.0)                                 # the rings drain into the plugin
        restarted = len(shards_of(proc.pid) - shard_pids)
        proc.send_signal(signal.SIGTERM)
        wait_with_timeout(proc, 60)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()
    time.sleep(0.3)
    _, got, _ = csv_totals(out)
    flows = expected["flows"]
    sent_bytes = expected["bytes"] + warm_expected["bytes"]
    wall = max(emptied.values()) if len(emptied) == len(queued) and emptied else float("nan")
    return dict(shards=shards, sent=len(payloads) + len(warm_payloads), queued=[queued[k] for k in sorted(queued)],
                drained_s=[emptied.get(k, float("nan")) for k in sorted(queued)], wall=wall,
                flows_per_s=flows / wall, shard_us_per_flow=shard_cpu / flows * 1e6,
                cpu_model=shards * flows / shard_cpu if shard_cpu > 0 else 0.0,
                kernel_share=kernel_share,
                machine_us_per_flow=machine / flows * 1e6, kernel_drops=drops, restarted=restarted,
                kept=got / sent_bytes if sent_bytes else 0.0)


def _queue_and_drain(payloads: list, port: int, shard_pids: set[int], stopped: list[int]
                     ) -> tuple[dict[str, int], int, dict[str, float], float, float, float]:
    """Stop the shards, replay `payloads` into their queues, continue them and poll the queues until all are
    empty.  Returns the bytes queued per socket, the kernel's drops so far, each socket's drain time (s), and
    while they drained: the shards' CPU seconds, the share of it in the kernel (stime over utime + stime: both
    in 10 ms ticks, so the share stays within 0-1 even where a short drain spans few ticks), and the whole
    machine's busy CPU seconds (the kernel's work elsewhere, e.g. freeing the datagrams on the CPU that received
    them, the plugin, this poll)."""
    for pid in shard_pids:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
    send(payloads, ("127.0.0.1", port), 0)
    time.sleep(0.2)                                     # the loopback's last datagrams reach the queues
    queued, drops = socket_queues(port), udp_sockets(port)[1]
    before = {p: cpu_seconds(p) or 0.0 for p in shard_pids}
    ticks_before = shards_ticks(shard_pids)
    machine_before = machine_busy()
    t0 = time.monotonic()
    for pid in shard_pids:
        os.kill(pid, signal.SIGCONT)
        stopped.remove(pid)
    emptied: dict[str, float] = {}
    while len(emptied) < len(queued) and time.monotonic() - t0 < DRAIN_TIMEOUT_S:
        now = time.monotonic()
        for inode, left in socket_queues(port).items():
            if left == 0 and inode not in emptied:
                emptied[inode] = now - t0
        time.sleep(POLL_S)
    machine = machine_busy() - machine_before
    user, kernel = (b - a for a, b in zip(ticks_before, shards_ticks(shard_pids)))
    return (queued, drops, emptied, sum((cpu_seconds(p) or 0.0) - before[p] for p in shard_pids),
            kernel / (user + kernel) if user + kernel > 0 else 0.0, machine)


def skb_defer_max() -> str:
    """net.core.skb_defer_max now ('-': this kernel has none)."""
    return SKB_DEFER_MAX.read_text().strip() if SKB_DEFER_MAX.exists() else "-"


class SkbDeferMax:
    """with SkbDeferMax(n): net.core.skb_defer_max is n inside (None: left alone), its old value after."""

    def __init__(self, value: int | None) -> None:
        self.value, self.old = value, None

    def __enter__(self) -> "SkbDeferMax":
        if self.value is not None:
            self.old = SKB_DEFER_MAX.read_text().strip()
            SKB_DEFER_MAX.write_text(f"{self.value}\n")
        return self

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            SKB_DEFER_MAX.write_text(f"{self.old}\n")


def format_run(r: dict) -> str:
    return (f"{r['shards']:6d} {'/'.join(f'{q / 2**20:.0f}' for q in r['queued']):>16} "
            f"{'/'.join(f'{d * 1e3:.0f}' for d in r['drained_s']):>14} {r['flows_per_s']:12,.0f} "
            f"{r['shard_us_per_flow']:9.3f} {100 * r['kernel_share']:7.0f} {r['machine_us_per_flow']:10.3f} "
            f"{r['cpu_model']:12,.0f} {r['restarted']:8d} {r['kernel_drops']:6d} "
            f"{100 * r['kept']:7.2f}")


def cpu_list(text: str) -> list[int]:
    """--pin's value: CPU numbers separated by commas."""
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of CPU numbers") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="v9-matrix", choices=sorted(SCENARIOS))
    ap.add_argument("--flows", type=int, default=1_200_000)
    ap.add_argument("--shards", default="1,2")
    ap.add_argument("--runs", type=int, default=3, help="runs per shard count, interleaved; medians reported")
    ap.add_argument("--exporters", type=int, default=16, help="more exporters spread evenlier over the shards")
    ap.add_argument("--warmup", type=int, default=200_000,
                    help="flows queued and drained first in every run, not measured (0: none)")
    ap.add_argument("--skb-defer-max", type=int, default=None,
                    help="net.core.skb_defer_max during the runs (root; put back after). 0: a shard frees the "
                         "datagrams it drained on its own CPU, not on the idle one that received them")
    ap.add_argument("--plugin-pipe-size", type=int, default=None,
                    help="the plugin's plugin_pipe_size in bytes (default: pmengine's 32 MiB rings)")
    ap.add_argument("--pin", type=cpu_list, default=None,
                    help="CPUs for the shards, e.g. 0,1: shard k on the k-th; everything else on the other CPUs")
    ap.add_argument("--workers", default="auto",
                    help="plugin_workers: auto (bench.py's: shards for the 5-tuple, 1 for the matrix) or a number")
    a = ap.parse_args(argv)
    pin = a.pin
    if pin and not set(pin) <= os.sched_getaffinity(0):
        ap.error(f"--pin {pin}: this process may run on CPUs {sorted(os.sched_getaffinity(0))} only")
    if a.skb_defer_max is not None and not os.access(SKB_DEFER_MAX, os.W_OK):
        ap.error(f"--skb-defer-max: {SKB_DEFER_MAX} is missing or not writable (it needs root)")
    sc = SCENARIOS[a.scenario]
    shard_counts = [int(s) for s in a.shards.split(",")]
    with tempfile.TemporaryDirectory(prefix="pmdrain-") as tmp, SkbDeferMax(a.skb_defer_max):
        work = Path(tmp)
        payloads, expected = prepare(sc, a.flows, work, 1, a.exporters)
        warmup = None
        if a.warmup:
            (work / "warmup").mkdir()
            warmup = prepare(sc, a.warmup, work / "warmup", 1, a.exporters)
        print(f"{sc.name}: {expected['flows']} flows in {expected['datagrams']} datagrams from {a.exporters} "
              f"exporters, queued on stopped shards, then drained (after {a.warmup} flows the same way, unmeasured); "
              f"{os.cpu_count()} CPUs; skb_defer_max {skb_defer_max()}; plugin_pipe_size "
              f"{a.plugin_pipe_size or 'default'}; shards pinned to CPUs {','.join(map(str, pin)) if pin else '-'}")
        print(f"{'shards':>6} {'MiB per socket':>16} {'drained ms':>14} {'wall flows/s':>12} {'shard µs':>9} "
              f"{'kernel%':>7} {'machine µs':>10} {'CPU model':>12} {'restarts':>8} {'kdrops':>6} {'kept %':>7}")
        runs: dict[int, list[dict]] = {n: [] for n in shard_counts}
        for _ in range(a.runs):
            for n in shard_counts:                      # interleaved: the host's drift hits every count alike
                r = drain_run(sc, n, payloads, expected, work, warmup, a.plugin_pipe_size, pin, a.workers)
                runs[n].append(r)
                print(format_run(r), flush=True)
    med = {n: {k: statistics.median(r[k] for r in rs)
               for k in ("flows_per_s", "cpu_model", "shard_us_per_flow", "kernel_share", "machine_us_per_flow")}
           for n, rs in runs.items()}
    base = med[shard_counts[0]]
    for n in shard_counts:
        m = med[n]
        print(f"shards {n}: median wall {m['flows_per_s']:,.0f} flows/s, shard CPU {m['shard_us_per_flow']:.3f} "
              f"µs/flow ({100 * m['kernel_share']:.0f}% kernel), machine {m['machine_us_per_flow']:.3f} µs/flow, "
              f"CPU model {m['cpu_model']:,.0f} flows/s; vs shards {shard_counts[0]}: "
              f"wall {m['flows_per_s'] / base['flows_per_s']:.2f}x, "
              f"CPU model {m['cpu_model'] / base['cpu_model']:.2f}x")
    ok = all(r["kept"] == 1.0 and r["kernel_drops"] == 0 and not r["restarted"] for rs in runs.values() for r in rs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
