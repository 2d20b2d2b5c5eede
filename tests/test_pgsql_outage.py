"""The pgsql plugin while PostgreSQL goes away: a live collector over real UDP, the real server stopped and
started again.  Every row must arrive exactly once; a buffer too small loses rows, counted and logged.

Each flow has its own key (source address), so the expected table is the sent
flows themselves: one row per flow with its packets and bytes; a row written
twice would show doubled counters (the table has no unique key: the
UPDATE-then-INSERT path).
"""
from __future__ import annotations

import json
import re
import socket
import time

import pytest

from conftest import free_udp_port
from netflow_encoder import V5Record, v5_packet
from pg_server import pg_server  # noqa: F401  (session fixture)

TABLE = """CREATE TABLE flows (ip_src inet NOT NULL, ip_dst inet NOT NULL, port_src INT NOT NULL,
    port_dst INT NOT NULL, ip_proto SMALLINT NOT NULL, packets BIGINT NOT NULL, bytes BIGINT NOT NULL)"""
REFRESH = 2
CLOSED_RE = re.compile(r"pgsql writer closed: (\{.*\})")


def conf(port: int, pg_port: int, db: str, max_writers: int = 10) -> str:
    return (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: pgsql[db]\n"
            "aggregate: src_host, dst_host, src_port, dst_port, proto\n"
            f"sql_host: 127.0.0.1\nsql_port: {pg_port}\nsql_user: postgres\nsql_db: {db}\nsql_table: flows\n"
            f"sql_optimize_clauses: true\nsql_refresh_time: {REFRESH}\nsql_max_writers: {max_writers}\n")


class Sender:
    """NetFlow v5 flows with distinct source addresses; remembers what it sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sent: dict[str, tuple[int, int]] = {}
        self.seq = 0

    def send(self, n: int) -> None:
        recs = []
        for _ in range(n):
            i = len(self.sent)
            src = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            rec = V5Record(src_addr=src, dst_addr="192.0.2.1", packets=i % 7 + 1, octets=100 * (i % 7 + 1),
                           src_port=1000, dst_port=80, proto=6, first=1000, last=2000)
            self.sent[src] = (rec.packets, rec.octets)
            recs.append(rec)
        for k in range(0, len(recs), 30):
            chunk = recs[k:k + 30]
            self.sock.sendto(v5_packet(chunk, sys_uptime_ms=5000, unix_secs=int(time.time()),
                                       flow_sequence=self.seq), ("127.0.0.1", self.port))
            self.seq += len(chunk)

    def close(self) -> None:
        self.sock.close()


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def db_rows(pg, db: str) -> dict[str, tuple[int, int]]:
    if not pg.running:
        return {}
    return {host: (p, b) for host, p, b in pg.query(db, "SELECT host(ip_src), packets, bytes FROM flows")}


def row_count(pg, db: str) -> int:
    return pg.query(db, "SELECT count(*) FROM flows")[0][0]


def closed_counters(log_text: str) -> dict:
    found = CLOSED_RE.findall(log_text)
    assert found, f"no final writer counters in the log:\n{log_text[-3000:]}"
    return json.loads(found[-1])


@pytest.fixture
def outage_db(pg_server):
    db = pg_server.create_db("outage")
    pg_server.execute(db, TABLE)
    yield db
    if not pg_server.running:          # a failed test must not leave the shared server down
        pg_server.start()


def test_server_stopped_two_refreshes_every_row_once(pg_server, outage_db, collector_factory):
    port = free_udp_port()
    collector = collector_factory(conf(port, pg_server.port, outage_db))
    collector.wait_listening(1)
    sender = Sender(port)
    try:
        sender.send(200)
        wait_for(lambda: row_count(pg_server, outage_db) == 200, 30, "the first 200 rows")
        pg_server.stop("fast")
        for _ in range(5):                      # 2.5 refresh intervals of traffic while the server is down
            sender.send(60)
            time.sleep(1.0)
        wait_for(lambda: "cannot connect" in collector.log_path.read_text(), 15, "a failed reconnection")
        pg_server.start()
        sender.send(100)
        wait_for(lambda: row_count(pg_server, outage_db) == len(sender.sent), 40, "every row after the restart")
    finally:
        sender.close()
    assert collector.stop() == 0
    assert db_rows(pg_server, outage_db) == sender.sent
    counters = closed_counters(collector.log_path.read_text())
    assert counters["rows_written"] == len(sender.sent) == 600
    assert counters["rows_dropped"] == counters["rows_lost_at_exit"] == counters["rows_failed"] == 0
    assert counters["retries"] >= 1 and counters["connect_failures"] >= 1
    assert counters["connects"] >= 2


def test_buffer_overflow_is_counted_and_logged(pg_server, outage_db, collector_factory):
    port = free_udp_port()
    collector = collector_factory(conf(port, pg_server.port, outage_db, max_writers=2))   # one purge kept
    collector.wait_listening(1)
    sender = Sender(port)
    try:
        sender.send(3)
        wait_for(lambda: row_count(pg_server, outage_db) == 3, 30, "the first 3 rows")
        pg_server.stop("fast")
        sender.send(20)
        wait_for(lambda: "connect" in collector.log_path.read_text(), 15, "a failed write")
        time.sleep(REFRESH + 0.5)
        sender.send(10)                         # a later purge: no room left
        wait_for(lambda: "rows dropped" in collector.log_path.read_text(), 15, "the overflow log line")
        pg_server.start()
        wait_for(lambda: "connected again" in collector.log_path.read_text(), 30, "the reconnection")
    finally:
        sender.close()
    assert collector.stop() == 0
    log_text = collector.log_path.read_text()
    assert "sql_max_writers 2" in log_text
    counters = closed_counters(log_text)
    got = db_rows(pg_server, outage_db)
    assert counters["rows_dropped"] >= 10 and counters["rows_lost_at_exit"] == 0
    assert counters["rows_written"] + counters["rows_dropped"] == len(sender.sent) == 33
    assert len(got) == counters["rows_written"] and all(sender.sent[h] == v for h, v in got.items())
