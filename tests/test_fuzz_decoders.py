"""A short, fixed-seed run of the decoder fuzzer (tests/fuzz_decoders.py) over every oracle.

One session-scoped run per decoder kind (NetFlow: decode_batch, sFlow: decode_sflow_batch) feeds mutated
real captures and generated packets, mixed with good ones, and every test asserts one oracle on it.
The long run: `python tests/fuzz_decoders.py --cases 1000000`.  Reproducers of what it found, with causes
and proposed fixes: tests/test_fuzz_regressions.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import fuzz_decoders as fz
from engine.schema import RECORD_DTYPE

SEED = 20240601
BATCHES = {"netflow": 14, "sflow": 10}
MAX_PACKET_MS = 1000.0         # catches hangs, not load noise on a shared 2-core machine (long run: 50 ms)


@pytest.fixture(scope="session")
def corpora():
    if not fz.CAPTURES.is_dir():
        pytest.skip(f"captures not found at {fz.CAPTURES}")
    return fz.build_corpora()


@pytest.fixture(scope="session")
def runs(corpora) -> dict[str, fz.Report]:
    out = {}
    for kind, n in BATCHES.items():
        report = fz.Report()
        for index in range(n):
            fz.run_batch(corpora, SEED, index, kind, batch_size=192, bad_share=0.6, max_packet_ms=MAX_PACKET_MS,
                         report=report)
        out[kind] = report
    return out


def _failures(report: fz.Report, oracle: str) -> str:
    shown = [f"batch {f.batch}: {f.detail[:300]}" for f in report.examples if f.oracle == oracle]
    return f"{report.failures.get(oracle, 0)} failures, e.g.\n" + "\n".join(shown)


def test_seeds_cover_every_capture_and_both_decoders(corpora):
    captures = sum(1 for _ in fz.CAPTURES.rglob("*.pcap*"))
    from_captures = [c for c in corpora if not c.name.startswith("generated/")]
    assert len(from_captures) == captures                  # every capture holds UDP export packets
    assert {c.kind for c in corpora} == {"netflow", "sflow"}
    # the seeds decode: clean packets are the large majority (the rest are upstream's negative examples)
    clean = sum(len(c.clean) for c in corpora)
    assert clean >= 0.9 * sum(len(c.packets) for c in corpora)


@pytest.mark.parametrize("kind", sorted(BATCHES))
def test_run_fed_mutated_and_invalid_packets(runs, kind):
    r = runs[kind]
    assert r.batches == BATCHES[kind]
    assert r.cases >= 0.5 * r.packets
    assert r.invalid_checked > 50


@pytest.mark.parametrize("kind", sorted(BATCHES))
@pytest.mark.parametrize("oracle", ["exception", "time", "packets", "records", "counters", "invalid"])
def test_oracle_holds(runs, kind, oracle):
    """exception: nothing escapes; time: per-packet work bounded; packets: every packet counted once;
    records: bad packets do not change their neighbours' records; counters: a batch counts what its packets
    count one by one; invalid: a truncated / lying packet counts exactly one decode error."""
    assert runs[kind].failures.get(oracle, 0) == 0, _failures(runs[kind], oracle)


def test_memory_stays_bounded_under_random_template_ids():
    sizes = fz.memory_check(12_000, seed=3)
    assert sizes["pending_bytes"] <= 16 << 20
    assert sizes["templates"] <= 4096, sizes        # proposed cap, see test_fuzz_regressions
    assert sizes["sequences"] <= 4096, sizes


def test_record_comparison_sees_one_changed_field_but_not_order():
    """The records oracle's comparison itself (pure logic)."""
    recs = np.zeros(3, RECORD_DTYPE)
    recs["bytes"] = [1, 2, 3]
    assert fz._record_multiset([recs]) == fz._record_multiset([recs[::-1].copy()])
    assert fz._record_multiset([recs]) == fz._record_multiset([recs[:1], recs[1:]])
    other = recs.copy()
    other["src_port"][2] = 1
    assert fz._record_multiset([recs]) != fz._record_multiset([other])


def test_layouts_find_the_length_fields_of_generated_packets():
    """The structure walkers that aim the length / count mutations (pure logic over encoder output)."""
    import netflow_encoder as ne
    import sflow_encoder as se
    tpl = ne.Template(300, [ne.Field(8, 4), ne.Field(1, 4)])
    msg = ne.ipfix_message([ne.template_set(10, [tpl]), ne.data_set(tpl, [["10.0.0.1", 5]])])
    lay = fz.netflow_layout(msg)
    roles = [r for _, _, r in lay.fields]
    assert roles.count("set_length") == 2 and "msg_length" in roles and roles.count("field_length") == 2
    assert lay.walk_end == len(msg)
    d = se.datagram("192.0.2.1", 1, [se.flow_sample(1, 1, 1, 2, [se.switch_record(1, 2)])])
    lay = fz.sflow_layout(d)
    assert [r for _, _, r in lay.fields].count("record_length") == 1 and lay.walk_end == len(d)
