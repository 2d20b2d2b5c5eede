"""tag / tag2 / label from a pre_tag_map into PostgreSQL: pmengine's pgsql plugin beside nfacctd 1.7.7's, same
server, same generated v9 traffic (tests/test_pgsql_e2e.py), a custom table (sql_optimize_clauses) holding
pmacct's columns agent_id, tag2 and label: identical rows, and totals per tag as computed from the flows."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from conftest import NFACCTD, run_nfacctd_pcap, run_pmengine_pcap
from pg_server import pg_server  # noqa: F401  (session fixture)
from test_pgsql_e2e import FLOWS, write_flows_pcap

PRETAG_MAP = """\
set_tag=7 ip=127.0.1.1 in=1
set_tag2=8 ip=127.0.1.1 in=2
set_label=red ip=127.0.1.2 in=1
set_tag=3000000000 ip=127.0.1.2 in=2
"""
TABLE = """CREATE TABLE t_tags (agent_id BIGINT NOT NULL DEFAULT 0, tag2 BIGINT NOT NULL DEFAULT 0,
    label VARCHAR(255) NOT NULL DEFAULT '', ip_src inet NOT NULL DEFAULT '0.0.0.0',
    packets BIGINT NOT NULL, bytes BIGINT NOT NULL, stamp_inserted timestamp without time zone,
    stamp_updated timestamp without time zone)"""
COLUMNS = "agent_id, tag2, label, host(ip_src), packets, bytes"


def tags_of(flow: dict) -> tuple[int, int, str]:
    """What the map gives a flow, independently of the code under test: first match wins."""
    exporter, iface = flow["exporter"], flow["iin"]
    if exporter == "127.0.1.1":
        return (7, 0, "") if iface == 1 else (0, 8, "")
    return (0, 0, "red") if iface == 1 else (3000000000, 0, "")


@pytest.fixture(scope="module")
def tables(pg_server, tmp_path_factory):  # noqa: F811
    if NFACCTD is None:
        pytest.skip("nfacctd (Debian package pmacct) is not installed")
    work = tmp_path_factory.mktemp("pgsql_tags")
    pcap, pretag = work / "flows.pcap", work / "pretag.map"
    write_flows_pcap(pcap, FLOWS)
    pretag.write_text(PRETAG_MAP)
    rows = {}
    for who, run in (("nfacctd", run_nfacctd_pcap), ("pmengine", run_pmengine_pcap)):
        db = pg_server.create_db(f"tags_{who}")
        pg_server.execute(db, TABLE)
        folder = work / who
        folder.mkdir()
        run(f"pcap_savefile: {pcap}\npre_tag_map: {pretag}\nplugins: pgsql[p]\n"
            "aggregate[p]: tag, tag2, label, src_host\nsql_optimize_clauses: true\nsql_table: t_tags\n"
            f"sql_host: 127.0.0.1\nsql_port: {pg_server.port}\nsql_user: postgres\nsql_passwd: unused\n"
            f"sql_db: {db}\nsql_refresh_time: 3600\n", folder)
        rows[who] = sorted(tuple(map(str, r)) for r in pg_server.query(db, f"SELECT {COLUMNS} FROM t_tags"))
    return rows


def test_tag_columns_equal_nfacctd(tables):
    assert tables["pmengine"] == tables["nfacctd"]


def test_tag_totals_match_the_flows(tables):
    expected = defaultdict(lambda: [0, 0])
    for f in FLOWS:
        counters = expected[tags_of(f)]
        counters[0] += f["packets"]
        counters[1] += f["bytes"]
    got = defaultdict(lambda: [0, 0])
    for agent_id, tag2, label, _src, packets, nbytes in tables["pmengine"]:
        counters = got[(int(agent_id), int(tag2), label)]
        counters[0] += int(packets)
        counters[1] += int(nbytes)
    assert dict(got) == dict(expected) and len(expected) == 4
