"""nfacctd_renormalize end to end against nfacctd 1.7.7: NetFlow v9 sampling rates from options data
(sampler id table and exporter-wide interval) renormalise packets and bytes before the plugins; identical rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_nfacctd_pcap, run_pmengine_pcap
from netflow_encoder import Field, Template, data_set, options_template_set, template_set, v9_packet
from engine.decoders.batch import exporter_bytes
from engine.pcap import UdpPacket, write_pcap

FLOW = Template(256, [Field(8, 4), Field(12, 4), Field(1, 4), Field(2, 4), Field(4, 1), Field(48, 1)])
SAMPLERS = Template(300, [Field(1, 4), Field(48, 1), Field(49, 1), Field(50, 4)], scope_count=1)
SYSTEM_RATE = Template(301, [Field(1, 4), Field(34, 4), Field(35, 1)], scope_count=1)


def flows(first: int, sampler: int) -> list[list]:
    return [[f"10.0.{sampler}.{first + i}", "192.0.2.7", 100 + 13 * i, 1 + i, 6, sampler] for i in range(10)]


def capture(path: Path) -> None:
    a = v9_packet([options_template_set(9, [SAMPLERS]), data_set(SAMPLERS, [[0, 5, 2, 1000], [0, 6, 2, 64]], pad_to=4),
                   template_set(9, [FLOW]), data_set(FLOW, flows(1, 5) + flows(20, 6) + flows(40, 7), pad_to=4)],
                  unix_secs=1_700_000_000, source_id=1)
    b = v9_packet([options_template_set(9, [SYSTEM_RATE]), data_set(SYSTEM_RATE, [[0, 50, 2]], pad_to=4),
                   template_set(9, [FLOW]), data_set(FLOW, flows(60, 0), pad_to=4)],
                  unix_secs=1_700_000_000, source_id=1)
    dst = exporter_bytes("192.0.2.254")
    write_pcap(str(path), [UdpPacket(1_700_000_000_000_000, exporter_bytes("192.0.2.1"), 40000, dst, 2100, a),
                           UdpPacket(1_700_000_000_001_000, exporter_bytes("192.0.2.2"), 40000, dst, 2100, b)])


def rows(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        for k in ("stamp_inserted", "stamp_updated", "writer_id"):
            d.pop(k, None)
        out.append(json.dumps(d, sort_keys=True))
    return sorted(out)


@pytest.mark.parametrize("renormalize", [True, False], ids=["renormalized", "as_received"])
def test_nfacctd_renormalize_same_rows_as_nfacctd(tmp_path, renormalize):
    pcap = tmp_path / "v9.pcap"
    capture(pcap)
    results = {}
    for who, run in (("nfacctd", run_nfacctd_pcap), ("pmengine", run_pmengine_pcap)):
        folder = tmp_path / who
        folder.mkdir()
        conf = (f"pcap_savefile: {pcap}\nnfacctd_renormalize: {str(renormalize).lower()}\nplugins: print[p]\n"
                "aggregate[p]: peer_src_ip, src_host, dst_host, sampling_rate\nprint_output[p]: json\n"
                f"print_output_file[p]: {folder}/out.json\nprint_output_file_append[p]: true\n"
                "print_refresh_time[p]: 86400\n")
        run(conf, folder)
        results[who] = rows(folder / "out.json")
    assert len(results["nfacctd"]) == 40
    assert results["pmengine"] == results["nfacctd"]
    # independent check of the renormalised totals: Σ bytes × the rate each flow's sampler / exporter announced
    total = sum(json.loads(r)["bytes"] for r in results["pmengine"])
    raw = lambda sampler: sum(100 + 13 * i for i in range(10))  # noqa: E731
    rates = {5: 1000, 6: 64, 7: 1, 0: 50} if renormalize else {5: 1, 6: 1, 7: 1, 0: 1}
    assert total == sum(raw(s) * r for s, r in rates.items())
