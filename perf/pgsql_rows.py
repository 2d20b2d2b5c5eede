#!/usr/bin/env python3
"""Rows/s into PostgreSQL: pmengine's pgsql plugin beside nfacctd 1.7.7's, same data, same server.

A NetFlow v5 pcap of N flows with N distinct 5-tuples (one aggregated row
each, one purge) is read by both collectors (`pcap_savefile`), each writing
into its own database of one throwaway PostgreSQL server (tests/pg_server.py)
with pmacct's acct_v9 table (primary key; the default UPDATE-then-INSERT
mode, or `--mode insert` for sql_dont_try_update, with sql_use_copy for
nfacctd).  Reported: the write time of the purge (pmengine: its writer's
write_seconds; nfacctd: the purge's ET, whole seconds), the whole run's wall
time, rows/s of each and the ratio.  Both tables are checked to hold N rows
and the same packet total.

    python3 perf/pgsql_rows.py --rows 1000000 [--mode upsert|insert]
"""
from __future__ import annotations

import argparse
import json
import re
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
from netflow_encoder import V5Record, v5_packet  # noqa: E402
from pg_server import PgServer, pmacct_table_sql  # noqa: E402

AGGREGATE = "src_host, dst_host, src_port, dst_port, proto"
FLOWS_PER_PACKET = 30


def generate(path: Path, rows: int) -> int:
    """N flows, all with distinct (src, dst, sport) keys; returns the packet total."""
    now = int(time.time())
    packets, total = [], 0
    for base in range(0, rows, FLOWS_PER_PACKET):
        recs = []
        for i in range(base, min(rows, base + FLOWS_PER_PACKET)):
            recs.append(V5Record(src_addr=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                                 dst_addr=f"192.0.{(i >> 24) & 255}.1", src_port=1024 + (i >> 24), dst_port=443,
                                 proto=6, packets=1 + i % 5, octets=1000, first=3_000_000, last=3_500_000))
            total += 1 + i % 5
        packets.append(v5_packet(recs, sys_uptime_ms=3_600_000, unix_secs=now, flow_sequence=base))
    dst = IPV4_MAPPED_PREFIX + bytes([127, 0, 0, 1])
    write_pcap(str(path), [UdpPacket(now * 1_000_000 + i, IPV4_MAPPED_PREFIX + bytes([127, 0, 1, 1]), 40000, dst,
                                     2100, p) for i, p in enumerate(packets)])
    return total


def conf(pcap: Path, port: int, db: str, mode: str) -> str:
    text = (f"pcap_savefile: {pcap}\nplugins: pgsql[p]\naggregate: {AGGREGATE}\nsql_host: 127.0.0.1\n"
            f"sql_port: {port}\nsql_user: postgres\nsql_db: {db}\nsql_table: acct_v9\nsql_table_version: 9\n"
            "sql_refresh_time: 3600\nsql_history: 1h\nsql_history_roundoff: h\n")
    if mode == "insert":
        text += "sql_dont_try_update: true\n"
    return text


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=7200)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--mode", choices=("upsert", "insert"), default="upsert")
    ap.add_argument("--skip-nfacctd", action="store_true")
    args = ap.parse_args()
    nfacctd = shutil.which("nfacctd") or "/usr/sbin/nfacctd"
    with tempfile.TemporaryDirectory() as tmp, PgServer() as pg:
        work = Path(tmp)
        pcap = work / "flows.pcap"
        packets = generate(pcap, args.rows)
        results = []
        for who in ("pmengine",) + (() if args.skip_nfacctd else ("nfacctd",)):
            db = pg.create_db(who)
            pg.execute(db, pmacct_table_sql(9))
            text = conf(pcap, pg.port, db, args.mode)
            if who == "nfacctd":
                text = ("daemonize: false\nplugin_pipe_size: 2048000000\nplugin_buffer_size: 2048000\n"
                        f"sql_cache_entries: {max(32771, args.rows * 2 + 1)}\n" + text)
                if args.mode == "insert":
                    text += "sql_use_copy: true\n"
            (work / f"{who}.conf").write_text(text)
            cmd = ([nfacctd, "-f", str(work / "nfacctd.conf")] if who == "nfacctd" else
                   [sys.executable, "-m", "engine.cli", "start", "-f", str(work / "pmengine.conf")])
            wall, log = run(cmd, REPO)
            if who == "pmengine":
                counters = json.loads(re.findall(r"pgsql writer closed: (\{.*\})", log)[-1])
                write_s = counters["write_seconds"]
            else:
                ets = [int(x) for x in re.findall(r"QN: \d+/\d+, ET: (\d+)", log)]
                write_s = float(sum(ets))
            rows, total = pg.query(db, "SELECT count(*), coalesce(sum(packets), 0) FROM acct_v9")[0]
            results.append((who, write_s, wall, rows, int(total)))
    print(f"{args.rows} aggregated rows (distinct 5-tuples), one purge, acct_v9, mode {args.mode}")
    print(f"{'collector':10} {'write s':>8} {'rows/s':>10} {'run wall s':>11} {'rows in PG':>11} {'packets ok':>10}")
    for who, write_s, wall, rows, total in results:
        rate = rows / write_s if write_s else float("inf")
        print(f"{who:10} {write_s:8.2f} {rate:10.0f} {wall:11.2f} {rows:11d} {str(total == packets):>10}")
    if len(results) == 2 and results[1][1]:
        pm, nf = results[0], results[1]
        print(f"ratio pmengine/nfacctd rows/s (write time): {(pm[3] / pm[1]) / (nf[3] / max(nf[1], 1)):.2f}; "
              f"run wall: {nf[2] / pm[2]:.2f}x")
    return 0 if all(r[3] == args.rows and r[4] == packets for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
