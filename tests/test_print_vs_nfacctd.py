"""The print plugin against nfacctd 1.7.7, byte for byte (rows sorted, stamp_updated and pids ignored).

For each capture nfacctd runs once with several print plugins: one with every
primitive (JSON, numeric protocols, epoch timestamps: lossless) and several
coarser ones in JSON / CSV / formatted output.  The full-key rows are turned
back into canonical records, aggregated by our Aggregator for each coarser
plugin and written by our PrintWriter; the files must equal nfacctd's.
This needs no decoder of ours: nfacctd is the decoder.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from engine.config.tree import CoreConfig, PluginConfig
from engine.plugins.aggregate import Aggregator
from engine.plugins.print_plugin import PrintWriter
from engine.schema import IPV4_MAPPED_PREFIX, empty

from conftest import CAPTURES, NFACCTD

PARALLEL_RUNS = 4                   # nfacctd runs (one per capture) at a time

ALL_PRIMITIVES = ("src_host, dst_host, src_port, dst_port, proto, tos, tcpflags, src_as, dst_as, peer_src_as, "
                  "peer_dst_as, peer_src_ip, peer_dst_ip, in_iface, out_iface, src_mask, dst_mask, src_net, dst_net, "
                  "timestamp_start, timestamp_end, etype, vlan, src_mac, dst_mac, export_proto_version, "
                  "sampling_rate, timestamp_arrival, flows")

# name -> pmacct keys of a coarser print plugin
PLUGINS = {
    "hosts_json": {"aggregate": "src_host, dst_host, proto, flows", "print_output": "json", "print_markers": "true"},
    "nets_csv": {"aggregate": "dst_net, src_net, src_mask, dst_mask", "print_output": "csv"},
    "peers_fmt": {"aggregate": "peer_src_ip, in_iface, out_iface, src_as, dst_as, etype, vlan",
                  "print_output": "formatted"},
    "ports_hist_json": {"aggregate": "src_port, dst_port, tcpflags, tos, proto", "print_output": "json",
                        "print_history": "5m", "print_history_roundoff": "h", "print_num_protos": "true"},
    "l2_csv": {"aggregate": "src_mac, dst_mac, vlan, sampling_rate, export_proto_version",
               "print_output": "csv", "print_output_separator": ";", "print_markers": "true"},
    "times_json": {"aggregate": "timestamp_start, timestamp_end, src_host", "print_output": "json",
                   "timestamps_secs": "true"},
    "times_fmt": {"aggregate": "timestamp_start, timestamp_end, proto, flows",
                  "print_output": "formatted", "timestamps_since_epoch": "true"},
    "hist_csv": {"aggregate": "src_as, dst_as, flows", "print_output": "csv", "print_history": "1h",
                 "print_history_roundoff": "m"},
    "events_csv": {"aggregate": "dst_host, dst_port", "print_output": "event_csv"},
    "nexthop_json": {"aggregate": "peer_dst_ip, dst_net, dst_mask, peer_src_as, peer_dst_as",
                     "print_output": "json", "print_history": "1d", "print_history_roundoff": "d",
                     "timestamps_since_epoch": "true"},
}
NO_NEXTHOP = [p for p in PLUGINS if p != "nexthop_json"]

# capture -> plugins compared on it.  nexthop_json is left out where IPv6 flows carry no BGP next hop:
# nfacctd prints "" there and "::" for a zero one, which 16 bytes cannot tell apart (we print "::").
CASES = {
    "netflow_v5/graylog/netgraph-netflow5.pcap": list(PLUGINS),
    "netflow_v5/logstash-codec-netflow/juniper_mx80.wrapped.pcap": list(PLUGINS),
    "netflow_v9/graylog/nprobe-netflow9-3.pcap": list(PLUGINS),
    "netflow_v9/logstash-codec-netflow/cisco_asr9k_tpl260.wrapped.pcap": list(PLUGINS),
    "netflow_v9/pmacct/102-NFv9-CISCO-f2rd-pretag-sampling-reload.pcap": list(PLUGINS),
    "ipfix/ipfixcol2/example_flows.wrapped.pcap": NO_NEXTHOP,
    "ipfix/pmacct/401-IPFIXv10-BMP-IPv6-CISCO-MPLS-traffic-00.pcap": list(PLUGINS),
    "ipfix/python-netflow/softflowd_ipfix_ether.wrapped.pcap": NO_NEXTHOP,
}


def plugin_config(name: str, keys: dict, output_file: str) -> PluginConfig:
    """Our PluginConfig for the same pmacct keys (built directly: no dependency on the config parser)."""
    history = keys.get("print_history")
    seconds = {None: 0, "5m": 300, "1h": 3600, "1d": 86400}[history]
    true = lambda k: keys.get(k) == "true"          # noqa: E731
    return PluginConfig(
        name=name, type="print", aggregate=tuple(p.strip() for p in keys["aggregate"].split(",")),
        history=history, history_secs=seconds, history_roundoff=keys.get("print_history_roundoff", ""),
        output=keys["print_output"], output_file=output_file, output_file_append=True,
        output_separator=keys.get("print_output_separator", ","), markers=true("print_markers"),
        num_protos=true("print_num_protos"), timestamps_since_epoch=true("timestamps_since_epoch"),
        timestamps_secs=true("timestamps_secs"), timestamps_utc=true("timestamps_utc"))


def nfacctd_config(pcap: Path, out: Path, plugins: list[str]) -> str:
    lines = [f"pcap_savefile: {pcap}", "plugins: " + ", ".join(f"print[{p}]" for p in ["full"] + plugins),
             "print_output_file_append: true", f"aggregate[full]: {ALL_PRIMITIVES}", "print_output[full]: json",
             f"print_output_file[full]: {out / 'full.json'}", "print_num_protos[full]: true",
             "timestamps_since_epoch[full]: true"]
    for p in plugins:
        lines.append(f"print_output_file[{p}]: {out / p}.txt")
        lines += [f"{k}[{p}]: {v}" for k, v in PLUGINS[p].items()]
    return "daemonize: false\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def nfacctd_runs(tmp_path_factory):
    """Runs nfacctd on every capture (in parallel); {capture: (output folder, start time)}."""
    if NFACCTD is None:
        pytest.skip("nfacctd (Debian package pmacct) is not installed")
    if not CAPTURES.is_dir():
        pytest.skip(f"captures not found at {CAPTURES}")
    base = tmp_path_factory.mktemp("nfacctd")
    runs, pending = {}, list(CASES)
    for _attempt in range(3):
        failed = []
        # a few captures at a time: 11 nfacctd processes each, and on a loaded 2-core machine a print plugin
        # that starts late misses the records the core already read
        for first in range(0, len(pending), PARALLEL_RUNS):
            procs = {}
            for capture in pending[first:first + PARALLEL_RUNS]:
                out = base / f"c{list(CASES).index(capture)}-{_attempt}"
                out.mkdir()
                (out / "nfacctd.conf").write_text(nfacctd_config(CAPTURES / capture, out, CASES[capture]))
                runs[capture] = (out, time.time())
                procs[capture] = subprocess.Popen([NFACCTD, "-f", str(out / "nfacctd.conf")],
                                                  stdout=subprocess.DEVNULL, stderr=open(out / "nfacctd.log", "w"),
                                                  start_new_session=True)     # its group: the core and plugins
            for p in procs.values():
                assert p.wait(120) == 0
            # nfacctd's writers are forked and may outlive the core: wait for them, and run a capture again
            # when one of its plugins lost records or never purged
            failed += [c for c, p in procs.items() if not consistent_run(runs[c][0], CASES[c], p.pid)]
        pending = failed
        if not pending:
            return runs
    pytest.fail(f"nfacctd kept losing records on {pending}")


def consistent_run(out: Path, plugins: list[str], group: Optional[int] = None, timeout: float = 60) -> bool:
    """Wait until every plugin logged its purge; True if each purged once and counted every packet (False also
    when some plugin never logged its purge: its processes, process group `group`, are gone or the timeout
    passed)."""
    log = out / "nfacctd.log"
    deadline = time.monotonic() + timeout
    while True:
        gone = group is not None and not _group_alive(group)
        ends = re.findall(r"\( (\S+)/print \): \*\*\* Purging cache - END \(PID: \d+, QN: \d+/(\d+)", log.read_text())
        if {p for p, _ in ends} >= {"full", *plugins}:
            break
        if gone or time.monotonic() > deadline:     # a plugin that never purged (loaded machine): run it again
            return False
        time.sleep(0.1)
    if len(ends) != len(plugins) + 1 or any(int(n) == 0 for _, n in ends):
        return False
    total = packets_in(out / "full.json", "json", ",")
    return all(packets_in(out / f"{p}.txt", PLUGINS[p]["print_output"], PLUGINS[p].get("print_output_separator", ","))
               in (total, None) for p in plugins)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def packets_in(path: Path, output: str, sep: str) -> int | None:
    """Total packets of a JSON or CSV print file (None for other outputs)."""
    lines = path.read_text().splitlines()
    if output == "json":
        return sum(json.loads(line).get("packets", 0) for line in lines if '"event_type": "purge"' in line)
    if output != "csv":
        return None
    rows = [line.split(sep) for line in lines if not line.startswith("--")]
    col = rows[0].index("PACKETS")
    return sum(int(r[col]) for r in rows[1:])


def _address(text: str) -> bytes:
    if not text:
        return bytes(16)
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return IPV4_MAPPED_PREFIX + socket.inet_aton(text)


def _epoch_us(text: str) -> int:
    secs, frac = text.split(".")
    return int(secs) * 1_000_000 + int(frac)


def records_from_full_json(path: Path) -> np.ndarray:
    """Canonical records from nfacctd's full-key JSON (test helper, one row at a time)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith('{"event_type": "purge"')]
    rec = empty(len(rows))
    for i, j in enumerate(rows):
        assert "packets" in j, f"row without counters (an NSEL-like event record): {j}"
        r = rec[i]
        r["family"] = 6 if ":" in j["ip_src"] else 4
        for key, col in (("ip_src", "src_host"), ("ip_dst", "dst_host"), ("peer_ip_src", "peer_src_ip"),
                         ("peer_ip_dst", "peer_dst_ip")):
            r[col] = np.frombuffer(_address(j[key]), np.uint8)
        for key, col in (("mac_src", "src_mac"), ("mac_dst", "dst_mac")):
            r[col] = np.frombuffer(bytes.fromhex(j[key].replace(":", "")), np.uint8)
        for key, col in (("as_src", "src_as"), ("as_dst", "dst_as"), ("peer_as_src", "peer_src_as"),
                         ("peer_as_dst", "peer_dst_as"), ("iface_in", "in_iface"), ("iface_out", "out_iface"),
                         ("mask_src", "src_mask"), ("mask_dst", "dst_mask"), ("port_src", "src_port"),
                         ("port_dst", "dst_port"), ("tos", "tos"), ("vlan", "vlan"), ("sampling_rate", "sampling_rate"),
                         ("export_proto_version", "export_proto_version"), ("packets", "packets"),
                         ("bytes", "bytes"), ("flows", "flows")):
            r[col] = int(j[key])
        r["tcp_flags"] = int(j["tcp_flags"])
        r["proto"] = int(j["ip_proto"])
        r["etype"] = int(j["etype"], 16)
        for key, col in (("timestamp_start", "ts_start"), ("timestamp_end", "ts_end"),
                         ("timestamp_arrival", "ts_arrival")):
            r[col] = _epoch_us(j[key])
    return rec


_PID = re.compile(r"(--(?:START|END) \()\d+(\)--)|(\"writer_id\": \"[^/]+/)\d+")
_STAMP_UPDATED = re.compile(r', "stamp_updated": "[^"]*"')
_DURATION = re.compile(r'"duration": \d+')


def normalised(text: str, output: str) -> list[str]:
    """Lines with pids, durations and stamp_updated masked; rows sorted, the title (first line) kept first."""
    lines = [_DURATION.sub('"duration": N', _STAMP_UPDATED.sub(
                 "", _PID.sub(lambda m: (m.group(1) or m.group(3)) + "PID" + (m.group(2) or ""), line)))
             for line in text.splitlines()]
    head = [] if output == "json" else lines[:1]
    markers = [l for l in lines if l.startswith("--") or "purge_init" in l or "purge_close" in l]
    rows = sorted(l for l in lines[len(head):] if l not in markers)
    return head + markers + rows


PARAMS = [(c, p) for c, plugins in CASES.items() for p in plugins]


@pytest.mark.parametrize("capture,plugin", PARAMS, ids=[f"{Path(c).stem}-{p}" for c, p in PARAMS])
def test_print_output_matches_nfacctd(nfacctd_runs, tmp_path, capture, plugin):
    out, started = nfacctd_runs[capture]
    records = records_from_full_json(out / "full.json")
    assert len(records) > 0
    expected = (out / f"{plugin}.txt").read_text()
    ours_path = tmp_path / f"{plugin}.txt"
    cfg = plugin_config(plugin, PLUGINS[plugin], str(ours_path))
    agg = Aggregator(cfg, CoreConfig(), start_s=started)
    for i in range(0, len(records), 500):           # several batches: exercises the merge
        agg.add(records[i:i + 500], now_s=started)
    PrintWriter(cfg, CoreConfig()).write(agg.purge())
    ours = ours_path.read_text()
    assert normalised(ours, cfg.output) == normalised(expected, cfg.output)
    assert len(ours.splitlines()) == len(expected.splitlines())
