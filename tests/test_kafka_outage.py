"""A live collector whose Kafka broker goes away and comes back: every row is consumed or counted as lost.

pmengine runs over real UDP with two kafka plugins and a 1 s refresh; the
broker (a private one: this test stops it) is stopped by its PID while traffic
keeps coming across several refreshes, then started again on the same port and
data.  Every flow has a key of its own, so rows are flows.
- "keep": librdkafka's defaults keep the messages queued through the outage
  (message.timeout.ms 300 s): they arrive after the restart;
- "lossy": message.timeout.ms 2000 and a 20-message queue: messages time out or
  find the queue full during the outage and are lost, and counted.
For both: consumed rows + counted lost rows == rows sent, no row twice, and
each consumed row carries exactly the bytes sent for it.
"""
from __future__ import annotations

import json
import re
import socket
import time

import pytest

from conftest import free_udp_port
from kafka_broker import KafkaBroker, broker_missing
from netflow_encoder import V5Record, v5_packet

CLOSED = re.compile(r"kafka plugin (\w+) closed: .*produced_rows=(\d+) .*lost_rows=(\d+)")


def flows_batch(first: int, count: int) -> list[V5Record]:
    return [V5Record(src_addr=f"10.2.{i // 250}.{i % 250}", dst_addr="192.0.2.7", src_port=1000 + i % 60000,
                     dst_port=443, proto=6, packets=1 + i % 9, octets=100 + i, first=1000, last=2000)
            for i in range(first, first + count)]


def send(port: int, records: list[V5Record], sequence: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(0, len(records), 30):
            chunk = records[i:i + 30]
            s.sendto(v5_packet(chunk, sys_uptime_ms=5000, unix_secs=int(time.time()), flow_sequence=sequence),
                     ("127.0.0.1", port))
            sequence += len(chunk)
    return sequence


@pytest.fixture
def broker():
    missing = broker_missing()
    if missing:
        pytest.skip(missing)
    b = KafkaBroker(partitions=1).start()
    try:
        yield b
    finally:
        b.close()


def test_broker_outage_loses_nothing_silently(broker, collector_factory, tmp_path):
    port = free_udp_port()
    host, kport = broker.bootstrap.split(":")
    keep_cfg, lossy_cfg = tmp_path / "keep.csv", tmp_path / "lossy.csv"
    keep_cfg.write_text(broker.config_file_lines())
    lossy_cfg.write_text(broker.config_file_lines() + "global, message.timeout.ms, 2000\n"
                         "global, queue.buffering.max.messages, 20\n")
    conf = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: kafka[keep], kafka[lossy]\n"
            f"aggregate: src_host, dst_host, src_port\nkafka_refresh_time: 1\n"
            f"kafka_broker_host: {host}\nkafka_broker_port: {kport}\n"
            f"kafka_topic[keep]: outage.keep\nkafka_topic[lossy]: outage.lossy\n"
            f"kafka_config_file[keep]: {keep_cfg}\nkafka_config_file[lossy]: {lossy_cfg}\n")
    collector = collector_factory(conf)
    collector.wait_listening(1)
    sent, seq = [], 0

    def burst(count: int) -> None:
        nonlocal seq
        records = flows_batch(len(sent), count)
        seq = send(port, records, seq)
        sent.extend(records)

    burst(100)                                  # broker up
    time.sleep(2.5)
    broker.stop_kafka()                         # SIGTERM to the Kafka JVM, by its PID
    for _ in range(3):                          # traffic across several refreshes while it is away
        burst(150)
        time.sleep(1.5)
    time.sleep(3.0)                             # lossy's messages time out (2 s)
    broker.start_kafka()
    burst(100)
    time.sleep(3.0)
    assert collector.stop() == 0
    log = collector.log_path.read_text()
    closed = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in CLOSED.finditer(log)}
    assert set(closed) == {"keep", "lossy"}, log[-3000:]

    expected = {(f"{r.src_addr}", r.src_port): r.octets for r in sent}
    for plugin in ("keep", "lossy"):
        got = {}
        for msg in broker.consume(f"outage.{plugin}", idle=3.0):
            row = json.loads(msg.value())
            key = (row["ip_src"], row["port_src"])
            assert key not in got, f"{plugin}: row {key} delivered twice"
            got[key] = row["bytes"]
        assert set(got) <= set(expected)
        assert all(got[k] == expected[k] for k in got)
        produced_rows, lost_rows = closed[plugin]
        assert len(got) + lost_rows == len(sent), (plugin, len(got), lost_rows, len(sent))
        if plugin == "lossy":
            assert lost_rows > 0, "the lossy plugin was expected to lose (and count) rows"
            assert "rows lost so far" in log
        else:
            assert lost_rows == 0 and len(got) == len(sent)
