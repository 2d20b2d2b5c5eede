"""Queries while traffic flows: a live pmengine with a memory plugin is queried continuously while
NetFlow v5 packets arrive; every answer is a consistent snapshot, totals only grow, end exact, and the
rings drop nothing."""
from __future__ import annotations

import io
import json
import os
import stat
import re
import socket
import threading
import time

import pytest

from engine.client.cli import run as client_run
from netflow_encoder import V5Record, v5_packet

from conftest import free_udp_port

PACKETS = 400
FLOWS = 30


def records_of(i: int) -> list[V5Record]:
    return [V5Record(src_addr=f"10.9.{i % 7}.{j + 1}", dst_addr=f"198.51.100.{(i + j) % 13 + 1}",
                     packets=1 + (i * 31 + j) % 97, octets=100 + (i * 7919 + j * 104729) % 1_000_003,
                     src_port=1000 + j, dst_port=53, proto=17 if j % 3 else 6) for j in range(FLOWS)]


def query(pipe: str, *args: str) -> str:
    out = io.StringIO()
    assert client_run(list(args) + ["-p", pipe], out) == 0
    return out.getvalue()


def test_totals_stay_exact_while_querying(collector_factory, tmp_path):
    port = free_udp_port()
    pipe = str(tmp_path / "live.pipe")
    collector = collector_factory(f"""daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: {port}
plugins: memory[m]
aggregate[m]: src_host, dst_host, src_port, proto
imt_path[m]: {pipe}
imt_mem_pools_number[m]: 0
""")
    collector.wait_listening(1)
    deadline = time.monotonic() + 30
    while not socket_ready(pipe):
        assert time.monotonic() < deadline, "imt_path socket never appeared"
        time.sleep(0.05)

    sent = [0, 0, 0]                # packets, bytes, flows
    done = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(PACKETS):
                recs = records_of(i)
                s.sendto(v5_packet(recs, sys_uptime_ms=10_000, unix_secs=1_700_000_000, flow_sequence=i * FLOWS),
                         ("127.0.0.1", port))
                sent[0] += sum(r.packets for r in recs)
                sent[1] += sum(r.octets for r in recs)
                sent[2] += len(recs)
                time.sleep(0.004)
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    previous, answers = (0, 0, 0), 0
    try:
        while not done.is_set() or answers < 5:
            total = tuple(int(x) for x in query(pipe, "-c", "proto", "-N", "*", "-n", "all").split()[:3])
            assert all(a >= b for a, b in zip(total, previous)), f"totals went back: {previous} -> {total}"
            previous = total
            rows = [json.loads(line) for line in query(pipe, "-s", "-O", "json").splitlines()]
            keys = [(r["ip_src"], r["ip_dst"], r["port_src"], r["ip_proto"]) for r in rows]
            assert len(keys) == len(set(keys)), "a snapshot listed a key twice"
            assert sum(r["bytes"] for r in rows) >= total[1]        # taken after the -N snapshot
            answers += 1
    finally:
        sender.join(60)
    want = f"{sent[0]} {sent[1]} 0"
    deadline = time.monotonic() + 30
    while not query(pipe, "-c", "proto", "-N", "*", "-n", "all").startswith(want + " "):
        assert time.monotonic() < deadline, f"final totals {query(pipe, '-c', 'proto', '-N', '*', '-n', 'all')!r}" \
                                            f" != {want!r}"
        time.sleep(0.1)
    independent = {}
    for i in range(PACKETS):
        for r in records_of(i):
            independent[r.proto] = independent.get(r.proto, 0) + r.octets
    assert query(pipe, "-c", "proto", "-N", "tcp;udp") == f"{independent[6]}\n{independent[17]}\n"
    assert answers >= 5
    assert collector.stop() == 0
    log = collector.log_path.read_text()
    drops = [int(x) for x in re.findall(r"ring_dropped_records=(\d+)", log)]
    assert drops and not any(drops), "rings dropped records while queried"


def socket_ready(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture(autouse=True)
def _no_leftover_pipe(tmp_path):
    yield
    assert not (tmp_path / "live.pipe").exists(), "the plugin left its socket behind"


def test_imt_path_in_use_halts_the_second_engine_with_a_config_error(collector_factory, tmp_path):
    """A plugin that cannot own its socket is a configuration problem: the engine stops (exit 78), no respawn loop."""
    pipe = str(tmp_path / "shared.pipe")
    conf = """daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: {port}
plugins: memory[m]
imt_path[m]: {pipe}
"""
    first = collector_factory(conf.format(port=free_udp_port(), pipe=pipe))
    first.wait_listening(1)
    deadline = time.monotonic() + 30
    while not socket_ready(pipe):
        assert time.monotonic() < deadline, "imt_path socket never appeared"
        time.sleep(0.05)
    assert stat.S_IMODE(os.stat(pipe).st_mode) == 0o600, "imt_path is owner-only by default (files_umask 077)"
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    from conftest import Collector
    second = Collector(conf.format(port=free_udp_port(), pipe=pipe), second_dir)
    try:
        assert second.proc.wait(60) == 78
    finally:
        second.kill()
    log = second.log_path.read_text()
    assert "imt_path" in log and "in use" in log
    assert log.count("started plugin-memory-m") == 1, "the plugin must not be respawned"
    assert socket_ready(pipe), "the first engine's socket must survive"
    assert first.stop() == 0


def test_files_umask_sets_the_socket_mode(collector_factory, tmp_path):
    pipe = str(tmp_path / "group.pipe")
    collector = collector_factory(f"""daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: {free_udp_port()}
files_umask: 027
plugins: memory[m]
imt_path[m]: {pipe}
""")
    collector.wait_listening(1)
    deadline = time.monotonic() + 30
    while not socket_ready(pipe):
        assert time.monotonic() < deadline, "imt_path socket never appeared"
        time.sleep(0.05)
    assert stat.S_IMODE(os.stat(pipe).st_mode) == 0o640
    assert collector.stop() == 0
