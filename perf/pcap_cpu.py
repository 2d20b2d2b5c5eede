"""CPU per flow, pmengine vs nfacctd 1.7.7, on the same generated pcap, in the same run.

Both collectors read the pcap with pcap_savefile (offline: no socket, no loss),
aggregate it with the same print plugin configuration and exit; the CPU time of
each collector and all its processes is taken from getrusage(RUSAGE_CHILDREN)
around the run (children's CPU rolls up as they are reaped).

    python3 perf/pcap_cpu.py [--flows 600000] [--version 9|10|5] [--aggregate five|matrix]

This measures decoding + aggregation + output, not socket receive: the live
benchmark with a replayed pcap (rates, loss) is perf's next step.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

from traffic import AGGREGATES, TrafficSpec, generate as generate_traffic  # noqa: E402


def generate(path: Path, flows: int, version: int, exporters: int = 4, cardinality: int = 200_000) -> int:
    """Write perf/traffic.py's NetFlow traffic (v5, 9 or 10) to path; the number of flows."""
    protocol = {5: "v5", 9: "v9", 10: "ipfix"}[version]
    return generate_traffic(TrafficSpec(protocol, flows, exporters, cardinality=cardinality), path)["flows"]


def conf(pcap: Path, out: Path, aggregate: str) -> str:
    return (f"pcap_savefile: {pcap}\nplugins: print[p]\naggregate: {aggregate}\nprint_output: csv\n"
            f"print_output_file: {out}\nprint_output_file_append: true\nprint_refresh_time: 3600\n")


def csv_totals(path: Path) -> tuple[int, int]:
    """(rows, Σ BYTES) of a print plugin CSV file (headers of appended purges skipped)."""
    rows = total = 0
    col = None
    for line in open(path):
        cells = line.rstrip("\n").split(",")
        if "BYTES" in cells:
            col = cells.index("BYTES")
            continue
        if col is not None and len(cells) > col:
            rows += 1
            total += int(cells[col])
    return rows, total


def cpu_of(cmd: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=600_000)
    ap.add_argument("--version", type=int, choices=(5, 9, 10), default=9)
    ap.add_argument("--aggregate", choices=sorted(AGGREGATES), default="five")
    args = ap.parse_args()
    nfacctd = shutil.which("nfacctd") or "/usr/sbin/nfacctd"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pcap = work / "flows.pcap"
        flows = generate(pcap, args.flows, args.version)
        agg = AGGREGATES[args.aggregate]
        # nfacctd purges early when its cache fills: append, and compare byte totals, not row counts
        (work / "nf.conf").write_text("daemonize: false\nplugin_pipe_size: 2048000000\n"
                                      "plugin_buffer_size: 2048000\n" + conf(pcap, work / "nf.csv", agg))
        (work / "pm.conf").write_text(conf(pcap, work / "pm.csv", agg))
        nf_cpu, nf_wall = cpu_of([nfacctd, "-f", str(work / "nf.conf")], work)
        pm_cpu, pm_wall = cpu_of([sys.executable, "-m", "engine.cli", "start", "-f", str(work / "pm.conf")], REPO)
        nf_rows, nf_bytes = csv_totals(work / "nf.csv")
        pm_rows, pm_bytes = csv_totals(work / "pm.csv")
    print(f"NetFlow v{args.version}, {flows} flows, aggregate {args.aggregate} ({agg})")
    print(f"{'collector':10} {'CPU s':>8} {'wall s':>8} {'CPU µs/flow':>12} {'rows':>8} {'bytes':>14}")
    print(f"{'nfacctd':10} {nf_cpu:8.2f} {nf_wall:8.2f} {nf_cpu / flows * 1e6:12.3f} {nf_rows:8d} {nf_bytes:14d}")
    print(f"{'pmengine':10} {pm_cpu:8.2f} {pm_wall:8.2f} {pm_cpu / flows * 1e6:12.3f} {pm_rows:8d} {pm_bytes:14d}")
    print(f"ratio pmengine/nfacctd CPU per flow: {pm_cpu / nf_cpu:.2f}")
    return 0 if nf_bytes == pm_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
