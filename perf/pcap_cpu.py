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
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from engine.pcap import UdpPacket, write_pcap  # noqa: E402
from engine.schema import IPV4_MAPPED_PREFIX  # noqa: E402
from netflow_encoder import (Exporter, Field, Template, V5Record, data_set, template_set,  # noqa: E402
                             v5_packet)

AGGREGATES = {
    "five": "peer_src_ip, src_host, dst_host, src_port, dst_port, proto",
    "matrix": "peer_src_ip, in_iface, out_iface, src_as, dst_as",
}
TEMPLATE = [Field(8, 4), Field(12, 4), Field(7, 2), Field(11, 2), Field(4, 1), Field(5, 1), Field(6, 1),
            Field(10, 4), Field(14, 4), Field(16, 4), Field(17, 4), Field(9, 1), Field(13, 1),
            Field(1, 8), Field(2, 8), Field(22, 4), Field(21, 4)]
FLOWS_PER_PACKET = 30


def generate(path: Path, flows: int, version: int, exporters: int = 4, cardinality: int = 200_000) -> int:
    rng = random.Random(1)
    packets = []
    now = int(time.time())
    per_exporter = [Exporter(version=version, domain_id=e, unix_secs=now) for e in range(exporters)]
    tpl = Template(256, TEMPLATE)
    if version != 5:
        for e, exp in enumerate(per_exporter):
            packets.append(exp.packet([template_set(version, [tpl])]))
    sent, seq = 0, 0
    while sent < flows:
        e = (sent // FLOWS_PER_PACKET) % exporters
        keys = [rng.randrange(cardinality) for _ in range(FLOWS_PER_PACKET)]
        if version == 5:
            recs = [V5Record(src_addr=f"10.{k >> 16}.{(k >> 8) & 255}.{k & 255}", dst_addr="192.0.2.1",
                             input=k % 8, output=k % 5, packets=3, octets=1500, first=3_000_000,
                             last=3_500_000, src_port=1024 + k % 5000, dst_port=443, proto=6,
                             src_as=k % 100, dst_as=65000) for k in keys]
            packets.append(v5_packet(recs, sys_uptime_ms=3_600_000, unix_secs=now, flow_sequence=seq))
        else:
            recs = [[f"10.{k >> 16}.{(k >> 8) & 255}.{k & 255}", "192.0.2.1", 1024 + k % 5000, 443, 6, 0, 16,
                     k % 8, k % 5, k % 100, 65000, 24, 24, 1500, 3, 3_000_000, 3_500_000] for k in keys]
            packets.append(per_exporter[e].packet([data_set(tpl, recs)], data_records=len(recs)))
        seq += FLOWS_PER_PACKET
        sent += FLOWS_PER_PACKET
    dst = IPV4_MAPPED_PREFIX + bytes([127, 0, 0, 1])
    udp = [UdpPacket(now * 1_000_000 + i, IPV4_MAPPED_PREFIX + bytes([127, 0, 1, 1 + (i % exporters)]),
                     40000, dst, 2100, p) for i, p in enumerate(packets)]
    write_pcap(str(path), udp)
    return sent


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
