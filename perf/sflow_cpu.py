"""sFlow samples decoded per CPU second, pmengine vs sfacctd 1.7.7, on the same generated pcap, in the same run.

Both collectors read the pcap with pcap_savefile (offline: no socket, no loss), aggregate it with the same
print plugin configuration and exit; the CPU time of each collector and all its processes comes from
getrusage(RUSAGE_CHILDREN) around the run (perf/pcap_cpu.py's helpers).

    python3 perf/sflow_cpu.py [--samples 200000] [--per-datagram 8] [--aggregate five|matrix]

Traffic: tests/sflow_encoder.generated_traffic (IPv4 and IPv6 agents and inner packets, VLAN tags,
TCP/UDP/ICMP, extended switch/router/gateway records, a counter sample every tenth datagram).  Byte totals
are checked against the encoder's truth: sfacctd drops the samples with two VLAN tags (a named difference of
tests/test_sflow_differential.py), so its expected total leaves them out.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

from pcap_cpu import AGGREGATES, cpu_of, csv_totals  # noqa: E402
from traffic import sflow_mixed_pcap  # noqa: E402


def conf(pcap: Path, out: Path, aggregate: str) -> str:
    return (f"pcap_savefile: {pcap}\nplugins: print[p]\naggregate: {aggregate}\nprint_output: csv\n"
            f"print_output_file: {out}\nprint_output_file_append: true\nprint_refresh_time: 3600\n"
            f"print_history: 5m\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--per-datagram", type=int, default=8)
    ap.add_argument("--aggregate", choices=sorted(AGGREGATES), default="five")
    args = ap.parse_args()
    sfacctd = shutil.which("sfacctd") or "/usr/sbin/sfacctd"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pcap = work / "sflow.pcap"
        samples, pm_expected, sf_expected = sflow_mixed_pcap(pcap, args.samples, args.per_datagram)
        agg = AGGREGATES[args.aggregate]
        (work / "sf.conf").write_text("daemonize: false\nplugin_pipe_size: 2048000000\n"
                                      "plugin_buffer_size: 2048000\n" + conf(pcap, work / "sf.csv", agg))
        (work / "pm.conf").write_text(conf(pcap, work / "pm.csv", agg) + "sfacctd_port: 6343\n")
        sf_cpu, sf_wall = cpu_of([sfacctd, "-f", str(work / "sf.conf")], work)
        pm_cpu, pm_wall = cpu_of([sys.executable, "-m", "engine.cli", "start", "-f", str(work / "pm.conf")], REPO)
        sf_rows, sf_bytes = csv_totals(work / "sf.csv")
        pm_rows, pm_bytes = csv_totals(work / "pm.csv")
    print(f"sFlow v5, {samples} flow samples ({args.per_datagram} per datagram), aggregate {args.aggregate} ({agg})")
    print(f"{'collector':10} {'CPU s':>8} {'wall s':>8} {'samples/CPU s':>14} {'rows':>8} {'bytes':>12} "
          f"{'expected':>12}")
    for name, cpu, wall, rows, got, want in (("sfacctd", sf_cpu, sf_wall, sf_rows, sf_bytes, sf_expected),
                                             ("pmengine", pm_cpu, pm_wall, pm_rows, pm_bytes, pm_expected)):
        print(f"{name:10} {cpu:8.2f} {wall:8.2f} {samples / cpu:14,.0f} {rows:8d} {got:12d} {want:12d}")
    print(f"ratio pmengine/sfacctd CPU per sample: {pm_cpu / sf_cpu:.2f}")
    return 0 if (sf_bytes, pm_bytes) == (sf_expected, pm_expected) else 1


if __name__ == "__main__":
    sys.exit(main())
