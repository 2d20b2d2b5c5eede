"""networks_file reload under traffic: SIGUSR2 to the engine reaches the plugins, whose networks lookup uses
the new file from the next records on; a file that cannot be read keeps the old table."""
from __future__ import annotations

import json
import signal
import socket
import time

from conftest import free_udp_port
from netflow_encoder import V5Record, v5_packet
from test_pretag_reload import T0, _wait_log


def _send(sock, port: int, src: str, count: int) -> None:
    for k in range(count):
        recs = [V5Record(src, f"10.1.2.{j + 1}", packets=1, octets=100, first=3_590_000, last=3_595_000, proto=6,
                         src_port=1000 + j, dst_port=80) for j in range(10)]
        sock.sendto(v5_packet(recs, sys_uptime_ms=3_600_000, unix_secs=T0, flow_sequence=k * 10), ("127.0.0.1", port))


def test_networks_file_reload_under_traffic(collector_factory, tmp_path) -> None:
    port = free_udp_port()
    networks = tmp_path / "networks.lst"
    networks.write_text("65001,10.0.0.0/8\n")
    out = tmp_path / "rows.json"
    collector = collector_factory(
        f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nnfacctd_net: file\nnfacctd_as: file\n"
        f"plugins: print[p]\naggregate[p]: src_host, dst_net, dst_mask, dst_as\nnetworks_file[p]: {networks}\n"
        f"print_output[p]: json\nprint_output_file[p]: {out}\nprint_output_file_append: true\n"
        "print_refresh_time: 3600\n")
    collector.wait_listening(1)
    _wait_log(collector, "networks_file loaded")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _send(sock, port, "192.168.0.1", 20)
        time.sleep(2)                                   # the plugin enriches as it drains: let it drain phase 1
        networks.write_text("! more specific\n65002,10.1.0.0/16\n")
        collector.proc.send_signal(signal.SIGUSR2)
        _wait_log(collector, "networks_file loaded", 2)
        _send(sock, port, "192.168.0.2", 20)
        time.sleep(2)
        networks.unlink()                               # unreadable on the next reload: the old table stays
        collector.proc.send_signal(signal.SIGUSR2)
        _wait_log(collector, "SIGUSR2", 2)
        time.sleep(1)
        _send(sock, port, "192.168.0.3", 20)
        time.sleep(1)
    assert collector.stop() == 0
    rows = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        key = (row["ip_src"], row["net_dst"], row["mask_dst"], row["as_dst"])
        rows[key] = rows.get(key, 0) + row["packets"]
    assert rows == {("192.168.0.1", "10.0.0.0", 8, 65001): 200,
                    ("192.168.0.2", "10.1.0.0", 16, 65002): 200,
                    ("192.168.0.3", "10.1.0.0", 16, 65002): 200}
