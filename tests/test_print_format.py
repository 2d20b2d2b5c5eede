"""Render functions and the print writer against literal nfacctd 1.7.7 output (observed, not computed here),
and the plugin process loop with real shared-memory rings."""
from __future__ import annotations

import calendar
import json
import multiprocessing as mp
import os
import signal
import socket
import stat
import sys
import time
import uuid

import numpy as np
import pytest

from engine.config.tree import CoreConfig, PluginConfig
from engine.plugins import PLUGIN_TYPES, load_plugin, resolve_plugin
from engine.plugins.aggregate import Aggregator
from engine.plugins.print_plugin import PrintWriter
from engine.plugins.render import (RenderOptions, etype_text, host_text, mac_text, peer_text, proto_text,
                                   stamp_text, timestamp_text)
from engine.schema import IPV4_MAPPED_PREFIX, empty

UTC = RenderOptions(utc=True)


def utc_us(text: str) -> int:
    """'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) -> µs since epoch."""
    day, frac = (text.split(".") + ["0"])[:2]
    secs = calendar.timegm(time.strptime(day, "%Y-%m-%d %H:%M:%S"))
    return secs * 1_000_000 + int(frac.ljust(6, "0"))


def addr(text: str) -> np.ndarray:
    if not text:
        return np.zeros(16, np.uint8)
    raw = socket.inet_pton(socket.AF_INET6, text) if ":" in text else IPV4_MAPPED_PREFIX + socket.inet_aton(text)
    return np.frombuffer(raw, np.uint8)


def record(**kw) -> np.ndarray:
    """One canonical record; addresses as text, times as UTC text."""
    r = empty(1)
    r["family"] = 6 if ":" in kw.get("src", "") else 4
    r["packets"], r["bytes"], r["flows"], r["etype"] = 1, 100, 1, 0x800
    for key, col in (("src", "src_host"), ("dst", "dst_host"), ("peer", "peer_src_ip"), ("nexthop", "peer_dst_ip")):
        if key in kw:
            r[col] = addr(kw.pop(key))
    for key, col in (("start", "ts_start"), ("end", "ts_end"), ("arrival", "ts_arrival")):
        if key in kw:
            r[col] = utc_us(kw.pop(key))
    for key, value in kw.items():
        r[key] = value
    return r


def plugin(**kw) -> PluginConfig:
    kw.setdefault("aggregate", ("src_host",))
    kw.setdefault("timestamps_utc", True)
    return PluginConfig(name=kw.pop("name", "p"), type="print", **kw)


def purge(cfg: PluginConfig, records: np.ndarray, start: str = "2026-11-22 00:53:31", now: str | None = None):
    start_s = utc_us(start) / 1e6
    agg = Aggregator(cfg, CoreConfig(), start_s=start_s)
    agg.add(records, now_s=start_s)
    return agg.purge(utc_us(now or start))


# -- render functions -------------------------------------------------------------------------------
def test_etype_mac_proto_flags_text():
    assert etype_text(np.array([0x800, 0x86DD, 0xB0FE, 0xFE])) == ["800", "86dd", "b0fe", "fe"]
    mac = np.array([[0x30, 0xFB, 0xB8, 0xE6, 0x67, 0xB1], [0, 0, 0, 0, 0, 0]], np.uint8)
    assert mac_text(mac) == ["30:fb:b8:e6:67:b1", "00:00:00:00:00:00"]
    protos = np.array([0, 1, 2, 3, 4, 6, 17, 41, 47, 58, 93, 108, 112, 124, 132, 133, 134, 200, 255])
    assert proto_text(protos) == ["0", "icmp", "igmp", "ggp", "ipencap", "tcp", "udp", "ipv6", "gre",
                                           "ipv6-icmp", "ax.25", "IPcomp", "vrrp", "isis", "sctp", "fc", "134",
                                           "200", "255"]
    assert proto_text(np.array([6, 1]), numeric=True) == ["6", "1"]


def test_address_text():
    rows = np.stack([addr("192.168.1.1"), addr("2001:db8:90::1"), addr("::ffff:203.0.113.24"), addr("")])
    # peer addresses: mapped -> dotted, zero -> absent ("" in JSON/CSV, "::" in formatted output)
    assert peer_text(rows) == ["192.168.1.1", "2001:db8:90::1", "203.0.113.24", ""]
    assert peer_text(rows[3:], "::") == ["::"]
    # peer_dst_ip of IPv6 flows is IPv6 text (nfacctd: "::ffff:0.0.0.0", "::ffff:203.0.113.24", "::")
    fam = np.array([4, 6, 6, 6])
    assert peer_text(rows, "", fam) == ["192.168.1.1", "2001:db8:90::1", "::ffff:203.0.113.24", "::"]
    # flow addresses follow the flow family; family 0 (no L3 address) is absent
    assert host_text(rows, np.array([4, 6, 4, 0]), "::") == ["192.168.1.1", "2001:db8:90::1",
                                                                      "203.0.113.24", "::"]


def test_timestamp_and_stamp_text():
    us = np.array([utc_us("2017-07-25 12:02:37"), 0, utc_us("2026-11-22 00:50:26.507005")])
    assert timestamp_text(us, UTC) == [
        "2017-07-25 12:02:37.000000", "0000-00-00 00:00:00.000000", "2026-11-22 00:50:26.507005"]
    assert timestamp_text(us, RenderOptions(since_epoch=True)) == [
        "1500984157.000000", "0.000000", "1795308626.507005"]
    assert timestamp_text(us[2:], RenderOptions(utc=True, secs=True)) == ["2026-11-22 00:50:26.000000"]
    assert stamp_text(np.array([1500984000]), UTC) == ["2017-07-25 12:00:00"]
    assert stamp_text(np.array([1500984000]), RenderOptions(since_epoch=True)) == ["1500984000"]


# -- whole lines (nfacctd 1.7.7 on netflow_v5/graylog/netflow5.pcap, every primitive) ---------------------
ALL = ("src_host", "dst_host", "src_port", "dst_port", "proto", "tos", "tcpflags", "src_as", "dst_as", "peer_src_as",
       "peer_dst_as", "peer_src_ip", "peer_dst_ip", "in_iface", "out_iface", "src_mask", "dst_mask", "src_net",
       "dst_net", "timestamp_start", "timestamp_end", "etype", "vlan", "src_mac", "dst_mac", "export_proto_version",
       "sampling_rate", "timestamp_arrival")
ICMP_FLOW = dict(src="192.168.1.100", dst="192.168.1.1", peer="192.168.1.1", dst_port=2048, proto=1,
                 sampling_rate=100, start="2017-07-25 12:32:11", end="2017-07-25 12:32:11",
                 export_proto_version=5, bytes=84)
JSON_ALL = ('{"event_type": "purge", "mac_src": "00:00:00:00:00:00", "mac_dst": "00:00:00:00:00:00", "vlan": 0, '
            '"etype": "800", "as_src": 0, "as_dst": 0, "peer_as_src": 0, "peer_as_dst": 0, "peer_ip_src": '
            '"192.168.1.1", "peer_ip_dst": "", "iface_in": 0, "iface_out": 0, "ip_src": "192.168.1.100", "net_src": '
            '"0.0.0.0", "ip_dst": "192.168.1.1", "net_dst": "0.0.0.0", "mask_src": 0, "mask_dst": 0, "port_src": 0, '
            '"port_dst": 2048, "tcp_flags": "0", "ip_proto": "icmp", "tos": 0, "sampling_rate": 100, '
            '"timestamp_start": "2017-07-25 12:32:11.000000", "timestamp_end": "2017-07-25 12:32:11.000000", '
            '"timestamp_arrival": "2026-11-22 00:43:34.777049", "export_proto_version": 5, "packets": 1, "bytes": 84}')
CSV_ALL = ("SRC_MAC,DST_MAC,VLAN,ETYPE,SRC_AS,DST_AS,PEER_SRC_AS,PEER_DST_AS,PEER_SRC_IP,PEER_DST_IP,IN_IFACE,"
           "OUT_IFACE,SRC_IP,SRC_NET,DST_IP,DST_NET,SRC_MASK,DST_MASK,SRC_PORT,DST_PORT,TCP_FLAGS,PROTOCOL,TOS,"
           "SAMPLING_RATE,TIMESTAMP_START,TIMESTAMP_END,TIMESTAMP_ARRIVAL,EXPORT_PROTO_VERSION,PACKETS,BYTES\n"
           "00:00:00:00:00:00,00:00:00:00:00:00,0,800,0,0,0,0,192.168.1.1,,0,0,192.168.1.100,0.0.0.0,192.168.1.1,"
           "0.0.0.0,0,0,0,2048,0,icmp,0,100,2017-07-25 12:32:11.000000,2017-07-25 12:32:11.000000,"
           "2026-11-22 00:43:38.814192,5,1,84\n")
FORMATTED_ALL = (
    "SRC_MAC            DST_MAC            VLAN   ETYPE  SRC_AS      DST_AS      PEER_SRC_AS PEER_DST_AS PEER_SRC_IP"
    "                                    PEER_DST_IP                                    IN_IFACE    OUT_IFACE   SRC_IP"
    "                                         SRC_NET                                        DST_IP                   "
    "                      DST_NET                                        SRC_MASK  DST_MASK  SRC_PORT  DST_PORT  TCP"
    "_FLAGS  PROTOCOL    TOS    SAMPLING_RATE TIMESTAMP_START                TIMESTAMP_END                  TIMESTAMP"
    "_ARRIVAL              EXPORT_PROTO_VERSION  PACKETS               BYTES\n"
    "00:00:00:00:00:00  00:00:00:00:00:00  0      800    0           0           0           0           192.168.1.1"
    "                                    ::                                             0           0           192.1"
    "68.1.100                                  0.0.0.0                                        192.168.1.1           "
    "                         0.0.0.0                                        0         0         0         2048      "
    "0          icmp        0      100           2017-07-25 12:32:11.000000     2017-07-25 12:32:11.000000     2026-1"
    "1-22 00:43:42.850229     5                     1                     84\n")


@pytest.mark.parametrize("output,arrival,expected", [
    ("json", "2026-11-22 00:43:34.777049", JSON_ALL + "\n"),
    ("csv", "2026-11-22 00:43:38.814192", CSV_ALL),
    ("formatted", "2026-11-22 00:43:42.850229", FORMATTED_ALL),
])
def test_every_primitive_line(tmp_path, output, arrival, expected):
    out = tmp_path / "out.txt"
    cfg = plugin(aggregate=ALL, output=output, output_file=str(out))
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, record(arrival=arrival, **ICMP_FLOW)))
    assert out.read_text() == expected


def test_column_order_ignores_config_order_and_flows_counter(tmp_path):
    # nfacctd: aggregate "dst_host, src_host, flows" prints ip_src first; flows before packets in JSON only
    recs = np.concatenate([record(src="192.168.1.100", dst="192.168.1.1", bytes=84),
                           record(src="192.168.1.100", dst="192.168.1.1", bytes=203)])
    for output, expected in (
            ("json", '{"event_type": "purge", "ip_src": "192.168.1.100", "ip_dst": "192.168.1.1", '
                     '"flows": 2, "packets": 2, "bytes": 287}\n'),
            ("csv", "SRC_IP,DST_IP,PACKETS,FLOWS,BYTES\n192.168.1.100,192.168.1.1,2,2,287\n"),
            ("event_csv", "SRC_IP,DST_IP\n192.168.1.100,192.168.1.1\n")):
        out = tmp_path / f"{output}.txt"
        cfg = plugin(aggregate=("dst_host", "src_host", "flows"), output=output, output_file=str(out))
        PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs))
        assert out.read_text() == expected


def test_history_stamps_json_only_and_since_epoch(tmp_path):
    # nfacctd: 5m history, flow at 12:02:37 read at 2020-01-01 10:07:23 -> stamp_inserted 12:02:00
    recs = record(src="10.0.0.1", start="2017-07-25 12:02:37", packets=10, bytes=1000)
    out = tmp_path / "j.json"
    cfg = plugin(output="json", output_file=str(out), history="5m", history_secs=300)
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs, start="2020-01-01 10:07:23", now="2026-11-22 00:50:24"))
    assert out.read_text() == ('{"event_type": "purge", "ip_src": "10.0.0.1", "stamp_inserted": "2017-07-25 12:02:00", '
                               '"stamp_updated": "2026-11-22 00:50:24", "packets": 10, "bytes": 1000}\n')
    out = tmp_path / "e.json"
    cfg = plugin(output="json", output_file=str(out), history="5m", history_secs=300, timestamps_since_epoch=True)
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs, start="2026-11-22 00:51:23", now="2026-11-22 00:51:25"))
    assert out.read_text() == ('{"event_type": "purge", "ip_src": "10.0.0.1", "stamp_inserted": "1500984060", '
                               '"stamp_updated": "1795308685", "packets": 10, "bytes": 1000}\n')
    for output, expected in (("csv", "SRC_IP,PACKETS,BYTES\n10.0.0.1,10,1000\n"),
                             ("formatted", "SRC_IP" + " " * 41 + "PACKETS" + " " * 15 + "BYTES\n10.0.0.1" + " " * 39
                              + "10" + " " * 20 + "1000\n")):
        out = tmp_path / f"h.{output}"
        cfg = plugin(output=output, output_file=str(out), history="5m", history_secs=300)
        PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs))
        assert out.read_text() == expected


def test_tcp_flags_are_ored_over_the_aggregate(tmp_path):
    recs = np.concatenate([record(src="10.0.0.1", proto=6, tcp_flags=2), record(src="10.0.0.1", proto=6, tcp_flags=16),
                           record(src="10.0.0.1", proto=6, tcp_flags=25)])
    out = tmp_path / "f.csv"
    cfg = plugin(aggregate=("src_host", "tcpflags"), output="csv", output_file=str(out))
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs))
    assert out.read_text() == "SRC_IP,TCP_FLAGS,PACKETS,BYTES\n10.0.0.1,27,3,300\n"


# -- files, markers, titles -----------------------------------------------------------------------------
def test_markers_csv_and_json(tmp_path):
    recs = record(src="10.0.0.1")
    out = tmp_path / "m.csv"
    cfg = plugin(output="csv", output_file=str(out), markers=True)
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs))
    pid = os.getpid()
    assert out.read_text() == f"--START ({pid})--\nSRC_IP,PACKETS,BYTES\n10.0.0.1,1,100\n--END ({pid})--\n"
    out = tmp_path / "m.json"
    cfg = plugin(output="json", output_file=str(out), markers=True)
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, recs))
    assert out.read_text() == (f'{{"event_type": "purge_init", "writer_id": "p/{pid}"}}\n'
                               '{"event_type": "purge", "ip_src": "10.0.0.1", "packets": 1, "bytes": 100}\n'
                               f'{{"event_type": "purge_close", "writer_id": "p/{pid}", "purged_entries": 1, '
                               '"total_entries": 1, "duration": 0}\n')


def test_append_overwrite_and_empty_purges(tmp_path):
    pre = tmp_path / "pre.csv"
    pre.write_text("PRE\n")
    empty_existing = tmp_path / "empty.csv"
    empty_existing.write_text("")
    for path in (pre, empty_existing):            # appending to an existing file: no title, even if empty
        cfg = plugin(output="csv", output_file=str(path), output_file_append=True)
        PrintWriter(cfg, CoreConfig()).write(purge(cfg, record(src="10.0.0.1")))
    assert pre.read_text() == "PRE\n10.0.0.1,1,100\n"
    assert empty_existing.read_text() == "10.0.0.1,1,100\n"

    over = tmp_path / "over.csv"
    cfg = plugin(output="csv", output_file=str(over), write_empty_file=False)
    writer = PrintWriter(cfg, CoreConfig())
    writer.write(purge(cfg, record(src="10.0.0.1")))
    writer.write(purge(cfg, record(src="10.0.0.2")))       # no append: rewritten
    assert over.read_text() == "SRC_IP,PACKETS,BYTES\n10.0.0.2,1,100\n"
    writer.write(purge(cfg, empty(0)))                        # nothing to write: file left alone
    assert over.read_text() == "SRC_IP,PACKETS,BYTES\n10.0.0.2,1,100\n"
    assert stat.S_IMODE(over.stat().st_mode) == 0o600

    cfg = plugin(output="csv", output_file=str(over), write_empty_file=True)
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, empty(0)))
    assert over.read_text() == "SRC_IP,PACKETS,BYTES\n"
    js = tmp_path / "empty.json"
    cfg = plugin(output="json", output_file=str(js), write_empty_file=True, markers=True)
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, empty(0)))
    pid = os.getpid()
    assert js.read_text() == (f'{{"event_type": "purge_init", "writer_id": "p/{pid}"}}\n'
                              f'{{"event_type": "purge_close", "writer_id": "p/{pid}", "purged_entries": 0, '
                              '"total_entries": 0, "duration": 0}\n')


def test_dynamic_file_names_and_latest(tmp_path):
    # nfacctd: purge at 00:53:3x, 5m history started 00:53:31; flows now (127.0.0.1, 127.0.0.2) and an hour ago
    recs = np.concatenate([record(src="10.0.0.1", peer="127.0.0.1", start="2026-11-22 00:53:32"),
                           record(src="10.0.0.2", peer="127.0.0.2", start="2026-11-21 23:53:32"),
                           record(src="10.0.0.3", peer="127.0.0.2", start="2026-11-22 00:53:32")])
    base = tmp_path / "spool"
    cfg = plugin(aggregate=("src_host", "peer_src_ip"), output="csv", history="5m", history_secs=300,
                 output_file=f"{base}/p/%Y%m%d-%H%M-$peer_src_ip.txt", latest_file=f"{base}/latest-$peer_src_ip",
                 refresh_time=2)
    writer = PrintWriter(cfg, CoreConfig())
    rows = purge(cfg, recs, now="2026-11-22 00:53:35")
    assert writer.write(rows) == 3
    files = sorted(os.listdir(base / "p"))
    assert files == ["20261121-2353-127_0_0_2.txt", "20261122-0053-127_0_0_1.txt", "20261122-0053-127_0_0_2.txt"]
    assert (base / "p" / files[0]).read_text() == "PEER_SRC_IP,SRC_IP,PACKETS,BYTES\n127.0.0.2,10.0.0.2,1,100\n"
    assert os.readlink(base / "latest-127_0_0_2") == f"{base}/p/20261122-0053-127_0_0_2.txt"
    assert os.readlink(base / "latest-127_0_0_1") == f"{base}/p/20261122-0053-127_0_0_1.txt"
    assert stat.S_IMODE((base / "p").stat().st_mode) == 0o700

    cfg = plugin(aggregate=("src_host", "peer_src_ip"), output="csv", history="5m", history_secs=300,
                 output_file=f"{base}/q/%s-$ref-$hst.txt", refresh_time=2)
    PrintWriter(cfg, CoreConfig()).write(rows)
    assert sorted(os.listdir(base / "q")) == ["1795305180-2-300.txt", "1795308780-2-300.txt"]

    cfg = plugin(aggregate=("src_host", "peer_src_ip"), output="csv", output_file=f"{base}/r/$peer_src_ip.txt")
    PrintWriter(cfg, CoreConfig()).write(purge(cfg, record(src="10.0.0.1", peer="::1")))
    assert os.listdir(base / "r") == ["__1.txt"]


def test_stdout_title_once(tmp_path):
    script = (
        "import numpy as np, sys\n"
        "sys.path.insert(0, %r)\n"
        "from test_print_format import plugin, purge, record\n"
        "from engine.config.tree import CoreConfig\n"
        "from engine.plugins.print_plugin import PrintWriter\n"
        "cfg = plugin(output='csv', markers=True)\n"
        "w = PrintWriter(cfg, CoreConfig())\n"
        "w.write(purge(cfg, record(src='10.0.0.1')))\n"
        "w.write(purge(cfg, record(src='10.0.0.2')))\n") % os.path.dirname(__file__)
    import subprocess
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=os.path.dirname(
        os.path.dirname(__file__)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid = proc.stdout.split("(")[1].split(")")[0]
    assert proc.stdout == (f"--START ({pid})--\nSRC_IP,PACKETS,BYTES\n10.0.0.1,1,100\n--END ({pid})--\n"
                           f"--START ({pid})--\n10.0.0.2,1,100\n--END ({pid})--\n")


def test_write_error_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = plugin(output="csv", output_file=str(blocker / "sub" / "out.csv"))
    writer = PrintWriter(cfg, CoreConfig())
    assert writer.write(purge(cfg, record(src="10.0.0.1"))) == 0
    assert writer.write_errors == 1


# -- registry and the plugin process ---------------------------------------------------------------------
def test_registry_is_lazy_and_explicit():
    assert PLUGIN_TYPES["print"] == resolve_plugin("print")
    assert load_plugin("print").__name__ == "plugin_main"
    with pytest.raises(ValueError, match="unknown plugin type"):
        resolve_plugin("nosuch")


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_plugin_process_purges_on_refresh_and_flushes_on_sigterm(tmp_path):
    from engine.ipc.ring import Ring, ring_name
    from engine.proc import LogSetup, child_entry
    run = uuid.uuid4().hex[:8]
    rings = [Ring.create(ring_name(run, i, "p"), 4096) for i in range(2)]
    try:
        out, log = tmp_path / "out.json", tmp_path / "plugin.log"
        cfg = plugin(aggregate=("src_host", "dst_port"), output="json", output_file=str(out), refresh_time=1,
                     output_file_append=True)
        recs = np.concatenate([record(src=f"10.0.0.{i % 3}", dst_port=80 + i % 2, bytes=10 + i) for i in range(60)])
        rings[0].write(recs[:30])
        proc = mp.get_context("spawn").Process(target=child_entry, args=(
            "plugin", resolve_plugin("print"), LogSetup(logfile=str(log)),
            (cfg, CoreConfig(), [r.name for r in rings], str(tmp_path / "stats.json"))))
        proc.start()
        assert _wait_for(lambda: out.exists() and out.stat().st_size > 0), "no purge after refresh_time"
        os.kill(proc.pid, signal.SIGINT)           # ignored
        os.kill(proc.pid, signal.SIGUSR1)          # counters to the log
        assert _wait_for(lambda: "records=30" in log.read_text()), log.read_text()
        rings[1].write(recs[30:])
        os.kill(proc.pid, signal.SIGTERM)          # drain, final purge, exit 0
        proc.join(30)
        assert proc.exitcode == 0
        got: dict = {}
        for j in map(json.loads, out.read_text().splitlines()):
            p, b = got.get((j["ip_src"], j["port_dst"]), (0, 0))
            got[(j["ip_src"], j["port_dst"])] = (p + j["packets"], b + j["bytes"])
        expected: dict = {}
        for i in range(60):
            p, b = expected.get((f"10.0.0.{i % 3}", 80 + i % 2), (0, 0))
            expected[(f"10.0.0.{i % 3}", 80 + i % 2)] = (p + 1, b + 10 + i)
        assert got == expected
        stats = json.loads((tmp_path / "stats.json").read_text())
        assert stats["records"] == 60 and stats["purges"] >= 2 and stats["write_errors"] == 0
        assert "Purging cache - END" in log.read_text()
    finally:
        for r in rings:
            r.close()
            r.unlink()
