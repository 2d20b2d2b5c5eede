"""The memory plugin and client against nfacctd 1.7.7's memory plugin and the Debian pmacct client.

One generated NetFlow v5 pcap is read by nfacctd (two memory plugins) and by
pmengine (the same two plugins), both kept up with pcap_savefile_wait.  Every
query runs through /usr/bin/pmacct against nfacctd and through
`python -m engine.cli client` against pmengine; the outputs must be equal byte
for byte.  The one exception is the order of an unsorted table (-s, -M without
-T): pmacct lists rows in its hash-bucket order, so there the title, the total
line and the multiset of rows are compared.  Read-only queries first, then -r
and -e.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.pcap import UdpPacket, write_pcap
from netflow_encoder import V5Record, v5_packet

from conftest import NFACCTD, REPO, pmengine_cmd

PMACCT = "/usr/bin/pmacct"
FLOWS_PER_PACKET = 30
PACKETS = 60
EXPORTER = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])
COLLECTOR = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 254])
PLUGINS = {
    "five": "src_host, dst_host, src_port, dst_port, proto",
    "wide": "in_iface, out_iface, src_as, dst_as, peer_src_ip, src_net, dst_net, src_mask, dst_mask, tos, "
            "proto, flows",
}
SRC = [f"10.1.{i // 8}.{i % 8 + 1}" for i in range(24)]
DST = ["192.168.7.1", "192.168.7.2", "172.16.0.9", "203.0.113.5"]


def generated_records() -> list[V5Record]:
    rng = random.Random(20240607)
    records = []
    for _ in range(FLOWS_PER_PACKET * PACKETS):
        proto = rng.choice([6, 6, 17, 17, 1])
        records.append(V5Record(
            src_addr=rng.choice(SRC), dst_addr=rng.choice(DST), input=rng.choice([1, 2, 3]),
            output=rng.choice([4, 5]), packets=rng.randint(1, 5000), octets=rng.randint(40, 5_000_000),
            src_port=rng.choice([53, 80, 443, 8080]) if proto != 1 else 0,
            dst_port=rng.choice([1024, 2048, 4096]) if proto != 1 else 0, proto=proto, tos=rng.choice([0, 8]),
            src_as=rng.choice([64500, 64501]), dst_as=rng.choice([64510, 64511, 64512]),
            src_mask=rng.choice([16, 24]), dst_mask=rng.choice([24, 32])))
    return records


def write_capture(path: Path, records: list[V5Record]) -> None:
    pkts = []
    for i in range(PACKETS):
        chunk = records[i * FLOWS_PER_PACKET:(i + 1) * FLOWS_PER_PACKET]
        payload = v5_packet(chunk, sys_uptime_ms=100_000, unix_secs=1_700_000_000 + i, flow_sequence=i * 30)
        pkts.append(UdpPacket(1_700_000_000_000_000 + i * 1000, EXPORTER, 40000, COLLECTOR, 2100, payload))
    write_pcap(str(path), pkts)


def config(pcap: Path, pipes: dict[str, Path]) -> str:
    lines = ["daemonize: false", f"plugins: {', '.join(f'memory[{n}]' for n in PLUGINS)}",
             f"pcap_savefile: {pcap}", "pcap_savefile_wait: true"]
    for name, aggregate in PLUGINS.items():
        lines += [f"aggregate[{name}]: {aggregate}", f"imt_path[{name}]: {pipes[name]}",
                  f"imt_mem_pools_number[{name}]: 0"]
    return "\n".join(lines) + "\n"


def reference(pipe: Path, *args: str) -> str:
    return subprocess.run([PMACCT, "-p", str(pipe), *args], capture_output=True, text=True, timeout=30).stdout


def ours(pipe: Path, *args: str) -> str:
    return subprocess.run(pmengine_cmd("client", "-p", str(pipe), *args), cwd=REPO, capture_output=True,
                          text=True, timeout=60).stdout


def stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """(records, {daemon: {plugin: pipe}}) with nfacctd and pmengine holding the same pcap in memory."""
    if NFACCTD is None or not os.path.exists(PMACCT):
        pytest.skip("nfacctd / pmacct (Debian package pmacct) are not installed")
    work = tmp_path_factory.mktemp("memory")
    records = generated_records()
    pcap = work / "flows.pcap"
    write_capture(pcap, records)
    pipes = {d: {n: work / f"{d}-{n}.pipe" for n in PLUGINS} for d in ("nfacctd", "pmengine")}
    (work / "nfacctd.conf").write_text(config(pcap, pipes["nfacctd"]))
    (work / "pmengine.conf").write_text(config(pcap, pipes["pmengine"]))
    procs = []
    try:
        with open(work / "nfacctd.log", "w") as nf_log, open(work / "pmengine.log", "w") as pe_log:
            procs.append((subprocess.Popen([NFACCTD, "-f", str(work / "nfacctd.conf")], stdout=nf_log,
                                           stderr=subprocess.STDOUT), signal.SIGINT))
            procs.append((subprocess.Popen(pmengine_cmd("start", "-f", str(work / "pmengine.conf")), cwd=REPO,
                                           stdout=pe_log, stderr=subprocess.STDOUT), signal.SIGTERM))
            want = f"{sum(r.packets for r in records)} {sum(r.octets for r in records)} {len(records)}"
            deadline = time.monotonic() + 60
            for daemon, query in (("nfacctd", reference), ("pmengine", ours)):
                while True:      # poll the totals until every flow is in (flows counted by the `wide` plugin)
                    got = query(pipes[daemon]["wide"], "-c", "proto", "-N", "*", "-n", "all").strip()
                    if got.startswith(want):
                        break
                    assert time.monotonic() < deadline, f"{daemon} table incomplete: {got!r}, want {want!r}\n" + \
                        (work / f"{daemon}.log").read_text()[-3000:]
                    time.sleep(0.3)
            yield records, pipes
    finally:
        for proc, sig in procs:
            stop(proc, sig)


def assert_same(ref: str, got: str, ordered: bool) -> None:
    if ordered:
        assert got == ref
        return
    ref_lines, got_lines = ref.splitlines(), got.splitlines()
    if not ref.startswith("{"):
        assert got_lines[:1] == ref_lines[:1]               # title / CSV header (JSON has none)
    tail = 2 if ref.endswith(" entries\n") else 0           # "" and "For a total of: N entries"
    assert got_lines[len(got_lines) - tail:] == ref_lines[len(ref_lines) - tail:]
    assert sorted(got_lines) == sorted(ref_lines)
    assert got.endswith("\n") == ref.endswith("\n")


READ_ONLY = [
    # (plugin, args, ordered)
    ("five", ["-s"], False),
    ("five", ["-s", "-O", "csv"], False),
    ("five", ["-s", "-O", "json"], False),
    ("five", ["-s", "-T", "bytes,10"], True),
    ("five", ["-s", "-T", "packets,7", "-O", "json"], True),
    ("five", ["-c", "src_host", "-M", SRC[3]], False),
    ("five", ["-c", "src_host,proto", "-M", f"{SRC[5]},tcp;*,icmp", "-T", "bytes"], True),
    ("five", ["-c", "dst_port", "-N", "1024;2048;*;9999"], True),
    ("five", ["-c", "src_host,dst_host", "-N", f"{SRC[1]},*;*,{DST[2]}", "-n", "all", "-S"], True),
    ("five", ["-c", "proto", "-N", "udp", "-n", "packets"], True),
    ("five", ["-c", "dst_host,src_port", "-M", f"{DST[0]},443", "-O", "csv"], False),
    ("five", ["-c", "src_port", "-N", "7", "-n", "all"], True),
    ("wide", ["-s"], False),
    ("wide", ["-s", "-O", "json", "-T", "bytes,5"], True),
    ("wide", ["-c", "src_net,dst_mask", "-N", "10.1.0.0,24;10.1.2.0,32", "-n", "all"], True),
    ("wide", ["-c", "in_iface,peer_src_ip", "-M", "3,192.0.2.7", "-O", "csv", "-T", "bytes"], True),
    ("wide", ["-c", "src_as,dst_as", "-N", "64500,*;*,64512", "-n", "flows", "-S"], True),
]


@pytest.mark.parametrize("plugin,args,ordered", READ_ONLY, ids=[f"{p}:{' '.join(a)}" for p, a, _ in READ_ONLY])
def test_query_matches_pmacct(tables, plugin, args, ordered):
    _, pipes = tables
    ref = reference(pipes["nfacctd"][plugin], *args)
    assert ref.strip(), "the reference printed nothing"
    assert_same(ref, ours(pipes["pmengine"][plugin], *args), ordered)


def test_wildcard_totals_match_the_generated_flows(tables):
    records, pipes = tables
    independent = f"{sum(r.packets for r in records)} {sum(r.octets for r in records)} {len(records)}"
    for args in (["-c", "src_host", "-N", "*", "-n", "all"],       # src_host is not a key of `wide`
                 ["-c", "src_host", "-N", "1.1.1.1", "-n", "all"],
                 ["-c", "tos", "-N", "*", "-n", "all"]):
        assert ours(pipes["pmengine"]["wide"], *args) == reference(pipes["nfacctd"]["wide"], *args)
    assert ours(pipes["pmengine"]["wide"], "-c", "tos", "-N", "*", "-n", "all").startswith(independent + " ")


def test_reset_then_erase(tables):
    """-r zeroes the matched counters (pmacct drops those rows from the table); -e empties it."""
    _, pipes = tables
    ref_pipe, our_pipe = pipes["nfacctd"]["five"], pipes["pmengine"]["five"]
    q = ["-c", "src_host", "-N", f"{SRC[7]};{SRC[8]}", "-n", "all"]
    before = reference(ref_pipe, *q)
    assert ours(our_pipe, *q) == before
    assert ours(our_pipe, *q, "-r") == reference(ref_pipe, *q, "-r") == before
    assert ours(our_pipe, *q) == reference(ref_pipe, *q) == "0 0 0 0\n0 0 0 0\n"
    assert_same(reference(ref_pipe, "-s"), ours(our_pipe, "-s"), False)
    assert ours(our_pipe, "-e") == reference(ref_pipe, "-e") == "OK: Clearing stats.\n"
    for args in (["-s"], ["-s", "-O", "json"], ["-s", "-O", "csv"]):
        assert ours(our_pipe, *args) == reference(ref_pipe, *args)


def test_errors_match_pmacct(tables, tmp_path):
    _, pipes = tables
    for args in (["-c", "nosuch", "-M", "1"], ["-c", "dst_mac", "-M", "8.8.8.8"],
                 ["-c", "src_host", "-M", "not-an-address"]):
        ref = subprocess.run([PMACCT, "-p", str(pipes["nfacctd"]["five"]), *args], capture_output=True, text=True)
        got = subprocess.run(pmengine_cmd("client", "-p", str(pipes["pmengine"]["five"]), *args), cwd=REPO,
                             capture_output=True, text=True)
        assert (got.stdout, got.returncode) == (ref.stdout, ref.returncode)
    missing = str(tmp_path / "nobody.pipe")
    ref = subprocess.run([PMACCT, "-p", missing, "-s"], capture_output=True, text=True)
    got = subprocess.run(pmengine_cmd("client", "-p", missing, "-s"), cwd=REPO, capture_output=True, text=True)
    assert (got.stdout, got.returncode) == (ref.stdout, ref.returncode) == ("ERROR: Unable to connect to "
                                                                          f"'{missing}'\n\n", 1)


def test_unparsable_value_is_an_error_unlike_pmacct(tables):
    """Named difference: pmacct reads "abc" as port 0 (atoi) and prints an empty table; pmengine refuses it."""
    _, pipes = tables
    ref = reference(pipes["nfacctd"]["five"], "-c", "src_port", "-M", "abc")
    assert ref.endswith("For a total of: 0 entries\n")
    got = subprocess.run(pmengine_cmd("client", "-p", str(pipes["pmengine"]["five"]), "-c", "src_port", "-M", "abc"),
                         cwd=REPO, capture_output=True, text=True)
    assert (got.stdout, got.returncode) == ("ERROR: src_port: Invalid value: 'abc'\n", 1)
