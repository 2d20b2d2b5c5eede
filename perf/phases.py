"""Where pmengine's CPU goes, by process and phase: idle after start, replay, drain, idle, stop.

    python3 perf/phases.py --scenario v9-matrix --flows 600000 --rate 200000 --shards 1

Each process of the tree (named from the runtime folder's children.json: supervisor, forkserver, shard-N,
plugin) with its CPU seconds in each phase and per flow during the replay; the idle phases give the
collector's standing cost per second, which nfacctd does not pay.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (REPO, SCENARIOS, cpu_seconds, csv_totals, free_port, udp_sockets, wait_quiet, prepare, print_conf, tree,  # noqa: E402
                   wait_listening, wait_with_timeout, workers_for)
from replay import send  # noqa: E402


def names(root: int) -> dict[int, str]:
    out = {root: "supervisor"}
    for path in glob.glob("/dev/shm/pmengine*/children.json") + glob.glob(f"{tempfile.gettempdir()}/pmengine*/children.json"):
        try:
            info = json.load(open(path))
        except (OSError, ValueError):
            continue
        if info.get("pid") == root:
            out.update({c["pid"]: c["name"] for c in info["children"] if c["pid"]})
    return out


def snapshot(root: int) -> dict[int, float]:
    return {p: c for p in tree(root) if (c := cpu_seconds(p)) is not None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="v9-matrix")
    ap.add_argument("--flows", type=int, default=600000)
    ap.add_argument("--rate", type=float, default=200000)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--workers", default="auto", help="plugin_workers: auto (bench.py's rule) or a number")
    a = ap.parse_args()
    sc = SCENARIOS[a.scenario]
    work = Path(tempfile.mkdtemp(prefix="pm-phases-"))
    payloads, expected = prepare(sc, a.flows, work, 1)
    port = free_port()
    conf = work / "pm.conf"
    conf.write_text(print_conf(sc, "pmengine", port, work / "out.csv", False, a.shards,
                               workers=workers_for(sc, a.shards, a.workers)))
    log = open(work / "pm.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "start", "--shards", str(a.shards), "-f", str(conf)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    phases = []
    try:
        wait_listening(proc, port, a.shards)
        wait_quiet(proc.pid)
        marks = [("start", snapshot(proc.pid))]
        time.sleep(a.idle)
        marks.append(("idle", snapshot(proc.pid)))
        fpp = expected["flows"] / max(1, expected["datagrams"])
        rep = send(payloads, ("127.0.0.1", port), a.rate / fpp if a.rate > 0 else 0)
        marks.append(("replay", snapshot(proc.pid)))
        time.sleep(1.0)
        marks.append(("drain1s", snapshot(proc.pid)))
        time.sleep(a.idle)
        marks.append(("idle2", snapshot(proc.pid)))
        who = names(proc.pid)
        kdrops = udp_sockets(port)[1]
        last = dict(marks[-1][1])
        proc.send_signal(signal.SIGTERM)
        # sample until exit
        while proc.poll() is None:
            for p, c in snapshot(proc.pid).items():
                last[p] = c
            time.sleep(0.02)
        marks.append(("stop", last))
        wait_with_timeout(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    time.sleep(0.3)
    rows, got, _ = csv_totals(work / "out.csv")
    print(f"output: {rows} rows, bytes kept {got / expected['bytes'] * 100:.3f}%, kernel drops {kdrops}")
    pids = sorted({p for _, s in marks for p in s})
    print(f"{a.scenario} shards={a.shards} flows={a.flows} sent at {rep.rate * fpp:,.0f} flows/s "
          f"in {rep.seconds:.2f}s; idle phases {a.idle}s")
    head = f"{'process':22}" + "".join(f"{n:>10}" for n, _ in marks[1:]) + f"{'µs/flow':>10}"
    print(head)
    for p in pids:
        row = f"{who.get(p, str(p)):22}"
        prev = marks[0][1].get(p, 0.0)
        for n, s in marks[1:]:
            c = s.get(p, prev)
            row += f"{c - prev:10.3f}"
            prev = c
        rep_cpu = marks[2][1].get(p, 0) - marks[1][1].get(p, 0) + marks[3][1].get(p, 0) - marks[2][1].get(p, 0)
        row += f"{rep_cpu / a.flows * 1e6:10.3f}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
