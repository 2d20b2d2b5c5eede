"""Supervision over real processes and UDP: a shard killed mid-stream, a plugin killed then hung, SIGTERM under load.

Expected totals are computed here from the packets the test builds; restart times are measured from the kill
to the new process's pid in the supervisor's children.json.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import threading
import time
from collections import Counter

from conftest import free_udp_port
from engine_probe import children, pid_alive, runtime_dir, stats, wait_for
from netflow_encoder import Exporter, Field, Template, data_set, template_set

FIVE_TUPLE = "peer_src_ip, src_host, dst_host, src_port, dst_port, proto"
TEMPLATE = [Field(8, 4), Field(12, 4), Field(7, 2), Field(11, 2), Field(4, 1), Field(1, 8), Field(2, 4)]
PROTO = {6: "tcp", 17: "udp"}
RESTART_LIMIT_S = 1.0


def conf(port: int, out, extra: str = "") -> str:
    return (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nnfacctd_pipe_size: 8388608\n"
            f"plugins: print[out]\naggregate: {FIVE_TUPLE}\nprint_output: json\n"
            f"print_output_file: {out}\nprint_output_file_append: true\nprint_refresh_time: 3600\n{extra}")


def read_rows(path) -> Counter:
    totals: Counter = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            d = json.loads(line)
            key = (d["peer_ip_src"], d["ip_src"], d["ip_dst"], d["port_src"], d["port_dst"], d["ip_proto"])
            totals[key + ("packets",)] += d["packets"]
            totals[key + ("bytes",)] += d["bytes"]
    return totals


class V9Source:
    """One exporter (address, source id, template) sending from several UDP source ports."""

    def __init__(self, ip: str, domain: int, ports: int, rng: random.Random) -> None:
        self.ip, self.rng = ip, rng
        self.exp = Exporter(version=9, domain_id=domain)
        self.template = Template(256 + domain, TEMPLATE)
        self.socks = []
        for _ in range(ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, 0))
            self.socks.append(s)
        self.sent = 0

    def send_template(self, dest) -> None:
        self.socks[0].sendto(self.exp.packet([template_set(9, [self.template])]), dest)
        self.sent += 1                      # packets sent, templates included

    def packet(self, expected: Counter, records: int = 20, packets_each: int | None = None) -> bytes:
        rows = []
        for _ in range(records):
            src, dst = f"10.1.{self.rng.randrange(4)}.{self.rng.randrange(1, 4)}", f"192.0.2.{self.rng.randrange(1, 4)}"
            sport, dport, proto = self.rng.choice([80, 443]), self.rng.randrange(1024, 1027), self.rng.choice([6, 17])
            byts = self.rng.randrange(40, 100_000)
            pkts = packets_each or self.rng.randrange(1, 100)
            rows.append([src, dst, sport, dport, proto, byts, pkts])
            key = (self.ip, src, dst, sport, dport, PROTO[proto])
            expected[key + ("packets",)] += pkts
            expected[key + ("bytes",)] += byts
        return self.exp.packet([data_set(self.template, rows)], data_records=len(rows))

    def send(self, dest, expected: Counter, n: int) -> None:
        for i in range(n):
            self.socks[(self.sent + i) % len(self.socks)].sendto(self.packet(expected), dest)
            if i % 8 == 7:
                time.sleep(0.001)           # gentle: a burst must not overflow the socket buffer
        self.sent += n

    def close(self) -> None:
        for s in self.socks:
            s.close()


def shard_packets(folder, shards: int) -> int:
    return sum(stats(folder, f"shard-{i}").get("packets", 0) for i in range(shards))


def one_shard_v9(collector_factory, tmp_path, source_ip: str, seed: int, extra: str = ""):
    """A listening 1-shard collector (conf() + extra, flows.json in tmp_path) and one v9 source at source_ip:
    (collector, runtime folder, output path, destination, expected Counter, source)."""
    port, out = free_udp_port(), tmp_path / "flows.json"
    collector = collector_factory(conf(port, out, extra), shards=1)
    collector.wait_listening(1)
    return (collector, runtime_dir(collector.proc.pid), out, ("127.0.0.1", port), Counter(),
            V9Source(source_ip, 1, 1, random.Random(seed)))


def wait_restarted(folder, name: str, old_pid: int, killed_at: float) -> float:
    new = wait_for(lambda: (children(folder)[name]["pid"] or old_pid) != old_pid and children(folder)[name],
                   10, f"{name} restarted")
    took = time.monotonic() - killed_at
    assert pid_alive(new["pid"])
    return took


def test_shard_killed_mid_stream(collector_factory, tmp_path):
    """--shards 2, 8 v9 exporters whose templates are sent once; shard-0 is SIGKILLed between two bursts of data:
    it is back within 1 s, decodes with templates from the bus snapshot, and no exporter loses a flow."""
    port, out = free_udp_port(), tmp_path / "flows.json"
    collector = collector_factory(conf(port, out), shards=2)
    collector.wait_listening(2)
    folder = runtime_dir(collector.proc.pid)
    dest, rng, expected = ("127.0.0.1", port), random.Random(11), Counter()
    sources = [V9Source(f"127.0.0.{20 + e}", e, 3, rng) for e in range(8)]
    try:
        for s in sources:
            s.send_template(dest)
        time.sleep(0.3)                                       # templates reach both shards over the bus
        for s in sources:
            s.send(dest, expected, 12)
        sent = sum(s.sent for s in sources)
        wait_for(lambda: shard_packets(folder, 2) == sent, 20, "phase 1 received")
        before = stats(folder, "shard-0")
        assert before.get("packets", 0) > 0, "SO_REUSEPORT gave shard-0 nothing to lose"

        victim = children(folder)["shard-0"]["pid"]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not pid_alive(victim), 5, "the killed shard gone")
        for s in sources:                                     # mid-stream: data keeps coming, no template
            s.send(dest, expected, 6)
        restart_s = wait_restarted(folder, "shard-0", victim, killed_at)
        wait_for(lambda: collector.log_path.read_text().count("listening on") >= 3, 10, "shard-0 listening")
        listening_s = time.monotonic() - killed_at
        print(f"shard restart: new process {restart_s:.3f} s after SIGKILL, listening after {listening_s:.3f} s")
        assert restart_s < RESTART_LIMIT_S
        for s in sources:
            s.send(dest, expected, 12)
        sent = sum(s.sent for s in sources)
        wait_for(lambda: shard_packets(folder, 2) == sent, 20, "every packet received")
        after = stats(folder, "shard-0")
        assert after["starts"] == 2
        assert after["packets"] > before["packets"], "the restarted shard received data"
        for i in range(2):
            for exporter, c in stats(folder, f"shard-{i}")["exporters"].items():
                assert c["no_template_sets"] == 0, f"shard-{i}: data of {exporter} without its template"
    finally:
        for s in sources:
            s.close()
    assert collector.stop() == 0
    assert read_rows(out) == expected
    assert "restarted shard-0" in collector.log_path.read_text()


def test_plugin_killed_then_hung(collector_factory, tmp_path):
    """A SIGKILLed plugin is restarted within 1 s; a stopped (hung) one is killed after its hang timeout and
    restarted; what the shard offered = what was aggregated + the ring drops it counted."""
    # smallest ring (1024 records); a filter turns the shard's pre-aggregation off, or the 3000 records below
    # (432 distinct keys) could fold into the ring without overflowing it
    collector, folder, out, dest, expected, source = one_shard_v9(
        collector_factory, tmp_path, "127.0.0.30", 5, "plugin_pipe_size: 65536\naggregate_filter[out]: tcp or udp\n")
    try:
        # the first plugin must have started (its filter compiled) before it is killed: else its successor's
        # "started" line is the only one and the wait for two below times out
        wait_for(lambda: "plugin out started" in collector.log_path.read_text(), 10, "plugin started")
        victim = children(folder)["plugin-print-out"]["pid"]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        restart_s = wait_restarted(folder, "plugin-print-out", victim, killed_at)
        print(f"plugin restart: new process {restart_s:.3f} s after SIGKILL")
        assert restart_s < RESTART_LIMIT_S
        wait_for(lambda: collector.log_path.read_text().count("plugin out started") >= 2, 10, "plugin started")

        hung = children(folder)["plugin-print-out"]["pid"]
        os.kill(hung, signal.SIGSTOP)
        stopped_at = time.monotonic()
        source.send_template(dest)
        sent_records = 0
        for _ in range(150):                                  # 3000 records into a 1024-record ring
            source.socks[0].sendto(source.packet(expected, 20, packets_each=1), dest)
            sent_records += 20
            time.sleep(0.001)
        wait_restarted(folder, "plugin-print-out", hung, stopped_at)
        assert "plugin-print-out (pid %d) hung" % hung in collector.log_path.read_text()
        wait_for(lambda: stats(folder, "shard-0").get("records_offered", 0) == sent_records, 20,
                 "every record offered")
        shard = stats(folder, "shard-0")
    finally:
        source.close()
    assert collector.stop() == 0
    dropped = sum(r["dropped_records"] for r in shard["rings"].values())
    aggregated = sum(v for k, v in read_rows(out).items() if k[-1] == "packets")    # one packet per record
    assert dropped > 0, "the hung plugin's ring overflowed"
    assert aggregated + dropped == shard["records_offered"] == sent_records


def test_sigterm_under_load_writes_everything_received(collector_factory, tmp_path):
    """Traffic in flight when SIGTERM arrives: the output holds exactly the packets the shard took from its
    socket, and those are the first N sent (one source socket: the kernel queue keeps the order)."""
    port, out = free_udp_port(), tmp_path / "flows.json"
    collector = collector_factory(conf(port, out), shards=1)
    collector.wait_listening(1)
    dest, rng = ("127.0.0.1", port), random.Random(3)
    source = V9Source("127.0.0.40", 2, 1, rng)
    per_packet: list[Counter] = []
    stop_sending = threading.Event()

    def send() -> None:
        source.send_template(dest)
        per_packet.append(Counter())
        while not stop_sending.is_set() and len(per_packet) < 20000:
            c = Counter()
            source.socks[0].sendto(source.packet(c), dest)
            per_packet.append(c)
            time.sleep(0.0005)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        time.sleep(1.0)
        collector.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)                                       # still sending while the engine stops
    finally:
        stop_sending.set()
        sender.join()
        source.close()
    assert collector.stop() == 0
    text = collector.log_path.read_text()
    final = re.search(r"shard 0 final counters: packets=(\d+) batches=\d+ kernel_drops=(\d+) "
                      r"ring_dropped_records=(\d+)", text)
    received, kernel_drops, ring_drops = map(int, final.groups())
    assert (kernel_drops, ring_drops) == (0, 0)
    assert 1 < received < len(per_packet), "SIGTERM arrived mid-stream"
    expected = sum(per_packet[:received], Counter())
    assert read_rows(out) == expected


def test_plugin_killed_with_unpurged_records_counts_them_lost(collector_factory, tmp_path):
    """Records a plugin had read but not purged die with it: its successor counts them
    (records_lost_in_restart, in `pmengine stats` and Prometheus), so sent = written + counted lost."""
    from engine.ops.stats_model import load_model
    collector, folder, out, dest, expected, source = one_shard_v9(collector_factory, tmp_path, "127.0.0.31", 7)
    try:
        source.send_template(dest)
        for burst in (1, 2):
            for _ in range(50):
                source.socks[0].sendto(source.packet(expected, 20, packets_each=1), dest)
                time.sleep(0.001)
            wait_for(lambda: stats(folder, "plugin-out").get("records", 0) == 1000 * burst, 20,
                     "the plugin read every record")
            if burst == 1:
                victim = children(folder)["plugin-print-out"]["pid"]
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                wait_restarted(folder, "plugin-print-out", victim, killed_at)
                wait_for(lambda: stats(folder, "plugin-out").get("records_lost_in_restart") == 1000, 20,
                         "the successor counting its predecessor's unpurged records")
        model = load_model(str(folder))
        assert model["totals"]["records_lost_in_restart"] == 1000
        assert model["balance"]["ok"], model["balance"]["problems"]
    finally:
        source.close()
    assert collector.stop() == 0
    assert "1000 records its predecessor had read but not purged are lost" in collector.log_path.read_text()
    written = sum(v for k, v in read_rows(out).items() if k[-1] == "packets")     # one packet per record
    assert written == 1000 and written + 1000 == sum(v for k, v in expected.items() if k[-1] == "packets")


def test_idle_shard_stopped_is_killed_and_restarted_within_its_deadline(collector_factory, tmp_path):
    """An idle shard declares its poll (up to 1 s) busy and the supervisor sleeps until the first deadline: a
    shard stopped (hung) while idle is still killed soon after its deadline (here ~1.05 s after the stop),
    restarted, and the new one decodes."""
    collector, folder, out, dest, expected, source = one_shard_v9(collector_factory, tmp_path, "127.0.0.31", 7)
    try:
        time.sleep(1.5)                                       # idle: the shard is in its long poll
        hung = children(folder)["shard-0"]["pid"]
        os.kill(hung, signal.SIGSTOP)
        stopped_at = time.monotonic()
        took = wait_restarted(folder, "shard-0", hung, stopped_at)
        print(f"stopped idle shard replaced {took:.2f} s after SIGSTOP")
        assert took < 3.0, took             # busy poll 1 s + timeout 0.5 s + a turn + the restart, with room
        assert "shard-0 (pid %d) hung" % hung in collector.log_path.read_text()
        collector.wait_listening(1)
        source.send_template(dest)
        source.send(dest, expected, 10)
        wait_for(lambda: stats(folder, "shard-0").get("records_offered", 0) >= 200, 10, "the new shard decodes")
    finally:
        source.close()
    assert collector.stop() == 0
    assert read_rows(out) == expected
