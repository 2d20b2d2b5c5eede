"""pre_tag_map reload under traffic: SIGUSR2 changes tags from the next flows on, loses nothing;
a bad map on reload is logged with file and line and the old map is kept."""
from __future__ import annotations

import json
import signal
import socket
import time

from conftest import free_udp_port
from netflow_encoder import V5Record, v5_packet

T0 = 1_700_000_000


def _send(sock, port: int, phase: int, count: int) -> tuple[int, int]:
    """`count` v5 packets of 10 flows from 10.<phase>.x.y; returns (packets, bytes) sent."""
    pk = by = 0
    for k in range(count):
        recs = [V5Record(f"10.{phase}.{k % 250}.{j}", "192.168.0.1", packets=1 + j, octets=100 + j,
                         first=3_590_000, last=3_595_000, proto=17, src_port=1000, dst_port=53) for j in range(10)]
        pk += sum(r.packets for r in recs)
        by += sum(r.octets for r in recs)
        sock.sendto(v5_packet(recs, sys_uptime_ms=3_600_000, unix_secs=T0, flow_sequence=k * 10), ("127.0.0.1", port))
        if k % 50 == 49:
            time.sleep(0.01)
    return pk, by


def _wait_log(collector, text: str, count: int = 1, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = collector.log_path.read_text()
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{collector.log_path.read_text()[-3000:]}")


def test_reload_under_traffic(collector_factory, tmp_path) -> None:
    port = free_udp_port()
    mapfile = tmp_path / "pretag.map"
    mapfile.write_text("set_tag=1 ip=127.0.0.1\n")
    out = tmp_path / "rows.json"
    conf = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\npre_tag_map: {mapfile}\nmaps_refresh: true\n"
            f"plugins: print[p]\naggregate[p]: tag, src_host\nprint_output[p]: json\n"
            f"print_output_file[p]: {out}\nprint_output_file_append: true\nprint_refresh_time: 3600\n")
    collector = collector_factory(conf)
    collector.wait_listening(1)
    sent = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sent[1] = _send(sock, port, 1, 200)
        time.sleep(2)                                   # let the shard drain phase 1
        mapfile.write_text("! new map\nset_tag=2 ip=127.0.0.0/8\n")
        collector.proc.send_signal(signal.SIGUSR2)
        _wait_log(collector, "pre_tag_map reloaded")
        sent[2] = _send(sock, port, 2, 200)
        time.sleep(2)
        mapfile.write_text("set_tag=3 ip=127.0.0.1\nset_tag=4 ip=not-an-address\n")
        collector.proc.send_signal(signal.SIGUSR2)
        log = _wait_log(collector, "pre_tag_map not reloaded")
        assert f"{mapfile}:2" in log
        sent[3] = _send(sock, port, 3, 200)
        time.sleep(2)
    assert collector.stop() == 0
    got: dict[int, dict[int, list[int]]] = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        phase = int(r["ip_src"].split(".")[1])
        acc = got.setdefault(phase, {}).setdefault(r["tag"], [0, 0])
        acc[0] += r["packets"]
        acc[1] += r["bytes"]
    # phase 1 under the first map, phase 2 under the reloaded one, phase 3 still under it (bad map kept out)
    assert got == {1: {1: list(sent[1])}, 2: {2: list(sent[2])}, 3: {2: list(sent[3])}}
