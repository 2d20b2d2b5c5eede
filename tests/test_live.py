"""The engine as a whole, over real UDP on loopback: shards, template bus, rings, plugins, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import random
import re
import socket
import threading
import time
from collections import Counter

from conftest import free_udp_port
from netflow_encoder import Exporter, Field, Template, V5Record, data_set, template_set, v5_packet

FIVE_TUPLE = "peer_src_ip, src_host, dst_host, src_port, dst_port, proto"
FINAL_RE = re.compile(r"shard \d+ final counters, exporter (\S+): (.*)")

V4_TEMPLATE = [Field(8, 4), Field(12, 4), Field(7, 2), Field(11, 2), Field(4, 1), Field(1, 8), Field(2, 4)]
V6_TEMPLATE = [Field(27, 16), Field(28, 16), Field(7, 2), Field(11, 2), Field(4, 1), Field(1, 4), Field(2, 2)]


def live_conf(port: int, out: str, refresh: int = 60) -> str:
    return (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nnfacctd_pipe_size: 8388608\n"
            f"plugins: print[out]\naggregate: {FIVE_TUPLE}\nprint_output: json\n"
            f"print_output_file: {out}\nprint_output_file_append: true\nprint_refresh_time: {refresh}\n")


def read_rows(path) -> Counter:
    totals: Counter = Counter()
    if not path.exists():
        return totals
    for line in path.read_text().splitlines():
        d = json.loads(line)
        key = (d["peer_ip_src"], d["ip_src"], d["ip_dst"], d["port_src"], d["port_dst"], d["ip_proto"])
        totals[key + ("packets",)] += d["packets"]
        totals[key + ("bytes",)] += d["bytes"]
    return totals


def sender(src_ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src_ip, 0))
    return s


def test_templates_and_data_on_different_shards(collector_factory, tmp_path):
    """4 shards; each exporter sends templates from one source port and data from eight others."""
    port, out = free_udp_port(), tmp_path / "flows.json"
    collector = collector_factory(live_conf(port, str(out)), shards=4)
    collector.wait_listening(4)
    rng = random.Random(7)
    expected: Counter = Counter()
    proto_name = {6: "tcp", 17: "udp"}
    for e in range(4):
        exporter_ip = f"127.0.0.{10 + e}"
        version = 9 if e % 2 else 10
        exp = Exporter(version=version, domain_id=e)
        t4, t6 = Template(256 + e, V4_TEMPLATE), Template(300 + e, V6_TEMPLATE)
        tsock, dsocks = sender(exporter_ip), [sender(exporter_ip) for _ in range(8)]
        tsock.sendto(exp.packet([template_set(version, [t4, t6])]), ("127.0.0.1", port))
        for i in range(40):
            v6 = i % 3 == 0
            records = []
            for _ in range(20):
                src = f"2001:db8::{rng.randrange(1, 5):x}" if v6 else f"10.0.{e}.{rng.randrange(1, 5)}"
                dst = f"2001:db8:1::{rng.randrange(1, 5):x}" if v6 else f"192.0.2.{rng.randrange(1, 5)}"
                sport, dport, proto = rng.choice([80, 443]), rng.randrange(1024, 1030), rng.choice([6, 17])
                byts, pkts = rng.randrange(40, 100_000), rng.randrange(1, 100)
                records.append([src, dst, sport, dport, proto, byts, pkts])
                key = (exporter_ip, src, dst, sport, dport, proto_name[proto])
                expected[key + ("packets",)] += pkts
                expected[key + ("bytes",)] += byts
            pkt = exp.packet([data_set(t6 if v6 else t4, records)], data_records=len(records))
            dsocks[i % 8].sendto(pkt, ("127.0.0.1", port))
        for s in [tsock, *dsocks]:
            s.close()
    time.sleep(1.0)
    assert collector.stop() == 0
    assert read_rows(out) == expected
    finals = FINAL_RE.findall(collector.log_path.read_text())
    shards_with_packets = len({line for line in collector.log_path.read_text().splitlines()
                               if "final counters:" in line and "packets=0 " not in line})
    assert shards_with_packets >= 2, "traffic should have spread over several shards"
    assert finals, "shards log their final per-exporter counters"


def test_sigterm_during_traffic_loses_nothing_received(collector_factory, tmp_path):
    """SIGTERM while an exporter is sending: every flow a shard received is in the output."""
    port, out = free_udp_port(), tmp_path / "flows.json"
    collector = collector_factory(live_conf(port, str(out), refresh=1), shards=2)
    collector.wait_listening(2)
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        socks = [sender("127.0.0.1") for _ in range(4)]
        seq = 0
        records = [V5Record(src_addr=f"10.1.0.{i}", dst_addr="10.2.0.1", packets=2, octets=1000, proto=6,
                            src_port=1000 + i, dst_port=80) for i in range(30)]
        while not stop.is_set() and sent[0] < 200_000:
            pkt = v5_packet(records, unix_secs=1_700_000_000, flow_sequence=seq)
            try:
                socks[sent[0] % 4].sendto(pkt, ("127.0.0.1", port))
            except ConnectionRefusedError:
                pass
            seq += 30
            sent[0] += 1
            if sent[0] % 50 == 0:
                time.sleep(0.002)
        for s in socks:
            s.close()

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(2.5)
    try:
        assert collector.stop() == 0
    finally:
        stop.set()
        thread.join()
    log = collector.log_path.read_text()
    decoded_flows = 0
    for _exporter, fields in FINAL_RE.findall(log):
        counters = dict(kv.split("=") for kv in fields.split())
        decoded_flows += int(counters["flows"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert decoded_flows > 0 and decoded_flows <= sent[0] * 30
    assert sum(r["bytes"] for r in rows) == decoded_flows * 1000
    assert sum(r["packets"] for r in rows) == decoded_flows * 2
    ring_drops = re.findall(r"ring_dropped_records=(\d+)", log)
    assert ring_drops and all(d == "0" for d in ring_drops)


def test_killed_shard_is_restarted_and_collects_again(collector_factory, tmp_path):
    """kill -9 one shard: the supervisor starts a new one, which learns templates from the bus."""
    port, out = free_udp_port(), tmp_path / "flows.json"
    collector = collector_factory(live_conf(port, str(out)), shards=2)
    collector.wait_listening(2)
    exp = Exporter(version=10, domain_id=1)
    tpl = Template(400, V4_TEMPLATE)
    with sender("127.0.0.20") as s:
        s.sendto(exp.packet([template_set(10, [tpl])]), ("127.0.0.1", port))
    time.sleep(0.5)
    pids = {int(p) for p in re.findall(r"started shard-\d+ \(pid (\d+)\)", collector.log_path.read_text())}
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = collector.log_path.read_text()
        if len(re.findall(r"started shard-\d+ \(pid (\d+)\)", text)) == 3 and text.count("listening on") >= 3:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the killed shard was not restarted:\n" + collector.log_path.read_text()[-3000:])
    expected: Counter = Counter()
    socks = [sender("127.0.0.20") for _ in range(8)]      # spread over both shards, the new one included
    for i, s in enumerate(socks):
        records = [[f"10.9.0.{i}", "10.8.0.1", 1000 + i, 53, 17, 100 * (i + 1), i + 1]]
        s.sendto(exp.packet([data_set(tpl, records)], data_records=1), ("127.0.0.1", port))
        key = ("127.0.0.20", f"10.9.0.{i}", "10.8.0.1", 1000 + i, 53, "udp")
        expected[key + ("packets",)] += i + 1
        expected[key + ("bytes",)] += 100 * (i + 1)
        s.close()
    time.sleep(1.0)
    assert collector.stop() == 0
    assert read_rows(out) == expected


def test_pcap_shard_that_dies_stops_the_engine_with_an_error(tmp_path):
    """A pcap shard cannot be restarted (it would read the file again): its death ends the run, exit 1."""
    import subprocess
    from conftest import REPO, pmengine_cmd
    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)
    conf = tmp_path / "pcap.conf"
    conf.write_text(f"daemonize: false\npcap_savefile: {fifo}\nplugins: print\n"
                    f"print_output_file: {tmp_path}/out.txt\n")
    log_path = tmp_path / "pmengine.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(pmengine_cmd("start", "-f", str(conf)), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        writer = open(fifo, "wb")          # blocks until the shard opens the FIFO: it is alive and reading
        writer.write(b"\xd4\xc3\xb2\xa1")  # pcap magic, then nothing: the shard waits for more
        writer.flush()
        match = None
        deadline = time.monotonic() + 30
        while match is None and time.monotonic() < deadline:
            match = re.search(r"started shard-0 \(pid (\d+)\)", log_path.read_text())
            time.sleep(0.05)
        assert match, log_path.read_text()
        os.kill(int(match.group(1)), signal.SIGKILL)
        assert proc.wait(60) == 1
        writer.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log_path.read_text()
    assert "cannot be restarted" in text and text.count("started shard-0") == 1
