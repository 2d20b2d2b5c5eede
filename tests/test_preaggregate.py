"""Shard pre-aggregation (engine/shards/preaggregate.py): folding a batch first never changes what a plugin writes."""
import numpy as np
import pytest

from engine.config.parser import build_config, read_settings
from engine.plugins.aggregate import Aggregator
from engine.plugins.memory.table import MemoryTable
from engine.schema import IPV4_MAPPED_PREFIX, RECORD_DTYPE
from engine.shards.preaggregate import JUDGE_FROM, PreAggregator, fold_spec


def config(text: str):
    return build_config(read_settings(text))


def records(n: int, distinct: int, seed: int) -> np.ndarray:
    """n records drawn from `distinct` values per column: many equal keys, differing elsewhere."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    pick = lambda: rng.integers(0, distinct, n)     # noqa: E731
    for col in ("src_host", "dst_host", "peer_src_ip"):
        r[col][:, :12] = np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)
        r[col][:, 12] = 10
        r[col][:, 15] = pick()
    r["family"] = 4
    r["etype"] = 0x800
    for col in ("src_port", "dst_port", "in_iface", "out_iface", "src_as", "dst_as", "proto", "src_mask",
                "dst_mask", "tos"):
        r[col] = pick() + (20 if col.endswith("mask") else 0)
    r["bytes"] = rng.integers(40, 1500, n)
    r["packets"] = rng.integers(1, 10, n)
    r["flows"] = 1
    r["tcp_flags"] = rng.integers(0, 64, n)
    r["ts_arrival"] = 1_700_000_000_000_000 + rng.integers(0, 180_000_000, n)     # 3 minutes of arrivals
    r["ts_start"] = np.where(rng.random(n) < 0.2, 0, r["ts_arrival"] - rng.integers(0, 3_000_000, n))
    r["ts_end"] = r["ts_arrival"] - 7                                               # read by no plugin below
    return r


def purged(plugin, core, batches):
    agg = Aggregator(plugin, core, start_s=1_700_000_000)
    for b in batches:
        agg.add(b, now_s=1_700_000_200)
    rows = agg.purge(now_us=1_700_000_210_000_000)
    order = np.lexsort(np.ascontiguousarray(rows.keys).view(np.uint8).reshape(len(rows), -1).T)
    return rows.keys[order].tobytes(), rows.packets[order], rows.bytes[order], rows.flows[order], \
        None if rows.tcp_flags is None else rows.tcp_flags[order], \
        None if rows.stamp_inserted is None else rows.stamp_inserted[order]


AGGREGATES = [
    ("peer_src_ip, in_iface, out_iface, src_as, dst_as", ""),
    ("src_host, dst_host, src_port, dst_port, proto, tcpflags", ""),
    ("src_net, dst_net, src_mask, dst_mask", ""),
    ("dst_host, dst_port", "print_history: 1m\n"),
    ("dst_host, dst_port", "print_history: 1m\nnfacctd_time_new: true\n"),
    ("proto, timestamp_start", ""),
]


@pytest.mark.parametrize("aggregate,extra", AGGREGATES)
def test_folded_batches_purge_exactly_as_the_raw_ones(aggregate, extra):
    cfg = config(f"plugins: print[p]\naggregate: {aggregate}\n{extra}")
    spec = fold_spec(cfg, cfg.plugins[0])
    assert spec is not None
    folder = PreAggregator(spec)
    batches = [records(4000, 3, seed) for seed in range(3)]
    folded = [folder.fold(b) for b in batches]
    if "timestamp_start" not in aggregate:
        assert sum(map(len, folded)) < sum(map(len, batches)) / 2      # it did fold
    for a, b in zip(purged(cfg.plugins[0], cfg.core, batches), purged(cfg.plugins[0], cfg.core, folded)):
        if a is None:
            assert b is None
        elif isinstance(a, bytes):
            assert a == b
        else:
            assert np.array_equal(a, b)
    assert sum(int(b["bytes"].sum()) for b in folded) == sum(int(b["bytes"].sum()) for b in batches)


def test_memory_table_sees_the_same_after_folding():
    cfg = config("plugins: memory[m]\naggregate: src_host, dst_port, tcpflags\n")
    spec = fold_spec(cfg, cfg.plugins[0])
    folder = PreAggregator(spec)
    batch = records(5000, 5, 11)
    tables = []
    for b in (batch, folder.fold(batch)):
        t = MemoryTable(cfg.plugins[0].aggregate)
        t.add(b)
        t.merge()
        tables.append(t)
    raw, fold = tables
    assert len(fold.keys) == len(raw.keys) and raw.keys.tobytes() == fold.keys.tobytes()
    assert np.array_equal(raw.counts, fold.counts)


def test_high_cardinality_batches_are_left_alone_for_a_while():
    cfg = config("plugins: print[p]\naggregate: src_host, dst_host, src_port, dst_port, proto\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    batch = records(3000, 1 << 30, 5)       # every record its own key
    assert folder.fold(batch) is batch
    assert folder.skip > 0
    assert folder.fold(records(3000, 2, 6)).size == 3000    # skipped, even though this one would fold
    assert folder.fold(records(JUDGE_FROM - 1, 2, 7)).size == JUDGE_FROM - 1    # too small to bother


@pytest.mark.parametrize("extra", [
    "pre_tag_map: /nonexistent/map\n",
    "aggregate_filter[p]: src port 53\n",
    "networks_file: /nonexistent/networks\n",
])
def test_no_folding_where_a_consumer_reads_more_than_its_key(extra, tmp_path):
    text = f"plugins: print[p]\naggregate: dst_port\n{extra}".replace("/nonexistent", str(tmp_path))
    (tmp_path / "map").write_text("set_tag=1 ip=0.0.0.0/0\n")
    (tmp_path / "networks").write_text("10.0.0.0/8\n")
    cfg = config(text)
    assert fold_spec(cfg, cfg.plugins[0]) is None
