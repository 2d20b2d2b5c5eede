"""nfacctd_allow_file: only listed exporters' flows are aggregated (same rows as nfacctd), others counted."""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import NFACCTD, run_nfacctd_pcap, run_pmengine_pcap
from networks_traffic import generate
from engine.decoders.batch import PacketBatch
from engine.enrich.allow import DENIED, AllowStage
from engine.pcap import write_pcap

ALLOW = "! only the first exporter, and a prefix that holds no exporter\n192.0.2.10\n2001:db8::/32\n198.51.100.0/24\n"
EXPORTERS = ["192.0.2.10", "192.0.2.11"]


def rows(path):
    out = set()
    for line in path.read_text().splitlines():
        d = json.loads(line)
        d.pop("stamp_updated", None)
        out.add(json.dumps(d, sort_keys=True))
    return out


def test_only_listed_exporters_as_nfacctd(tmp_path):
    if NFACCTD is None:
        pytest.skip("nfacctd is not installed")
    packets, flows = generate(count=20, exporters=EXPORTERS)
    write_pcap(str(tmp_path / "t.pcap"), packets)
    (tmp_path / "allow.lst").write_text(ALLOW)

    def run(who):
        d = tmp_path / who
        d.mkdir()
        conf = (f"pcap_savefile: {tmp_path / 't.pcap'}\nnfacctd_allow_file: {tmp_path / 'allow.lst'}\n"
                f"plugins: print[p]\naggregate[p]: peer_src_ip, src_host, dst_host\nprint_output[p]: json\n"
                f"print_output_file[p]: {d / 'out.json'}\nprint_output_file_append: true\n")
        (run_nfacctd_pcap if who == "nfacctd" else run_pmengine_pcap)(conf, d)
        return rows(d / "out.json")

    with ThreadPoolExecutor(2) as pool:
        ref, ours = pool.map(run, ["nfacctd", "pmengine"])
    assert ref and ours == ref
    assert {json.loads(r)["peer_ip_src"] for r in ours} == {"192.0.2.10"}
    allowed_packets = sum(f[11] for e, _, f in flows if e == "192.0.2.10")      # independent total
    assert sum(json.loads(r)["packets"] for r in ours) == allowed_packets


def test_denied_packets_are_counted(tmp_path):
    packets, _ = generate(count=10, exporters=EXPORTERS)
    (tmp_path / "allow.lst").write_text(ALLOW)
    batch = PacketBatch.from_packets([(p.payload, p.src, p.ts_us) for p in packets])
    counters: dict = {}
    stage = AllowStage(str(tmp_path / "allow.lst"), logging.getLogger("test"), counters)
    kept = stage.admit(batch)
    expected_denied = sum(1 for p in packets if p.src[12:] == bytes([192, 0, 2, 11]))
    assert counters[DENIED] == expected_denied == 10
    assert len(kept) == len(packets) - expected_denied
    assert all(bytes(kept.packet(i)) == packets[2 * 0 + i].payload for i in range(len(kept)))
    # an empty allow file denies all (pmacct); reload keeps working on SIGUSR2
    (tmp_path / "allow.lst").write_text("! nothing\n")
    stage.reload()
    assert len(stage.admit(batch)) == 0
    assert counters[DENIED] == expected_denied + len(packets)


def test_no_allow_file_admits_all():
    packets, _ = generate(count=2, exporters=EXPORTERS)
    batch = PacketBatch.from_packets([(p.payload, p.src, p.ts_us) for p in packets])
    assert AllowStage(None, logging.getLogger("test"), {}).admit(batch) is batch
