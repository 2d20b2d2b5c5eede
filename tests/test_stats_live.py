"""Loss accounting end to end on a live engine (--shards 2, real UDP on loopback).

One engine run is fed known traffic: a v5 exporter and an IPFIX exporter with one injected sequence gap
each, a v9 exporter with a gap and data sets for a template it never sends, and an exporter sending only
malformed datagrams, mixed in time with the good ones.  Expected numbers come from the generator.  Then:
`pmengine stats --json`, the Prometheus scrape and the SIGUSR1 log summary all give exactly those numbers;
the engine stays alive; the print plugin's totals equal the good flows' totals (the issue's
"malformed-packet live run").  A second engine with a tiny socket buffer shows kernel drops:
received + kernel_drops = sent.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from conftest import REPO, Collector, free_udp_port, pmengine_cmd
from netflow_encoder import Field, Template, V5Record, data_set, ipfix_message, template_set, v5_packet, v9_packet

TEMPLATE = Template(256, [Field(8, 4), Field(12, 4), Field(1, 4), Field(2, 4)])     # src, dst, bytes, packets
MISSING = Template(400, [Field(8, 4), Field(12, 4), Field(1, 4), Field(2, 4)])      # never announced
V5_IP, V9_IP, IPFIX_IP, BAD_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
UNIX_SECS = int(time.time())


def bad_datagrams(copy: int = 0) -> list[bytes]:
    """Datagrams that are each exactly one decode error by the wire formats.

    Only the v9 one with a lying set length has a valid header: its sequence numbers follow on (copy).
    """
    v5_short = v5_packet([V5Record("10.9.0.1", "10.9.0.2", packets=1, octets=40)], count=10)   # says 10, has 1
    ipfix_long = ipfix_message([data_set(TEMPLATE, [["10.9.0.1", "10.9.0.2", 40, 1]])], length=500)
    v9_lying_set = v9_packet([struct.pack(">HH", 256, 2000) + bytes(12)], sequence=copy)
    return [b"\x00", b"\x00\x07" + bytes(40), v5_short, v9_packet([])[:12], ipfix_long, v9_lying_set,
            bytes(64)]


class Traffic:
    """Generates the run's datagrams and the independent expectations."""

    def __init__(self) -> None:
        self.expected: dict[str, Counter] = {ip: Counter() for ip in (V5_IP, V9_IP, IPFIX_IP, BAD_IP)}
        self.totals: dict[str, Counter] = {ip: Counter() for ip in (V5_IP, V9_IP, IPFIX_IP)}
        self.plan: list[tuple[str, bytes]] = []

    def add(self, ip: str, pkt: bytes, **counts: int) -> None:
        self.plan.append((ip, pkt))
        self.expected[ip].update(packets=1, bytes=len(pkt), **counts)

    def flows(self, ip: str, n: int, base: int) -> list[list]:
        rows = []
        for i in range(n):
            b, p = 100 + 7 * (base + i), 1 + (base + i) % 5
            rows.append([f"10.{base % 200}.{i}.1", f"192.0.2.{i + 1}", b, p])
            self.totals[ip].update(packets=p, bytes=b)
        return rows

    def build(self) -> "Traffic":
        seq = 0
        for i in range(20):                                  # v5: 20 packets x 10 flows, one gap
            rows = self.flows(V5_IP, 10, i * 10)
            seq += 5 if i == 12 else 0
            recs = [V5Record(s, d, packets=p, octets=b, first=1000, last=2000) for s, d, b, p in rows]
            self.add(V5_IP, v5_packet(recs, sys_uptime_ms=5000, unix_secs=UNIX_SECS, flow_sequence=seq),
                     flows=10, seq_gaps=int(i == 12))
            seq += 10
        seq = 0
        self.add(V9_IP, v9_packet([template_set(9, [TEMPLATE])], sequence=seq, unix_secs=UNIX_SECS), templates=1)
        for i in range(20):                                  # v9: 20 data packets x 8 flows, one gap, 3 orphans
            seq += 1 + (3 if i == 7 else 0)
            rows = self.flows(V9_IP, 8, 1000 + i * 8)
            sets = [data_set(TEMPLATE, rows)]
            orphan = i % 7 == 3
            if orphan:                                       # data for template 400: never announced
                sets.append(data_set(MISSING, [["10.8.0.1", "10.8.0.2", 999, 9]]))
            self.add(V9_IP, v9_packet(sets, sequence=seq, unix_secs=UNIX_SECS), flows=8, seq_gaps=int(i == 7),
                     no_template_sets=int(orphan), pending_sets=int(orphan))
        seq = 0
        self.add(IPFIX_IP, ipfix_message([template_set(10, [TEMPLATE])], sequence=seq, export_time=UNIX_SECS),
                 templates=1)
        for i in range(10):                                  # IPFIX: 10 messages x 5 flows, one gap
            seq += 7 if i == 4 else 0
            rows = self.flows(IPFIX_IP, 5, 3000 + i * 5)
            self.add(IPFIX_IP, ipfix_message([data_set(TEMPLATE, rows)], sequence=seq, export_time=UNIX_SECS),
                     flows=5, seq_gaps=int(i == 4))
            seq += 5
        good = self.plan
        bad = [(BAD_IP, b) for b in bad_datagrams(1) + bad_datagrams(0)]    # popped from the end: copy 0 first
        self.plan = []
        for i, (ip, pkt) in enumerate(good):                 # the bad ones spread among the good ones
            self.plan.append((ip, pkt))
            if i % 6 == 5 and bad:
                self.plan.append(bad.pop())
        self.plan.extend(bad)
        for ip, pkt in self.plan:
            if ip == BAD_IP:
                self.expected[BAD_IP].update(packets=1, bytes=len(pkt), decode_errors=1)
        return self

    def send(self, port: int) -> None:
        socks = {}
        try:
            for ip, pkt in self.plan:
                if ip not in socks:
                    socks[ip] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks[ip].bind((ip, 0))
                socks[ip].sendto(pkt, ("127.0.0.1", port))
                time.sleep(0.0005)
        finally:
            for s in socks.values():
                s.close()


def stats_json(pidfile) -> tuple[int, dict]:
    proc = subprocess.run(pmengine_cmd("stats", "-F", str(pidfile), "--json"), cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else {})


def wait_stats(pidfile, done, timeout: float = 40.0) -> dict:
    deadline = time.monotonic() + timeout
    model: dict = {}
    while time.monotonic() < deadline:
        rc, model = stats_json(pidfile)
        if model and done(model):
            return model
        time.sleep(0.5)
    raise AssertionError(f"stats never settled: {json.dumps(model)[:3000]}")


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """The engine run; yields what the tests compare (stats, scrape, log, print rows, expectations)."""
    tmp = tmp_path_factory.mktemp("stats_live")
    port, pidfile, out = free_udp_port(), tmp / "pm.pid", tmp / "flows.json"
    conf = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nnfacctd_pipe_size: 8388608\npidfile: {pidfile}\n"
            f"prometheus_listen: 127.0.0.1:0\nplugins: print[out]\naggregate: peer_src_ip, src_host, dst_host\n"
            f"print_output: json\nprint_output_file: {out}\nprint_output_file_append: true\n"
            f"print_refresh_time: 3600\n")
    collector = Collector(conf, tmp, shards=2)
    try:
        collector.wait_listening(2)
        traffic = Traffic().build()
        traffic.send(port)
        sent = len(traffic.plan)
        flows = sum(c["flows"] for c in traffic.expected.values())
        model = wait_stats(pidfile, lambda m: m["totals"]["packets"] >= sent and all(
            p["records"] >= flows for p in m["plugins"].values()))
        rc, model = stats_json(pidfile)
        text = subprocess.run(pmengine_cmd("stats", "-F", str(pidfile)), cwd=REPO, capture_output=True,
                              text=True, timeout=60).stdout
        url = re.search(r"prometheus endpoint: (\S+)", collector.log_path.read_text()).group(1)
        with urllib.request.urlopen(url, timeout=10) as resp:
            scrape = (resp.headers.get("Content-Type"), resp.read().decode())
        collector.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while "stats balance:" not in collector.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = collector.proc.poll() is None
        code = collector.stop()
        yield {"traffic": traffic, "model": model, "rc": rc, "text": text, "scrape": scrape, "alive": alive,
               "code": code, "log": collector.log_path.read_text(), "out": out, "pidfile": pidfile}
    finally:
        collector.kill()


EXPORTER_KEYS = ("packets", "bytes", "flows", "seq_gaps", "decode_errors", "no_template_sets", "pending_sets",
                 "pending_expired_sets", "templates")


def test_stats_json_gives_exactly_the_sent_numbers_per_exporter(live_run):
    model, expected = live_run["model"], live_run["traffic"].expected
    assert live_run["rc"] == 0, model["balance"]
    assert set(model["exporters"]) == set(expected)
    for ip, want in expected.items():
        got = model["exporters"][ip]
        assert {k: got[k] for k in EXPORTER_KEYS} == {k: want[k] for k in EXPORTER_KEYS}, ip
    assert model["totals"]["packets"] == len(live_run["traffic"].plan)
    assert model["totals"]["pending_sets_now"] == expected[V9_IP]["no_template_sets"] == 3
    assert model["totals"]["kernel_drops"] == 0 and model["totals"]["ring_dropped_records"] == 0


def test_stats_balance_flows_decoded_reach_the_rings_and_the_plugin(live_run):
    model = live_run["model"]
    flows = sum(c["flows"] for c in live_run["traffic"].expected.values())
    assert model["balance"] == {"ok": True, "problems": []}
    assert len(model["shards"]) == 2 and len(model["rings"]) == 2
    assert sum(s["records_decoded"] for s in model["shards"].values()) == flows
    assert sum(s["records_offered"] for s in model["shards"].values()) == flows
    plugin = model["plugins"]["out"]
    assert plugin["records_read"] + plugin["ring_dropped_records"] == plugin["records_offered"] == flows
    assert plugin["records"] == flows
    assert sum(s["packets"] for s in model["shards"].values()) == len(live_run["traffic"].plan)


def test_stats_text_has_one_line_per_shard_plugin_exporter(live_run):
    text = live_run["text"]
    for ip, want in live_run["traffic"].expected.items():
        line = re.search(rf"^stats exporter {re.escape(ip)}: (.*)$", text, re.M).group(1)
        assert f"packets={want['packets']} " in line and f"decode_errors={want['decode_errors']} " in line
    assert len(re.findall(r"^stats shard \d: ", text, re.M)) == 2
    assert re.search(r"^stats plugin out: .*records_read=\d+", text, re.M)
    assert "stats balance: ok" in text


def test_sigusr1_writes_the_summary_to_the_log(live_run):
    log = live_run["log"]
    for ip, want in live_run["traffic"].expected.items():
        line = re.search(rf"stats exporter {re.escape(ip)}: (.*)", log).group(1)
        fields = dict(kv.split("=", 1) for kv in line.split())
        assert {k: int(fields[k]) for k in EXPORTER_KEYS} == {k: want[k] for k in EXPORTER_KEYS}
    assert re.search(r"stats shard 0: .*kernel_drops=0", log) and re.search(r"stats shard 1: ", log)
    assert "stats balance: ok" in log


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+)$')


def test_prometheus_scrape_is_valid_text_format_with_the_sent_numbers(live_run):
    ctype, body = live_run["scrape"]
    assert ctype.startswith("text/plain; version=0.0.4")
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
            assert kind in ("counter", "gauge") and (kind == "counter") == name.endswith("_total"), line
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4
        else:
            m = PROM_LINE.match(line)
            assert m, line
            assert m.group(1) in types, line
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    for ip, want in live_run["traffic"].expected.items():
        for key in ("packets", "flows", "seq_gaps", "decode_errors", "no_template_sets", "bytes"):
            assert samples[f'pmengine_exporter_{key}_total{{exporter="{ip}"}}'] == want[key], (ip, key)
    assert samples["pmengine_balance_ok{}"] == 1
    assert sum(v for k, v in samples.items() if k.startswith("pmengine_shard_kernel_drops_total")) == 0


def test_malformed_run_engine_alive_counters_exact_good_traffic_exact(live_run):
    """Issue 8: engine alive, counters equal the bad packets sent, good traffic exact."""
    assert live_run["alive"] and live_run["code"] == 0
    bad = live_run["traffic"].expected[BAD_IP]
    assert bad["decode_errors"] == bad["packets"] == 2 * len(bad_datagrams())
    got: dict[str, Counter] = {}
    for line in live_run["out"].read_text().splitlines():
        d = json.loads(line)
        got.setdefault(d["peer_ip_src"], Counter()).update(packets=d["packets"], bytes=d["bytes"])
    assert got == live_run["traffic"].totals
    errors = [line for line in live_run["log"].splitlines() if " ERROR " in line]   # e.g. a hang kill's reason
    assert "crashed" not in live_run["log"] and "died" not in live_run["log"], "\n".join(errors)


def test_stats_finds_no_engine_after_stop(live_run):
    rc, _ = stats_json(live_run["pidfile"])
    assert rc == 1
    assert not (live_run["pidfile"].parent / "pm.pid.runtime").exists()
