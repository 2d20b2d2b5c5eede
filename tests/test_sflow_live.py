"""Live sFlow collection on real UDP sockets: beside NetFlow (--shards 2), with malformed datagrams mixed in,
and sampling_map reloads (SIGUSR2) under traffic.  Expected totals come from the encoders' own values."""
from __future__ import annotations

import random
import re
import signal
import socket
import struct
import time
from collections import Counter
from pathlib import Path

from conftest import free_udp_port
from netflow_encoder import V5Record, v5_packet
from sflow_encoder import datagram, flow_sample, generated_traffic, raw_header_record

SEND_SOCKETS = 4        # several source ports: SO_REUSEPORT spreads them over the shards


def print_totals(path: Path) -> Counter:
    """Σ BYTES per PEER_SRC_IP over every purge of an appended CSV print file."""
    totals: Counter = Counter()
    if not path.exists():
        return totals
    header = None
    for line in path.read_text().splitlines():
        cells = line.split(",")
        if "BYTES" in cells:
            header = cells
            continue
        if header and len(cells) == len(header):
            row = dict(zip(header, cells))
            totals[row["PEER_SRC_IP"]] += int(row["BYTES"])
    return totals


def send(port: int, payloads: list[bytes], family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(SEND_SOCKETS)]
    try:
        for i, p in enumerate(payloads):
            socks[i % SEND_SOCKETS].sendto(p, (host, port))
            if i % 20 == 19:
                time.sleep(0.005)       # gentle: exact totals, no kernel drops on a busy 2-core box
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def malformed_datagrams(seed: int = 5) -> list[bytes]:
    """Truncated and byte-flipped datagrams of agent 198.51.100.1, and a few broken headers (v2/v4/v99, 8 bytes)."""
    from sflow_encoder import ethernet_header, ip_packet
    rnd = random.Random(seed)
    hdr = ethernet_header(b"\x02" * 6, b"\x04" * 6, (100,), ip_packet("10.0.0.1", "10.0.0.2", 6, 1, 2), False)
    good = datagram("198.51.100.1", 1, [flow_sample(i, 10, 1, 2, [raw_header_record(hdr, 500)]) for i in range(4)])
    out = [struct.pack(">II", 5, 1), struct.pack(">I", 99) + good[4:], struct.pack(">I", 4) + good[4:40],
           struct.pack(">I", 2) + good[4:28]]
    for cut in range(28, len(good), 7):
        out.append(good[:cut])
    for _ in range(40):
        b = bytearray(good)
        for _ in range(3):
            b[rnd.randrange(28, len(b))] = rnd.randrange(256)
        out.append(bytes(b))
    return out


def test_netflow_and_sflow_side_by_side_with_malformed_sflow(collector_factory, tmp_path):
    nf_port, sf_port = free_udp_port(), free_udp_port()
    out = tmp_path / "totals.csv"
    conf = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {nf_port}\nsfacctd_ip: 127.0.0.1\nsfacctd_port: {sf_port}\n"
            f"plugins: print[t]\naggregate[t]: peer_src_ip\nprint_output[t]: csv\nprint_output_file[t]: {out}\n"
            "print_output_file_append[t]: true\nprint_refresh_time[t]: 60\n")
    c = collector_factory(conf, shards=2)
    try:
        c.wait_listening(4)         # 2 shards × 2 listeners
        log = c.log_path.read_text()
        assert f":{nf_port}" in log and f":{sf_port}" in log
        datagrams, truth = generated_traffic(90, seed=21)
        bad = malformed_datagrams()
        mixed = []
        for i, d in enumerate(datagrams):
            mixed.append(d)
            if i < len(bad):
                mixed.append(bad[i])
        mixed += bad[len(datagrams):]
        nf_packets = [v5_packet([V5Record(src_addr=f"10.0.{i % 7}.{j}", dst_addr="192.0.2.1", packets=2,
                                          octets=100 + 7 * i + j, proto=6) for j in range(20)],
                                flow_sequence=20 * i) for i in range(60)]
        send(nf_port, nf_packets)
        send(sf_port, mixed)
        time.sleep(1.0)
        assert c.proc.poll() is None, "collector alive after malformed input"
    finally:
        rc = c.stop()
    assert rc == 0
    totals = print_totals(out)
    expected_sflow = Counter()
    for t in truth:
        expected_sflow[t.agent] += t.frame_length
    assert totals["127.0.0.1"] == sum(100 + 7 * i + j for i in range(60) for j in range(20))
    for agent, total in expected_sflow.items():
        assert totals[agent] == total, agent
    log = c.log_path.read_text()
    errors = sum(int(n) for n in re.findall(r"final counters, exporter .*?decode_errors=(\d+)", log))
    assert errors >= 4 + len(range(28, 160, 7)) // 2, log[-3000:]
    assert "Traceback" not in log


def test_sampling_map_reload_under_traffic(collector_factory, tmp_path):
    """SIGUSR2: the new map applies from the next datagrams on; a bad map on reload keeps the old one."""
    port = free_udp_port()
    out = tmp_path / "totals.csv"
    smap = tmp_path / "sampling.map"
    smap.write_text("! first map\nid=10 ip=192.0.2.10\nid=20 ip=192.0.2.0/24\n")
    conf = (f"sfacctd_ip: 127.0.0.1\nsfacctd_port: {port}\nsfacctd_renormalize: true\nsampling_map: {smap}\n"
            f"plugins: print[t]\naggregate[t]: peer_src_ip\nprint_output[t]: csv\nprint_output_file[t]: {out}\n"
            "print_output_file_append[t]: true\nprint_refresh_time[t]: 1\n")
    maps = [{"192.0.2.10": 10, "192.0.2.11": 20}, {"192.0.2.10": 5, "192.0.2.11": 5, "2001:db8::a": 7},
            {"192.0.2.10": 5, "192.0.2.11": 5, "2001:db8::a": 7}]
    c = collector_factory(conf, shards=1)
    expected: Counter = Counter()
    try:
        c.wait_listening(1)
        for phase, rates in enumerate(maps):
            datagrams, truth = generated_traffic(15, seed=40 + phase)
            for t in truth:
                expected[t.agent] += t.frame_length * rates.get(t.agent, t.rate)
            send(port, datagrams)
            wait_for(lambda: print_totals(out) == expected, what=f"phase {phase} totals")
            if phase == 0:
                smap.write_text("id=5 ip=0.0.0.0/0\nid=7 ip=::/0\n")
                c.proc.send_signal(signal.SIGUSR2)
                wait_for(lambda: "sampling_map reloaded" in c.log_path.read_text(), what="reload")
            elif phase == 1:
                smap.write_text("id=5 ip=0.0.0.0/0\nid=oops ip=::/0\n")
                c.proc.send_signal(signal.SIGUSR2)
                wait_for(lambda: "sampling_map not reloaded" in c.log_path.read_text(), what="failed reload")
                assert f"{smap}:2" in c.log_path.read_text()
    finally:
        rc = c.stop()
    assert rc == 0
    assert print_totals(out) == expected
