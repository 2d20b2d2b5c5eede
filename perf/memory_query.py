"""Memory plugin: `-s -O json` latency on a big table and memory per entry, pmengine beside nfacctd 1.7.7.

    python perf/memory_query.py [--flows 1000000] [--repeat 3]

Generates a NetFlow v5 pcap of --flows flows with distinct 5-tuples (vectorised,
30 flows per packet), loads it into nfacctd (memory plugin; 4 GiB of pools: with imt_mem_pools_number 0 nfacctd 1.7.7
still stops at ~31k entries, "Unable to allocate more memory pools")
and into pmengine (memory plugin), waits until each table holds every key, then:
- times `pmacct -s -O json` against nfacctd and `pmengine client -s -O json`
  against pmengine (best of --repeat, output read through a pipe and discarded);
- reads the plugin process's RSS after loading, and after loading a 1-packet pcap
  (the baseline), and prints (RSS - baseline) / entries for each.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.pcap import UdpPacket, write_pcap  # noqa: E402

NFACCTD = shutil.which("nfacctd") or "/usr/sbin/nfacctd"
PMACCT = "/usr/bin/pmacct"
PER_PACKET = 30
AGGREGATE = "src_host, dst_host, src_port, dst_port, proto"
V5_HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("uptime", ">u4"), ("secs", ">u4"), ("nsecs", ">u4"),
                      ("seq", ">u4"), ("etype", "u1"), ("eid", "u1"), ("sampling", ">u2")])
V5_RECORD = np.dtype([("src", ">u4"), ("dst", ">u4"), ("nexthop", ">u4"), ("input", ">u2"), ("output", ">u2"),
                      ("packets", ">u4"), ("octets", ">u4"), ("first", ">u4"), ("last", ">u4"), ("sport", ">u2"),
                      ("dport", ">u2"), ("pad1", "u1"), ("flags", "u1"), ("proto", "u1"), ("tos", "u1"),
                      ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2")])
EXPORTER = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 9])
COLLECTOR = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 254])


def make_pcap(path: Path, flows: int) -> None:
    """flows distinct (src, dst, sport, dport, proto) keys, vectorised."""
    i = np.arange(flows, dtype=np.uint64)
    rec = np.zeros(flows, dtype=V5_RECORD)
    rec["src"] = (10 << 24) + (i % 65536)
    rec["dst"] = (172 << 24) + (16 << 16) + (i // 65536) % 65536
    rec["sport"], rec["dport"] = 1024 + i % 7, 80
    rec["proto"] = 6
    rec["packets"] = 1 + i % 50
    rec["octets"] = 64 + (i * 2654435761) % 1_000_000
    packets = []
    for n, start in enumerate(range(0, flows, PER_PACKET)):
        chunk = rec[start:start + PER_PACKET]
        head = np.zeros(1, dtype=V5_HEADER)
        head["version"], head["count"], head["uptime"] = 5, len(chunk), 100_000
        head["secs"], head["seq"] = 1_700_000_000, start
        packets.append(UdpPacket(1_700_000_000_000_000 + n, EXPORTER, 40000, COLLECTOR, 2100,
                                 head.tobytes() + chunk.tobytes()))
    write_pcap(str(path), packets)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Daemon:
    def __init__(self, kind: str, work: Path, pcap: Path, tag: str) -> None:
        self.kind, self.pipe = kind, work / f"{kind}-{tag}.pipe"
        conf = work / f"{kind}-{tag}.conf"
        conf.write_text(f"daemonize: false\nplugins: memory[m]\naggregate: {AGGREGATE}\nimt_path: {self.pipe}\n"
                        f"imt_mem_pools_number: 65536\nimt_mem_pools_size: 65536\npcap_savefile: {pcap}\npcap_savefile_wait: true\n"
                        "plugin_pipe_size: 268435456\nplugin_buffer_size: 65536\n")
        self.log = open(work / f"{kind}-{tag}.log", "w+")
        cmd = [NFACCTD, "-f", str(conf)] if kind == "nfacctd" else \
            [sys.executable, "-m", "engine.cli", "start", "-f", str(conf)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def client(self, *args: str) -> list[str]:
        if self.kind == "nfacctd":
            return [PMACCT, "-p", str(self.pipe), *args]
        return [sys.executable, "-m", "engine.cli", "client", "-p", str(self.pipe), *args]

    def entries(self) -> int:
        out = subprocess.run(self.client("-c", "proto", "-N", "*", "-n", "all"), cwd=REPO, capture_output=True,
                             text=True).stdout.split()
        return int(out[3]) if len(out) == 4 else -1

    def wait_entries(self, want: int, timeout: float) -> None:
        deadline, last, stable = time.monotonic() + timeout, -1, 0
        while time.monotonic() < deadline:
            got = self.entries()
            if got >= want:
                return
            stable = stable + 1 if got == last and got > 0 else 0
            if stable > 20:
                print(f"  {self.kind}: table stuck at {got} of {want} entries (drops?)", file=sys.stderr)
                return
            last = got
            time.sleep(0.5)
        raise TimeoutError(f"{self.kind}: table did not fill ({last} of {want})")

    def plugin_pid(self) -> int:
        if self.kind == "nfacctd":
            for pid in children(self.proc.pid):
                if "IMT Plugin" in cmdline(pid):
                    return pid
            raise RuntimeError("nfacctd memory plugin process not found")
        self.log.flush()
        found = re.search(r"started plugin-memory-m \(pid (\d+)\)", Path(self.log.name).read_text())
        return int(found.group(1))

    def time_query(self, repeat: int) -> tuple[float, int]:
        best, size = float("inf"), 0
        for _ in range(repeat):
            started = time.perf_counter()
            proc = subprocess.run(self.client("-s", "-O", "json"), cwd=REPO, stdout=subprocess.PIPE)
            best = min(best, time.perf_counter() - started)
            size = len(proc.stdout)
        return best, size

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.kind == "nfacctd" else signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def measure(kind: str, work: Path, tiny: Path, big: Path, flows: int, repeat: int) -> dict:
    base = Daemon(kind, work, tiny, "tiny")
    try:
        base.wait_entries(PER_PACKET, 60)
        time.sleep(1)
        rss0 = rss_kib(base.plugin_pid())
    finally:
        base.stop()
    d = Daemon(kind, work, big, "big")
    try:
        started = time.perf_counter()
        d.wait_entries(flows, 1200)
        load_s = time.perf_counter() - started
        time.sleep(1)
        entries = d.entries()
        rss1 = rss_kib(d.plugin_pid())
        latency, size = d.time_query(repeat)
    finally:
        d.stop()
    return {"entries": entries, "load_s": load_s, "rss0": rss0, "rss1": rss1,
            "per_entry": (rss1 - rss0) * 1024 / max(1, entries), "latency": latency, "bytes": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pmengine-memperf-"))
    try:
        tiny, big = work / "tiny.pcap", work / "big.pcap"
        make_pcap(tiny, PER_PACKET)
        make_pcap(big, args.flows)
        results = {}
        for kind in ("nfacctd", "pmengine"):
            print(f"{kind}: loading {args.flows} flows ...", file=sys.stderr)
            results[kind] = measure(kind, work, tiny, big, args.flows, args.repeat)
        nf, pe = results["nfacctd"], results["pmengine"]
        print(f"\nmemory plugin, {args.flows} distinct keys ({AGGREGATE})")
        print(f"{'':28}{'nfacctd 1.7.7':>16}{'pmengine':>16}{'ratio':>10}")
        rows = [("entries in table", "entries", "%d"), ("time to load (s)", "load_s", "%.2f"),
                ("-s -O json, best (s)", "latency", "%.3f"), ("-s -O json output (MB)", "bytes", "%.1f"),
                ("plugin RSS baseline (MiB)", "rss0", "%.1f"), ("plugin RSS loaded (MiB)", "rss1", "%.1f"),
                ("bytes per entry", "per_entry", "%.0f")]
        for label, key, fmt in rows:
            scale = 1 / 1e6 if key == "bytes" else 1 / 1024 if key in ("rss0", "rss1") else 1
            a, b = nf[key] * scale, pe[key] * scale
            ratio = f"{b / a:.2f}x" if a else "-"
            print(f"{label:28}{fmt % a:>16}{fmt % b:>16}{ratio:>10}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
