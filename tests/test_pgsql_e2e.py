"""The pgsql plugin end to end: a generated NetFlow v9 pcap into a real PostgreSQL, beside nfacctd 1.7.7.

pmengine and nfacctd read the same pcap (`pcap_savefile`) with the same pgsql
configuration, each into its own database of one throwaway server; the
SELECTed rows must be equal (stamp_updated ignored: it is the purge time).
The first case is also checked against aggregates computed here from the
generated flows.  Named differences from nfacctd 1.7.7, asserted below:
- dynamic sql_table: we split a purge by each row's own bin and $peer_src_ip
  (the docs: "$peer_src_ip: record value"); nfacctd 1.7.7 writes the whole
  purge into one table, named from one row.  Same rows, other split: the
  union of the tables is compared, and the split asserted.
- default table: pmacct's docs (sql/README.pgsql) say version N writes to
  acct_vN; nfacctd 1.7.7 writes to `acct` (or `acct_as` with src_as/dst_as)
  whatever the version.  We follow the docs; nfacctd gets an explicit
  sql_table so that both write the same table.
"""
from __future__ import annotations

import random
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from engine.pcap import UdpPacket, write_pcap
from engine.plugins.pgsql.columns import default_table
from engine.schema import IPV4_MAPPED_PREFIX

from conftest import NFACCTD, run_nfacctd_pcap, run_pmengine_pcap
from netflow_encoder import Exporter, Field, Template, data_set, template_set
from pg_server import pg_server, pmacct_table_sql  # noqa: F401  (session fixture)

UNIX_SECS = 1_700_000_000          # 2023-11-14 22:13:20 UTC
UPTIME_MS = 3_600_000
V4_TEMPLATE = Template(256, [Field(8, 4), Field(12, 4), Field(7, 2), Field(11, 2), Field(4, 1), Field(5, 1),
                             Field(6, 1), Field(10, 4), Field(14, 4), Field(16, 4), Field(17, 4), Field(9, 1),
                             Field(13, 1), Field(1, 8), Field(2, 8), Field(22, 4), Field(21, 4), Field(56, 6),
                             Field(80, 6), Field(58, 2), Field(18, 4)])
V6_TEMPLATE = Template(257, [Field(27, 16), Field(28, 16), Field(7, 2), Field(11, 2), Field(4, 1), Field(5, 1),
                             Field(6, 1), Field(10, 4), Field(14, 4), Field(16, 4), Field(17, 4), Field(29, 1),
                             Field(30, 1), Field(1, 8), Field(2, 8), Field(22, 4), Field(21, 4)])
EXPORTERS = ("127.0.1.1", "127.0.1.2")


def make_flows(n: int = 400, seed: int = 7) -> list[dict]:
    """Random flows with repeated keys, starting 1-9 minutes before the export (two 5-minute bins)."""
    rng = random.Random(seed)
    flows = []
    for i in range(n):
        v6 = i % 5 == 0
        age_ms = rng.randrange(61_000, 530_000) // 1000 * 1000 + 500     # never on a bin boundary
        f = dict(exporter=EXPORTERS[i % 2], v6=v6,
                 src=(f"2001:db8::{rng.randrange(1, 4):x}" if v6 else f"10.0.{rng.randrange(2)}.{rng.randrange(1, 5)}"),
                 dst=("2001:db8:1::1" if v6 else f"192.0.2.{rng.randrange(1, 3)}"),
                 sport=rng.choice((53, 1024, 40000)), dport=rng.choice((80, 443)), proto=rng.choice((6, 17)),
                 tos=rng.choice((0, 4)), flags=rng.choice((2, 16, 24)), iin=rng.randrange(1, 3), iout=rng.randrange(3, 5),
                 sas=rng.choice((0, 64500)), das=rng.choice((65000, 65001)), smask=24, dmask=rng.choice((24, 16)),
                 bytes=rng.randrange(40, 100_000), packets=rng.randrange(1, 100),
                 first=UPTIME_MS - age_ms, last=UPTIME_MS - age_ms + 20_000,
                 smac="00:11:22:33:44:55", dmac=rng.choice(("aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:01")),
                 vlan=rng.choice((0, 10)), nexthop="198.51.100.1")
        flows.append(f)
    return flows


def write_flows_pcap(path: Path, flows: list[dict]) -> None:
    exporters = {e: Exporter(version=9, domain_id=1, unix_secs=UNIX_SECS, sys_uptime_ms=UPTIME_MS) for e in EXPORTERS}
    packets = []
    for e, exp in exporters.items():
        packets.append((e, exp.packet([template_set(9, [V4_TEMPLATE, V6_TEMPLATE])])))
        mine = [f for f in flows if f["exporter"] == e]
        for i in range(0, len(mine), 20):
            chunk = mine[i:i + 20]
            v4 = [[f["src"], f["dst"], f["sport"], f["dport"], f["proto"], f["tos"], f["flags"], f["iin"], f["iout"],
                   f["sas"], f["das"], f["smask"], f["dmask"], f["bytes"], f["packets"], f["first"], f["last"],
                   f["smac"], f["dmac"], f["vlan"], f["nexthop"]] for f in chunk if not f["v6"]]
            v6 = [[f["src"], f["dst"], f["sport"], f["dport"], f["proto"], f["tos"], f["flags"], f["iin"], f["iout"],
                   f["sas"], f["das"], 64, 48, f["bytes"], f["packets"], f["first"], f["last"]]
                  for f in chunk if f["v6"]]
            sets = ([data_set(V4_TEMPLATE, v4)] if v4 else []) + ([data_set(V6_TEMPLATE, v6)] if v6 else [])
            packets.append((e, exp.packet(sets)))
    dst = IPV4_MAPPED_PREFIX + bytes([127, 0, 0, 1])
    write_pcap(str(path), [UdpPacket(UNIX_SECS * 1_000_000 + i, IPV4_MAPPED_PREFIX + bytes(map(int, e.split("."))),
                                     40000, dst, 2100, p) for i, (e, p) in enumerate(packets)])


FLOWS = make_flows()

CUSTOM_SCHEMA = """CREATE TABLE acct_%Y%m%d_%H%M_$peer_src_ip (
    peer_ip_src inet NOT NULL, iface_in BIGINT NOT NULL, iface_out BIGINT NOT NULL, net_src inet NOT NULL,
    mask_src SMALLINT NOT NULL, ip_dst inet NOT NULL, peer_ip_dst inet NOT NULL, etype CHAR(5) NOT NULL,
    export_proto_version SMALLINT NOT NULL, timestamp_start timestamp without time zone NOT NULL,
    timestamp_start_residual INT NOT NULL, tcp_flags SMALLINT NOT NULL DEFAULT 0,
    packets BIGINT NOT NULL, bytes BIGINT NOT NULL, flows BIGINT NOT NULL,
    stamp_inserted timestamp without time zone NOT NULL, stamp_updated timestamp without time zone
);
"""

# name -> (pgsql keys, tables made beforehand (pmacct's default table versions), nfacctd's extra keys)
CASES = {
    "v9_upsert": ({"aggregate": "src_host, dst_host, src_port, dst_port, proto, tos, src_as, dst_as, src_mac, "
                                "dst_mac, vlan, tcpflags, flows",
                   "sql_table_version": "9", "sql_history": "5m", "sql_history_roundoff": "m"},
                  (9,), {"sql_table": "acct_v9"}),
    "v4_insert_only": ({"aggregate": "src_host, dst_host, proto, tos, flows", "sql_table_version": "4",
                        "sql_history": "5m", "sql_history_roundoff": "h", "sql_dont_try_update": "true"},
                       (4,), {"sql_table": "acct_v4"}),
    "v1_no_history": ({"aggregate": "src_host, dst_host, src_port, dst_port, proto", "sql_table_version": "1"},
                      (1,), {"sql_table": "acct"}),
    "custom_dynamic": ({"aggregate": "peer_src_ip, in_iface, out_iface, src_net, src_mask, dst_host, peer_dst_ip, "
                                     "etype, export_proto_version, timestamp_start, tcpflags, flows",
                        "sql_optimize_clauses": "true", "sql_history": "5m", "sql_history_roundoff": "m",
                        "sql_table": "acct_%Y%m%d_%H%M_$peer_src_ip",
                        "sql_table_schema": "SCHEMA"},
                       (), {}),
}


def plugin_conf(pcap: Path, port: int, db: str, keys: dict, extra: dict, schema: Path) -> str:
    lines = [f"pcap_savefile: {pcap}", "plugins: pgsql[p]", "sql_host: 127.0.0.1", f"sql_port: {port}",
             "sql_user: postgres", "sql_passwd: unused", f"sql_db: {db}", "sql_refresh_time: 3600"]
    for k, v in {**keys, **extra}.items():
        lines.append(f"{k}: {schema if v == 'SCHEMA' else v}")
    return "\n".join(lines) + "\n"


def table_rows(pg, db: str, history: bool) -> dict[str, list[tuple]]:
    """Every table's rows as sorted text tuples; stamp_updated left out (the purge time), and stamp_inserted
    without history (then neither collector writes it: it is the column's default, the time of the INSERT)."""
    out = {}
    skip = ("stamp_updated",) if history else ("stamp_updated", "stamp_inserted")
    for table in pg.tables(db):
        cols = [r[0] for r in pg.query(db, "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                                           "ORDER BY ordinal_position", (table,)) if r[0] not in skip]
        rows = pg.query(db, f'SELECT {", ".join(c + "::text" for c in cols)} FROM "{table}"')
        out[table] = sorted(rows)
    return out


@pytest.fixture(scope="module")
def runs(pg_server, tmp_path_factory):
    """Each case run once by nfacctd and once by pmengine; {case: (nfacctd tables, pmengine tables)}."""
    work = tmp_path_factory.mktemp("pgsql")
    pcap = work / "flows.pcap"
    write_flows_pcap(pcap, FLOWS)
    schema = work / "custom.schema"
    schema.write_text(CUSTOM_SCHEMA)
    out = {}
    for case, (keys, versions, nf_extra) in CASES.items():
        dbs = {}
        for who in ("nf", "pm"):
            db = pg_server.create_db(f"{case}_{who}")
            for v in versions:
                pg_server.execute(db, pmacct_table_sql(v))
            dbs[who] = db
        pm_conf = plugin_conf(pcap, pg_server.port, dbs["pm"], keys, {}, schema)
        run_pmengine_pcap(pm_conf, work)
        if NFACCTD is not None:
            nf_conf = plugin_conf(pcap, pg_server.port, dbs["nf"], keys, nf_extra, schema)
            proc = run_nfacctd_pcap(nf_conf, work)
            assert "ERROR" not in proc.stderr, proc.stderr[-3000:]
        history = "sql_history" in keys
        out[case] = (table_rows(pg_server, dbs["nf"], history), table_rows(pg_server, dbs["pm"], history))
    return out


def flow_start(f: dict) -> int:
    """The flow start in whole seconds (flows start at .5 s: floor)."""
    return (UNIX_SECS * 1000 - (UPTIME_MS - f["first"])) // 1000


def expected_v9(flows: list[dict]) -> list[tuple]:
    """acct_v9 rows computed from the generated flows (stamp_inserted: 5-minute bin of the flow start, UTC)."""
    acc = defaultdict(lambda: [0, 0, 0, 0])
    for f in flows:
        start = flow_start(f)
        stamp = start // 300 * 300
        smac, dmac, vlan = (f["smac"], f["dmac"], f["vlan"]) if not f["v6"] else ("00:00:00:00:00:00",) * 2 + (0,)
        key = (smac, dmac, vlan, f["sas"], f["das"], f["src"], f["dst"], f["sport"], f["dport"], f["proto"], f["tos"],
               stamp)
        a = acc[key]
        a[0] += f["packets"]
        a[1] += f["bytes"]
        a[2] += 1
        a[3] |= f["flags"]
    return sorted(acc.items())


def test_v9_rows_match_independent_aggregation(runs, pg_server):
    _nf, pm = runs["v9_upsert"]
    table = default_table(9)
    assert list(pm) == [table]
    rows = pg_server.query("v9_upsert_pm", "SELECT mac_src::text, mac_dst::text, vlan, as_src, as_dst, host(ip_src), "
                           "host(ip_dst), port_src, port_dst, ip_proto, tos, "
                           "extract(epoch FROM stamp_inserted::timestamptz)::bigint, packets, bytes, flows, tcp_flags, "
                           "tag, class_id FROM acct_v9")
    got = sorted((r[:12], list(r[12:16])) for r in rows)
    assert got == [(k, v) for k, v in expected_v9(FLOWS)]
    assert {(r[16], r[17].strip()) for r in rows} == {(0, "unknown")}
    assert len({r[11] for r in rows}) == 3            # three time bins


@pytest.mark.parametrize("case", [c for c in CASES if c != "custom_dynamic"])
def test_rows_equal_nfacctd(runs, case):
    if NFACCTD is None:
        pytest.skip("nfacctd not installed")
    nf, pm = runs[case]
    assert sum(len(r) for r in pm.values()) > 0
    assert pm == nf


def test_dynamic_table_rows_equal_nfacctd(runs):
    """Named difference: same rows, but nfacctd 1.7.7 puts a whole purge into one table."""
    if NFACCTD is None:
        pytest.skip("nfacctd not installed")
    nf, pm = runs["custom_dynamic"]
    assert len(nf) == 1 and len(pm) == 6
    assert sorted(r for rows in pm.values() for r in rows) == sorted(r for rows in nf.values() for r in rows)


def test_dynamic_tables_per_bin_and_exporter(runs):
    _nf, pm = runs["custom_dynamic"]
    bins = {flow_start(f) // 300 * 300 for f in FLOWS}
    assert len(bins) == 3
    assert sorted(pm) == sorted(f"acct_{time.strftime('%Y%m%d_%H%M', time.localtime(b))}_{e.replace('.', '_')}"
                                for b in bins for e in EXPORTERS)


def test_insert_only_appends(pg_server, tmp_path):
    """sql_dont_try_update: a second identical run adds a second copy of every row (no update)."""
    pcap = tmp_path / "flows.pcap"
    write_flows_pcap(pcap, FLOWS[:40])
    db = pg_server.create_db("insert_twice")
    pg_server.execute(db, re.sub(r",\s*CONSTRAINT[^\n]*", "", pmacct_table_sql(4)))   # no primary key
    keys, _, _ = CASES["v4_insert_only"]
    conf = plugin_conf(pcap, pg_server.port, db, keys, {}, tmp_path / "none")
    run_pmengine_pcap(conf, tmp_path)
    once = pg_server.query(db, "SELECT count(*), sum(packets) FROM acct_v4")[0]
    run_pmengine_pcap(conf, tmp_path)
    twice = pg_server.query(db, "SELECT count(*), sum(packets) FROM acct_v4")[0]
    assert twice == (2 * once[0], 2 * once[1])
    assert once[1] == sum(f["packets"] for f in FLOWS[:40])


@pytest.mark.parametrize("case", ["custom_dynamic", "v9_upsert"])
def test_plugin_workers_write_the_same_rows(runs, pg_server, tmp_path, case):
    """plugin_workers: 3 workers, each its share of the keys, write exactly the one-process rows -- creating the
    dynamic tables from sql_table_schema at the same moments (no worker's rows lost to another's CREATE)."""
    keys, versions, _ = CASES[case]
    pcap = tmp_path / "flows.pcap"
    write_flows_pcap(pcap, FLOWS)
    schema = tmp_path / "custom.schema"
    schema.write_text(CUSTOM_SCHEMA)
    db = pg_server.create_db(f"{case}_workers")
    for v in versions:
        pg_server.execute(db, pmacct_table_sql(v))
    proc = run_pmengine_pcap(plugin_conf(pcap, pg_server.port, db, keys, {"plugin_workers": "3"}, schema), tmp_path)
    assert "refused" not in proc.stderr, proc.stderr[-3000:]
    _nf, one_process = runs[case]
    assert table_rows(pg_server, db, "sql_history" in keys) == one_process
