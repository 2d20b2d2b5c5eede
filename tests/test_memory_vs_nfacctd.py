"""The memory plugin and client against nfacctd 1.7.7's memory plugin and the Debian pmacct client.

One generated NetFlow v5 pcap is read by nfacctd (three memory plugins, one of
them on tag / tag2 set by a pre_tag_map) and by pmengine (the same three, plus
`labelled`: nfacctd's memory plugin refuses the label primitive, so that one is
checked against the generated flows), both kept up with pcap_savefile_wait.  Every
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
TAGGED = "tag, tag2, src_host"
PLUGINS["tagged"] = TAGGED
LABELLED = {"labelled": "tag, label, src_host"}     # pmengine only
BIG_TAG = 3_000_000_000             # > 2**31: pmacct's client reads it right (it keeps 32 bits)
HUGE_TAG2 = 1_234_567_890_123       # > 2**32: pmacct's client truncates it to 32 bits, matches nothing
PRETAG_MAP = f"""\
set_tag=5 ip=192.0.2.7 in=1
set_tag={BIG_TAG} ip=192.0.2.7 in=2 jeq=t2
set_label=red ip=192.0.2.7 in=3 jeq=t3
set_tag2=9 label=t2 ip=0.0.0.0/0 out=4
set_tag2={HUGE_TAG2} label=t3 ip=0.0.0.0/0 out=5
"""
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


def config(pcap: Path, pipes: dict[str, Path], pretag: Path, plugins: dict[str, str]) -> str:
    lines = ["daemonize: false", f"plugins: {', '.join(f'memory[{n}]' for n in plugins)}",
             f"pcap_savefile: {pcap}", "pcap_savefile_wait: true", f"pre_tag_map: {pretag}"]
    for name, aggregate in plugins.items():
        lines += [f"aggregate[{name}]: {aggregate}", f"imt_path[{name}]: {pipes[name]}",
                  f"imt_mem_pools_number[{name}]: 0"]
    return "\n".join(lines) + "\n"


def without_extra_zero_lines(out: str, args: tuple) -> str:
    """pmacct's client bug: after the answers of `-N q1;q2...` it sometimes prints more `0 0 ...` lines than
    there are queries.  Those (all-zero lines beyond one per query, one with -S) are dropped."""
    if "-N" not in args:
        return out
    value = args[args.index("-N") + 1]
    wanted = 1 if "-S" in args or value.startswith("file:") else len(value.split(";"))
    lines = out.splitlines(keepends=True)
    extra = lines[wanted:]
    if extra and all(set(line.split()) == {"0"} for line in extra):
        return "".join(lines[:wanted])
    return out


def reference(pipe: Path, *args: str) -> str:
    """The Debian pmacct client's answer.  It is not always right the first time (now and then it prints
    extra `0 0 0 0` lines for -N queries): an answer counts once two queries in a row gave it (queries
    that change the table, -r and -e, are asked once)."""
    previous = None
    for _ in range(5 if not {"-r", "-e"} & set(args) else 1):     # never repeat a query that changes the table
        out = without_extra_zero_lines(
            subprocess.run([PMACCT, "-p", str(pipe), *args], capture_output=True, text=True, timeout=30).stdout, args)
        if out == previous:
            return out
        previous = out
    return previous


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
    ours_plugins = {**PLUGINS, **LABELLED}
    pipes = {"nfacctd": {n: work / f"nfacctd-{n}.pipe" for n in PLUGINS},
             "pmengine": {n: work / f"pmengine-{n}.pipe" for n in ours_plugins}}
    (work / "pretag.map").write_text(PRETAG_MAP)
    (work / "nfacctd.conf").write_text(config(pcap, pipes["nfacctd"], work / "pretag.map", PLUGINS))
    (work / "pmengine.conf").write_text(config(pcap, pipes["pmengine"], work / "pretag.map", ours_plugins))
    procs = []
    try:
        with open(work / "nfacctd.log", "w") as nf_log, open(work / "pmengine.log", "w") as pe_log:
            procs.append((subprocess.Popen([NFACCTD, "-f", str(work / "nfacctd.conf")], stdout=nf_log,
                                           stderr=subprocess.STDOUT), signal.SIGINT))
            procs.append((subprocess.Popen(pmengine_cmd("start", "-f", str(work / "pmengine.conf")), cwd=REPO,
                                           stdout=pe_log, stderr=subprocess.STDOUT), signal.SIGTERM))
            want = f"{sum(r.packets for r in records)} {sum(r.octets for r in records)} {len(records)}"
            deadline = time.monotonic() + 60
            # every plugin of both daemons must hold every flow before any query (nfacctd's plugins fill
            # their tables at their own pace)
            polls = [("nfacctd", reference, name) for name in PLUGINS] + \
                    [("pmengine", ours, name) for name in ours_plugins]
            for daemon, query, plugin in polls:
                while True:      # poll the totals until every flow is in (flows counted by the `wide` plugin)
                    got = query(pipes[daemon][plugin], "-c", "proto", "-N", "*", "-n", "all").strip()
                    if got.startswith(want if plugin == "wide" else want.rsplit(" ", 1)[0]):
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
    ("tagged", ["-s"], False),
    ("tagged", ["-s", "-O", "csv"], False),
    ("tagged", ["-s", "-O", "json", "-T", "bytes,6"], True),
    ("tagged", ["-c", "tag", "-N", f"5;{BIG_TAG};0;7", "-n", "all"], True),
    ("tagged", ["-c", "tag", "-M", "5", "-O", "csv", "-T", "packets"], True),
    ("tagged", ["-c", "tag,tag2", "-M", f"{BIG_TAG},9", "-T", "bytes"], True),
    ("tagged", ["-c", "tag2,src_host", "-N", f"9,*;0,{SRC[2]};*,{SRC[4]}", "-n", "all", "-S"], True),
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


def tag_of(r: V5Record) -> tuple[int, int, str]:
    """(tag, tag2, label) of a generated flow under PRETAG_MAP, computed independently of pmengine."""
    if r.input == 1:
        return 5, 0, ""
    if r.input == 2:        # after the jump, a miss on t2 goes on to t3 (as nfacctd: checked by the -s queries)
        return BIG_TAG, 9 if r.output == 4 else HUGE_TAG2, ""
    return 0, HUGE_TAG2 if r.output == 5 else 0, "red"


def test_tagged_totals_match_the_generated_flows(tables):
    records, pipes = tables
    for tag in (5, BIG_TAG, 0):
        picked = [r for r in records if tag_of(r)[0] == tag]
        want = f"{sum(r.packets for r in picked)} {sum(r.octets for r in picked)} 0 "
        assert ours(pipes["pmengine"]["tagged"], "-c", "tag", "-N", str(tag), "-n", "all").startswith(want)


def test_tag_above_32_bits_matches_unlike_pmacct(tables):
    """Named difference: pmacct's client keeps 32 bits of a -M/-N tag value (3000000000 and -1294967296 both
    match tag2 3000000000 there), so a tag >= 2**32 matches nothing; pmengine compares all 64 bits."""
    records, pipes = tables
    args = ["-c", "tag2", "-N", str(HUGE_TAG2), "-n", "all"]
    assert reference(pipes["nfacctd"]["tagged"], *args) == "0 0 0 0\n"
    picked = [r for r in records if tag_of(r)[1] == HUGE_TAG2]
    assert picked
    rows = len({(tag_of(r)[0], r.src_addr) for r in picked})
    assert ours(pipes["pmengine"]["tagged"], *args) == \
        f"{sum(r.packets for r in picked)} {sum(r.octets for r in picked)} 0 {rows}\n"


def test_label_kept_unlike_nfacctd(tables):
    """Named difference: nfacctd's memory plugin exits on the label primitive ("variable-length primitives ...
    are not supported in IMT plugin") and its client refuses -M/-N on label; pmengine keeps and matches it."""
    records, pipes = tables
    pipe = pipes["pmengine"]["labelled"]
    red = [r for r in records if tag_of(r)[2] == "red"]
    want = {(0, "red", src): [0, 0] for src in {r.src_addr for r in red}}
    for r in red:
        want[(0, "red", r.src_addr)][0] += r.packets
        want[(0, "red", r.src_addr)][1] += r.octets
    lines = ours(pipe, "-c", "label", "-M", "red", "-O", "csv").splitlines()
    assert lines[0] == "TAG,LABEL,SRC_IP,PACKETS,BYTES"
    assert sorted(lines[1:]) == sorted(f"{t},{lab},{s},{p},{b}" for (t, lab, s), (p, b) in want.items())
    unlabelled = [r for r in records if not tag_of(r)[2]]
    assert ours(pipe, "-c", "label,tag", "-N", ",*;red,0", "-n", "bytes") == \
        f"{sum(r.octets for r in unlabelled)}\n{sum(r.octets for r in red)}\n"
    lines = ours(pipe, "-c", "label", "-M", "red", "-T", "bytes,1").splitlines()
    assert lines[0].startswith("TAG         LABEL" + " " * 29 + "SRC_IP ")
    assert lines[1].startswith("0           red" + " " * 31 + "10.1.")
    assert ours(pipe, "-s", "-O", "json", "-T", "bytes,1").startswith('{"tag": ')
