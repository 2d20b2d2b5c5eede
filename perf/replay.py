"""Replay a pcap's UDP payloads to a collector at a fixed rate, from each exporter's own source address.

A sender of our own, cheaper than tcpreplay on a 2-core box: the payloads are loaded once, one UDP socket is
bound per exporter source address (any 127.0.0.0/8 address is local on Linux, so no sysctl is needed), and
`socket.sendto` runs in a tight loop, sleeping once per small burst so that the average rate is the asked one.

    from replay import load_payloads, send
    payloads = load_payloads("flows.pcap")                   # [(src ip, payload), ...]
    report = send(payloads, ("127.0.0.1", 2100), rate_pps=20_000, repeat=2)
    print(report.packets, report.seconds, report.rate)

    python3 perf/replay.py flows.pcap 127.0.0.1:2100 --rate 20000 [--repeat 2]

Source addresses that are not local (not in 127.0.0.0/8 or ::1) are sent from 127.0.0.1 / ::1.  The source
port is an ephemeral one per exporter address (the kernel's SO_REUSEPORT hash still spreads exporters by
address).  Python has no sendmmsg: the burst loop is the cheapest pacing available (~1-2 µs per packet).
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.pcap import PcapStats, iter_udp  # noqa: E402
from engine.schema import IPV4_MAPPED_PREFIX  # noqa: E402

BURST_SECONDS = 0.002       # pace in bursts of ~2 ms of traffic: one sleep per burst


@dataclass
class SendReport:
    packets: int            # datagrams handed to the kernel
    seconds: float          # wall time from the first to the last send
    rate: float             # achieved packets per second
    errors: int = 0         # sendto failures (ENOBUFS, refused): counted, not raised


def address_text(raw16: bytes) -> str:
    """16-byte (IPv4-mapped for IPv4) address → text."""
    if raw16[:12] == IPV4_MAPPED_PREFIX:
        return socket.inet_ntop(socket.AF_INET, raw16[12:])
    return socket.inet_ntop(socket.AF_INET6, raw16)


def load_payloads(pcap_path: str | Path) -> list[tuple[str, bytes]]:
    """Every UDP datagram of the pcap as (source ip text, payload), in file order."""
    return [(address_text(p.src), p.payload) for p in iter_udp(str(pcap_path), PcapStats())]


def _local_source(ip: str, family: int) -> str:
    """The address to bind for exporter `ip`: itself when it is loopback and of the destination's family."""
    addr = ipaddress.ip_address(ip)
    if family == socket.AF_INET:
        return ip if addr.version == 4 and addr.is_loopback else "127.0.0.1"
    return ip if addr.version == 6 and addr.is_loopback else "::1"


def _senders(payloads: list[tuple[str, bytes]], dest: tuple[str, int]) -> tuple[list, list[socket.socket]]:
    """[(bound sendto, payload)] in order, one socket per distinct source address."""
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    socks: dict[str, socket.socket] = {}
    plan = []
    for ip, payload in payloads:
        src = _local_source(ip, family)
        sock = socks.get(src)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.bind((src, 0))
            socks[src] = sock
        plan.append((sock.sendto, payload))
    return plan, list(socks.values())


def send(payloads: list[tuple[str, bytes]], dest: tuple[str, int], rate_pps: float,
         repeat: int = 1) -> SendReport:
    """Send every payload `repeat` times to dest at rate_pps packets/s (0 or less: as fast as possible)."""
    plan, socks = _senders(payloads, dest)
    burst = max(1, int(rate_pps * BURST_SECONDS)) if rate_pps > 0 else len(plan) or 1
    sent = errors = 0
    sleep, now = time.sleep, time.perf_counter
    t0 = now()
    try:
        for _ in range(repeat):
            for start in range(0, len(plan), burst):
                for sendto, payload in plan[start:start + burst]:
                    try:
                        sendto(payload, dest)
                    except OSError:
                        errors += 1
                sent += min(burst, len(plan) - start)
                if rate_pps > 0:
                    ahead = t0 + sent / rate_pps - now()
                    if ahead > 0:
                        sleep(ahead)
    finally:
        seconds = now() - t0
        for sock in socks:
            sock.close()
    delivered = sent - errors
    return SendReport(delivered, seconds, delivered / seconds if seconds > 0 else 0.0, errors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap")
    ap.add_argument("dest", help="host:port ([v6]:port)")
    ap.add_argument("--rate", type=float, default=10_000, help="packets/s (0: as fast as possible)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    host, _, port = args.dest.rpartition(":")
    payloads = load_payloads(args.pcap)
    report = send(payloads, (host.strip("[]"), int(port)), args.rate, args.repeat)
    print(f"sent {report.packets} packets in {report.seconds:.2f} s: {report.rate:,.0f} packets/s "
          f"({report.errors} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
