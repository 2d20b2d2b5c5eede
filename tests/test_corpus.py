"""Every NetFlow v5 / v9 / IPFIX capture of ../shared/captures decodes to the figures of its MANIFEST.md.

The manifest figures come from tshark (one pass).  Per file we check: flow records,
Σ octets, Σ packets, template records (incl. options templates) and options records.
Where we legitimately differ, EXPECTED_DIFFERENCES gives the exact figures we must
get instead, with the reason and where the figures come from (never from this decoder).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.decoders import DecoderState, ExporterCounters, decode_batch
from engine.decoders.batch import PacketBatch
from engine.pcap import iter_udp

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"
MANIFEST = CAPTURES / "MANIFEST.md"
SECTIONS = ("## NetFlow v5", "## NetFlow v9", "## IPFIX")
PACKETS_PER_BATCH = 4


@dataclass(frozen=True)
class Figures:
    records: int
    octets: int
    packets: int
    templates: int = -1          # -1: not checked
    options: int = -1
    decode_errors: int = 0


def parse_manifest() -> tuple[dict[str, Figures], dict[tuple[str, ...], Figures]]:
    """(per-file figures, per-group figures) of the NetFlow/IPFIX capture tables."""
    files: dict[str, Figures] = {}
    groups: dict[tuple[str, ...], Figures] = {}
    if not MANIFEST.is_file():
        return files, groups
    section = ""
    group_re = re.compile(r"\*\*as a group \(([^)]*)\)\*\*: records (\d+) flow / (\d+) options, "
                          r"v4/v6/none [0-9/]+, octets (\d+), packets (\d+)")
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("## "):
            section = line
        if not (line.startswith("| ") and section.startswith(SECTIONS)):
            continue
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 12 or not cells[0].endswith(".pcap"):
            continue
        tpl, opt_tpl = (int(x) for x in cells[6].split("/"))
        flows, options = (int(x) for x in cells[7].split("/"))
        octets, packets = (int(x) for x in cells[9].split("/"))
        files[cells[0]] = Figures(flows, octets, packets, tpl + opt_tpl, options)
        m = group_re.search(cells[11])
        if m:
            folder = cells[0].rsplit("/", 1)[0]
            members = tuple(f"{folder}/{name.strip()}" for name in m.group(1).split("+"))
            groups[members] = Figures(int(m.group(2)), int(m.group(4)), int(m.group(5)), options=int(m.group(3)))
    return files, groups


FILES, GROUPS = parse_manifest()

SECOND_PASS = ("data sets that arrive before their template are kept and decoded when it arrives; "
               "figures: tshark on the file appended to itself (mergecap -a F F) minus one pass")
COUNTER_FALLBACK = ("no IE 1/2 in the templates: bytes/packets from IE 85/86 as nfacctd does, forward "
                    "direction only (tshark pdml, the non-reverse permanent octets/packets of flow records)")

EXPECTED_DIFFERENCES: dict[str, tuple[Figures, str]] = {
    "netflow_v5/logstash-codec-netflow/invalid01.wrapped.pcap": (
        Figures(0, 0, 0, decode_errors=1),
        "corrupted on purpose: header count 55582 cannot fit the 1464-byte datagram, dropped as malformed "
        "(nfacctd 1.7.7 drops it too); tshark ignores the count"),
    "netflow_v5/logstash-codec-netflow/invalid02.wrapped.pcap": (
        Figures(0, 0, 0, decode_errors=1), "corrupted on purpose: header count 163 in a 1464-byte datagram"),
    "netflow_v9/akvorado/data+templates.pcap": (Figures(21, 58329, 66), SECOND_PASS),
    "netflow_v9/graylog/nprobe-netflow9-4.pcap": (Figures(15, 33915, 74), SECOND_PASS),
    "netflow_v9/python-netflow/softflowd_v9_template_mixed.wrapped.pcap": (Figures(8, 164207, 208), SECOND_PASS),
    "ipfix/akvorado/ipfix_v10_with_mpls_labels.pcap": (Figures(141, 36490, 410), SECOND_PASS),
    "ipfix/python-netflow/softflowd_ipfix_data_template_data.wrapped.pcap": (Figures(25, 11282, 78), SECOND_PASS),
    "ipfix/pmacct/112-IPFIXv10-CISCO-options-map-reassignment.pcap": (
        Figures(9, 1197, 19),
        "templates are keyed by exporter address, not port: the sets after the source-port change decode "
        "(tshark keys by port); nfacctd 1.7.7 prints the same 9 flows, 1197 octets, 19 packets"),
    "netflow_v9/logstash-codec-netflow/h3c.wrapped.pcap": (
        Figures(16, 8729687, 6113),
        "tshark stops after the first record on H3C's 2-byte IE 43; all 16 records decode "
        "(nfacctd 1.7.7: 16 flows, 8729687 octets, 6113 packets)"),
    "netflow_v9/logstash-codec-netflow/cisco_asa_1.wrapped.pcap": (
        Figures(14, 888, 0),
        "NSEL records without IE 1: bytes from IE 85 as nfacctd (the manifest's 'permanent_octets=888')"),
    "ipfix/logstash-codec-netflow/yaf_applabel.wrapped.pcap": (Figures(2, 304, 6), COUNTER_FALLBACK),
    "ipfix/telegraf/ipfix_example.wrapped.pcap": (Figures(29, 111492, 457), COUNTER_FALLBACK),
}
# well-formed otherwise, but with a defect the decoder counts
EXPECTED_DECODE_ERRORS = {
    "ipfix/telegraf/issue_14370.wrapped.pcap": 1,     # its last set runs 2 bytes past the message length
}
GROUP_DIFFERENCES: dict[tuple[str, ...], tuple[Figures, str]] = {
    ("ipfix/akvorado/ipfixprobe-templates.pcap", "ipfix/akvorado/ipfixprobe-data.pcap"): (
        Figures(4, 24268, 34, options=0),
        "the manifest sums include the RFC 5103 reverse counters (PEN 29305), which are not this flow's "
        "bytes; forward octets/packets from tshark pdml (fields without 'Reverse')"),
}


def decode_files(names: tuple[str, ...]) -> tuple[int, int, int, ExporterCounters]:
    state = DecoderState()
    records = octets = packets = 0
    total = ExporterCounters()
    for name in names:
        udp = [(p.payload, p.src, p.ts_us) for p in iter_udp(str(CAPTURES / name))]
        for i in range(0, len(udp), PACKETS_PER_BATCH):
            res = decode_batch(PacketBatch.from_packets(udp[i:i + PACKETS_PER_BATCH]), state)
            records += len(res.records)
            octets += int(res.records["bytes"].sum())
            packets += int(res.records["packets"].sum())
            for c in res.counters.values():
                total.add(c)
    return records, octets, packets, total


def require_captures() -> None:
    if not FILES:
        pytest.skip(f"captures not found: {MANIFEST} is missing (../shared/captures beside the checkout)")


@pytest.mark.parametrize("name", sorted(FILES) or ["(no captures)"])
def test_capture_matches_manifest(name):
    require_captures()
    want = FILES[name]
    if name in EXPECTED_DIFFERENCES:
        adjusted, _why = EXPECTED_DIFFERENCES[name]
        want = Figures(adjusted.records, adjusted.octets, adjusted.packets, want.templates, want.options,
                       adjusted.decode_errors)
    records, octets, packets, counters = decode_files((name,))
    assert (records, octets, packets) == (want.records, want.octets, want.packets)
    assert counters.templates == want.templates
    assert counters.options_records == want.options
    assert counters.flows == records
    assert counters.decode_errors == EXPECTED_DECODE_ERRORS.get(name, want.decode_errors)


@pytest.mark.parametrize("names", sorted(GROUPS) or [("(no captures)",)], ids=lambda n: "+".join(
    x.rsplit("/", 1)[-1] for x in n))
def test_split_template_and_data_files_as_a_group(names):
    require_captures()
    want = GROUP_DIFFERENCES.get(names, (GROUPS[names], ""))[0]
    records, octets, packets, counters = decode_files(names)
    assert (records, octets, packets) == (want.records, want.octets, want.packets)
    assert counters.options_records == want.options
    assert counters.decode_errors == 0


def test_manifest_tables_were_found():
    require_captures()
    versions = {name.split("/", 1)[0] for name in FILES}
    assert versions == {"netflow_v5", "netflow_v9", "ipfix"}
    assert len(GROUPS) >= 10
    assert set(EXPECTED_DIFFERENCES) <= set(FILES)
    assert set(GROUP_DIFFERENCES) <= set(GROUPS)
