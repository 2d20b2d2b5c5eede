"""Shard pre-aggregation (engine/shards/preaggregate.py): folding a batch first never changes what a plugin writes."""
import numpy as np
import pytest

from engine.config.parser import build_config, read_settings
from engine.plugins.aggregate import Aggregator
from engine.plugins.memory.table import MemoryTable
from engine.schema import IPV4_MAPPED_PREFIX, RECORD_DTYPE
from engine.shards import fold_tables, preaggregate
from engine.shards.fold_tables import KeyDictionary
from engine.shards.preaggregate import JUDGE_FROM, PreAggregator, WordPlan, fold_spec


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
    assert folder.skip_rows == preaggregate.SKIP_BATCHES * 3000
    assert folder.fold(records(3000, 2, 6)).size == 3000    # skipped, even though this one would fold
    assert folder.fold(records(JUDGE_FROM - 1, 2, 7)).size == JUDGE_FROM - 1    # too small to bother
    for seed in range(preaggregate.SKIP_BATCHES - 1):       # skipped for SKIP_BATCHES times its records in all
        assert folder.fold(records(3000, 2, 100 + seed)).size == 3000
    assert folder.fold(records(3000, 2, 8)).size < 3000     # then tried again


def test_a_small_batch_that_did_not_fold_does_not_stop_a_big_one():
    """Low traffic gives small batches, whose keys are mostly distinct; the burst that follows must fold at once
    (written raw, 32 batches of it would flood the plugin's ring)."""
    cfg = config("plugins: print[p]\naggregate: peer_src_ip, in_iface, out_iface, src_as, dst_as\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    small = records(1200, 3, 9)
    small["in_iface"] = np.arange(1200)         # every record of this small batch its own key
    assert folder.fold(small) is small and folder.skip_rows > 0
    same_size = records(1200, 2, 10)
    assert folder.fold(same_size) is same_size            # a batch no bigger: still skipped
    big = records(30000, 3, 11)
    assert len(folder.fold(big)) <= 3 ** 5                # more than twice as big: folded right away (5 key
                                                          # columns of 3 values each)
    assert folder.skip_rows == 0


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


MATRIX = "peer_src_ip, in_iface, out_iface, src_as, dst_as"


def matrix_folder() -> PreAggregator:
    cfg = config(f"plugins: print[p]\naggregate: {MATRIX}\n")
    return PreAggregator(fold_spec(cfg, cfg.plugins[0]))


def sums_by_key(batch: np.ndarray, columns: tuple[str, ...]) -> dict:
    """{key bytes: (packets, bytes, flows, OR of tcp flags)} computed row by row (the reference)."""
    out: dict = {}
    keys = np.hstack([np.ascontiguousarray(batch[c]).view(np.uint8).reshape(len(batch), -1) for c in columns])
    for key, row in zip(keys, batch):
        p, b, f, t = out.get(key.tobytes(), (0, 0, 0, 0))
        out[key.tobytes()] = (p + int(row["packets"]), b + int(row["bytes"]), f + int(row["flows"]),
                              t | int(row["tcp_flags"]))
    return out


def colliding_matrix_keys(count: int) -> np.ndarray:
    """count matrix keys (record words 10, 11, 18, 20) that are different but have equal hashes in every
    round: A + t*d with d orthogonal (mod 2**64) to the three rounds' multipliers (the cofactors of their
    3x4 matrix)."""
    plan = WordPlan.create(matrix_folder().spec)
    assert plan.words[:plan.key_rows] == (10, 11, 18, 20)
    m = [[int(x) for x in fold_tables._MULTS[r, :4]] for r in range(fold_tables.ROUNDS)]

    def det3(a):
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))
    d = [(-1) ** j * det3([[row[c] for c in range(4) if c != j] for row in m]) % 2 ** 64 for j in range(4)]
    assert any(d) and all(sum(mr[j] * d[j] for j in range(4)) % 2 ** 64 == 0 for mr in m)
    base = [0, 0xFFFF_0A00_0001_0000 << 0, 65000 | 64512 << 32, 3 | 7 << 32]
    return np.array([[(base[j] + t * d[j]) % 2 ** 64 for j in range(4)] for t in range(count)], dtype=np.uint64)


def with_matrix_keys(keys: np.ndarray, rows_per_key: int, seed: int) -> np.ndarray:
    """A batch whose records carry the given matrix key words, interleaved, with random counters."""
    rng = np.random.default_rng(seed)
    n = len(keys) * rows_per_key
    batch = np.zeros(n, RECORD_DTYPE)
    words = batch.view(np.uint64).reshape(n, -1)
    for j, w in enumerate((10, 11, 18, 20)):
        words[:, w] = np.tile(keys[:, j], rows_per_key)
    batch["packets"] = rng.integers(1, 100, n)
    batch["bytes"] = rng.integers(40, 1 << 40, n)
    batch["flows"] = 1
    batch["tcp_flags"] = rng.integers(0, 64, n)
    return batch


def test_keys_with_equal_hashes_in_every_round_are_never_merged():
    colliding = colliding_matrix_keys(fold_tables.ROUNDS + 2)     # more than rounds: some stay unfolded
    h = [preaggregate._hash(np.ascontiguousarray(colliding.T), r) for r in range(fold_tables.ROUNDS)]
    assert all(len(set(x.tolist())) == 1 for x in h)
    others = np.random.default_rng(1).integers(0, 2 ** 63, (20, 4), dtype=np.uint64)
    columns = tuple(MATRIX.replace(" ", "").split(","))
    folder = matrix_folder()
    for seed, keys in enumerate([others[:10], np.concatenate([colliding, others]),     # dictionary: empty,
                                 np.concatenate([others[5:], colliding[:1]]),             # filling, then known
                                 np.concatenate([colliding[::-1], others])]):
        batch = with_matrix_keys(keys, 200, seed)
        folded = folder.fold(batch)
        assert len(folded) < len(batch) / 2
        expected = {k: v[:3] for k, v in sums_by_key(batch, columns).items()}
        assert {k: v[:3] for k, v in sums_by_key(folded, columns).items()} == expected
        assert len(expected) == len(keys)


@pytest.mark.parametrize("distinct", [3, 5])
def test_the_fold_is_exact_whatever_the_hash(monkeypatch, distinct):
    """Every key hashing alike: rows are still grouped only with equal keys (beyond ROUNDS keys, unfolded)."""
    monkeypatch.setattr(preaggregate, "_hash", lambda keys, rnd, scratch=None: np.zeros(keys.shape[1], np.uint64))
    cfg = config("plugins: memory[m]\naggregate: dst_port, tcpflags\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    columns = folder.spec.columns
    for seed in range(3):
        batch = records(3000, distinct, seed)
        folded = folder.fold(batch)
        assert len(folded) < len(batch) / 2 or distinct > fold_tables.ROUNDS
        assert sums_by_key(folded, columns) == sums_by_key(batch, columns)


def test_counters_are_summed_and_flags_ored_per_key():
    cfg = config("plugins: memory[m]\naggregate: dst_host, dst_port\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    assert folder.spec.or_flags
    for seed in range(4):
        batch = records(5000, 6, seed)
        batch["bytes"][::7] = np.uint64(2 ** 64 - 5)          # sums wrap like the uint64 counters they are
        folded = folder.fold(batch)
        assert sums_by_key(folded, folder.spec.columns) == {
            k: (p % 2 ** 64, b % 2 ** 64, f, t) for k, (p, b, f, t) in sums_by_key(batch, folder.spec.columns).items()}


def test_flags_are_ored_only_for_plugins_that_read_them():
    cfg = config("plugins: print[a], print[b], memory[c]\naggregate[a]: dst_port\naggregate[b]: dst_port, tcpflags\n"
                 "aggregate[c]: dst_port\n")
    assert [fold_spec(cfg, p).or_flags for p in cfg.plugins] == [False, True, True]


def test_bytes_of_a_shared_word_outside_the_key_do_not_split_groups():
    cfg = config("plugins: print[p]\naggregate: dst_port\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    batch = records(4000, 1 << 16, 3)               # src ports, domain ids (same word) all over the place
    batch["dst_port"] = np.arange(4000) % 5
    batch["domain_id"] = np.arange(4000)
    folded = folder.fold(batch)
    assert sorted(folded["dst_port"].tolist()) == [0, 1, 2, 3, 4]
    expected = {k: v[:3] for k, v in sums_by_key(batch, ("dst_port",)).items()}     # print: flags not read
    assert {k: v[:3] for k, v in sums_by_key(folded, ("dst_port",)).items()} == expected


def test_a_full_dictionary_starts_over_and_stays_exact():
    cfg = config("plugins: print[p]\naggregate: dst_port\nprint_history: 1m\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    folder.known = KeyDictionary(folder.plan.key_rows, capacity=500, slot_bits=12)
    batches = []
    for seed in range(6):       # 2 ports x 3 minutes of seconds, a minute later each batch: new keys come
        b = records(3000, 2, seed)
        for name in ("ts_start", "ts_arrival"):
            b[name] += np.where(b[name] != 0, seed * 60_000_000, 0)
        batches.append(b)
    sizes, folded = [], []
    for b in batches:
        folded.append(folder.fold(b))
        sizes.append(folder.known.size)
    assert max(sizes) <= 500 and 0 in sizes and max(sizes) > 300       # filled up, started over
    assert sum(map(len, folded)) < sum(map(len, batches)) / 2
    for a, b in zip(purged(cfg.plugins[0], cfg.core, batches), purged(cfg.plugins[0], cfg.core, folded)):
        assert (a == b) if isinstance(a, bytes) else np.array_equal(a, b)


def test_the_output_is_deterministic():
    cfg = config("plugins: print[p]\naggregate: src_host, dst_host, dst_port\n")
    runs = []
    for _ in range(2):
        folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
        runs.append(b"".join(folder.fold(records(3000, 5, seed)).tobytes() for seed in range(3)))
    assert runs[0] == runs[1]


def test_dictionary_second_slot_and_word_by_word_check():
    d = KeyDictionary(2, capacity=8, slot_bits=4)
    keys = np.array([[1, 2, 3], [10, 20, 30]], dtype=np.uint64)          # three keys, one per column
    h = np.array([0x1000000000000000] * 2 + [0x2000000000000000], dtype=np.uint64)   # keys 0, 1: same hash
    records = np.arange(3 * RECORD_DTYPE.itemsize // 8, dtype=np.uint64).reshape(3, -1)
    ids = d.insert(keys, records, h)
    assert sorted(ids.tolist()) == [0, 1, 2] and d.size == 3
    assert d.slots[ids[0]] != d.slots[ids[1]]                            # one of them in its second slot
    found, unknown = d.lookup(keys, h, d.first_slots(h))
    assert unknown is None and found.tolist() == ids.tolist()
    assert np.array_equal(d.records[ids], records)
    other = np.array([[1, 9], [11, 30]], dtype=np.uint64)                # same hashes, other words: unknown
    _, unknown = d.lookup(other, h[[0, 2]], d.first_slots(h[[0, 2]]))
    assert unknown.tolist() == [0, 1]
    d.clear()
    assert d.size == 0 and (d.table < 0).all()


def test_traffic_the_dictionary_does_not_know_pauses_it():
    cfg = config("plugins: print[p]\naggregate: dst_port\n")
    folder = PreAggregator(fold_spec(cfg, cfg.plugins[0]))
    for seed in range(4):                       # other ports every batch
        batch = records(3000, 8, seed)
        batch["dst_port"] += seed * 100
        folded = folder.fold(batch)
        assert len(folded) == 8
        expected = {k: v[:3] for k, v in sums_by_key(batch, ("dst_port",)).items()}
        assert {k: v[:3] for k, v in sums_by_key(folded, ("dst_port",)).items()} == expected
        if seed == 0:
            assert folder.known.size == 8 and not folder.paused
    assert folder.known.size == 0 and folder.paused == preaggregate.DICTIONARY_PAUSE - 2
