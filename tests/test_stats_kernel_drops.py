"""Kernel socket drops are really the kernel's counter: a tiny receive buffer is overflowed on purpose.

1. sockets.kernel_drops() on a socket of our own that nobody reads: exactly sent - queued, from SO_MEMINFO
   and from /proc/net/udp (where the kernel has no SO_MEMINFO drop counter).
2. A live engine (1 shard, nfacctd_pipe_size: 1, the kernel's minimum buffer) gets bursts much faster
   than one Python process drains them: `pmengine stats` shows kernel_drops > 0 and
   received + kernel_drops = sent.  (No SIGSTOP of the shard: the supervisor would take a stopped
   shard for a hung one and restart it, losing the queue uncounted.)
"""
from __future__ import annotations

import json
import socket

import pytest
import subprocess
import time

from conftest import REPO, Collector, free_udp_port, pmengine_cmd
from netflow_encoder import V5Record, v5_packet

from engine.config.tree import Listener
from engine.shards import sockets as sockets_mod
from engine.shards.sockets import kernel_drops, open_udp


def drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return n
        n += 1


@pytest.mark.parametrize("source", ["so_meminfo", "proc"])
def test_kernel_drops_reads_the_kernels_counter_for_this_socket(source, monkeypatch):
    if source == "proc":
        monkeypatch.setattr(sockets_mod, "_meminfo", lambda sock: ())
    else:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if len(sockets_mod._meminfo(probe)) <= sockets_mod.SK_MEMINFO_DROPS:
            probe.close()
            pytest.skip("this kernel's SO_MEMINFO has no drop counter")
        probe.close()
    sock = open_udp(Listener(ip="127.0.0.1", port=0, rcvbuf=1))
    other = open_udp(Listener(ip="127.0.0.1", port=0, rcvbuf=1 << 20))     # not overflowed: stays 0
    try:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 500
        for _ in range(sent):
            out.sendto(bytes(200), sock.getsockname())
            out.sendto(bytes(200), other.getsockname())
        out.close()
        drops = kernel_drops(sock)
        received = drain(sock)
        assert drops > 0 and received > 0
        assert received + drops == sent
        assert kernel_drops(other) == 0 and drain(other) == sent
    finally:
        sock.close()
        other.close()


def test_live_engine_counts_kernel_drops_exactly(tmp_path):
    port, pidfile = free_udp_port(), tmp_path / "pm.pid"
    conf = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nnfacctd_pipe_size: 1\npidfile: {pidfile}\n"
            f"plugins: print[out]\naggregate: src_host\nprint_output_file: {tmp_path / 'out.txt'}\n"
            f"print_refresh_time: 3600\n")
    collector = Collector(conf, tmp_path, shards=1)
    try:
        collector.wait_listening(1)
        pkt = v5_packet([V5Record("10.0.0.1", "10.0.0.2", packets=1, octets=40)] * 20, flow_sequence=0)
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.bind(("127.0.0.2", 0))
        sent, model = 0, {}
        for _ in range(8):                       # bursts until the kernel drops some (the first one, normally)
            for _ in range(3000):
                out.sendto(pkt, ("127.0.0.1", port))
            sent += 3000
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                proc = subprocess.run(pmengine_cmd("stats", "-F", str(pidfile), "--json"), cwd=REPO,
                                      capture_output=True, text=True, timeout=60)
                model = json.loads(proc.stdout) if proc.stdout.strip() else {}
                t = model.get("totals", {})
                if t and t["packets"] + t["kernel_drops"] == sent:
                    break
                time.sleep(0.3)
            if model["totals"]["kernel_drops"]:
                break
        out.close()
        t = model["totals"]
        assert t["kernel_drops"] > 0
        assert t["packets"] + t["kernel_drops"] == sent
        assert model["shards"]["0"]["kernel_drops"] == t["kernel_drops"]
        assert model["exporters"]["127.0.0.2"]["packets"] == t["packets"]
        assert collector.proc.poll() is None
    finally:
        try:
            collector.stop()
        finally:
            collector.kill()
