"""Aggregation (exact grouping, hash-collision fallback, nets, merging) and history bins (vs nfacctd 1.7.7)."""
from __future__ import annotations

import calendar
import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.config.tree import CoreConfig, PluginConfig
from engine.plugins import aggregate as aggmod
from engine.plugins.aggregate import Aggregator, net_addresses
from engine.plugins.timebins import TimeBins
from engine.schema import IPV4_MAPPED_PREFIX, empty

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import NFACCTD  # noqa: E402


HISTORY_SECS = {"1m": 60, "5m": 300, "7m": 420, "1h": 3600, "2h": 7200, "1d": 86400, "1w": 604800, "1M": 2592000}


def utc(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def fmt(seconds) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(seconds)))


@pytest.fixture
def utc_zone(monkeypatch):
    """Roundoff and months use local time: pin it to UTC, where the nfacctd observations were made."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def random_records(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = empty(n)
    v6 = rng.random(n) < 0.3
    r["family"] = np.where(v6, 6, 4)
    for col in ("src_host", "dst_host"):
        r[col] = rng.integers(0, 4, (n, 16), dtype=np.uint8) * 64
        r[col][~v6, :12] = np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)
    r["peer_src_ip"][:, :12] = np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)
    r["peer_src_ip"][:, 15] = rng.integers(1, 4, n)
    r["src_mask"] = rng.integers(0, 129, n)
    r["dst_mask"] = rng.integers(0, 33, n)
    r["src_port"] = rng.integers(0, 6, n)
    r["dst_port"] = rng.integers(0, 3, n) + 1000
    r["proto"] = rng.choice([6, 17, 1], n)
    r["tcp_flags"] = rng.integers(0, 64, n)
    r["in_iface"] = rng.integers(0, 5, n)
    r["src_as"] = rng.integers(0, 3, n) * 70000
    r["packets"] = rng.integers(1, 10, n)
    r["bytes"] = rng.integers(40, 1 << 40, n, dtype=np.uint64)
    r["flows"] = 1
    r["ts_start"] = (utc("2017-07-25 12:00:00") + rng.integers(0, 3600, n)) * 1_000_000 + rng.integers(0, 10**6, n)
    r["ts_arrival"] = r["ts_start"] + 5_000_000
    return r


def ref_net(addr: bytes, mask: int, family: int) -> bytes:
    """The network of a host, computed with ipaddress (independent of the code under test)."""
    if family == 4:
        net = ipaddress.ip_network(f"{ipaddress.IPv4Address(addr[12:])}/{min(mask, 32)}", strict=False)
        return IPV4_MAPPED_PREFIX + net.network_address.packed
    if family == 6:
        return ipaddress.ip_network(f"{ipaddress.IPv6Address(addr)}/{min(mask, 128)}", strict=False).network_address.packed
    return bytes(16)


def reference(records: np.ndarray, aggregate: tuple[str, ...]) -> dict:
    """Plain-Python aggregation: key tuple -> [packets, bytes, flows, tcp flags OR]."""
    out: dict = {}
    for r in records:
        key = []
        for p in aggregate:
            if p in ("src_net", "dst_net"):
                host, mask = ("src_host", "src_mask") if p == "src_net" else ("dst_host", "dst_mask")
                key.append(ref_net(bytes(r[host]), int(r[mask]), int(r["family"])))
            elif p in ("src_host", "dst_host", "peer_src_ip"):
                key.append(bytes(r[p]))
            elif p != "tcpflags":
                key.append(int(r[{"proto": "proto"}.get(p, p)]))
        acc = out.setdefault(tuple(key), [0, 0, 0, 0])
        acc[0] += int(r["packets"])
        acc[1] += int(r["bytes"])
        acc[2] += int(r["flows"])
        acc[3] |= int(r["tcp_flags"])
    return out


def ours(rows, aggregate) -> dict:
    out = {}
    for i in range(len(rows)):
        key = tuple(bytes(rows.column(p)[i]) if rows.column(p).ndim > 1 else int(rows.column(p)[i])
                    for p in aggregate if p != "tcpflags")
        flags = int(rows.tcp_flags[i]) if rows.tcp_flags is not None else 0
        out[key] = [int(rows.packets[i]), int(rows.bytes[i]), int(rows.flows[i]), flags]
    return out


AGGREGATES = [
    ("src_host",),
    ("src_port",),
    ("src_host", "dst_host", "src_port", "dst_port", "proto"),
    ("peer_src_ip", "in_iface", "src_as", "src_port"),
    ("src_net", "dst_net"),
    ("dst_net", "proto", "tcpflags"),
    (),
]


@pytest.mark.parametrize("aggregate", AGGREGATES, ids=lambda a: "-".join(a) or "none")
@pytest.mark.parametrize("batch", [7, 1000, 5000])
def test_groups_equal_plain_python(aggregate, batch, monkeypatch):
    monkeypatch.setattr(aggmod, "COMPACT_MIN_ROWS", 64)            # force many merges
    monkeypatch.setattr(aggmod, "COMPACT_SLACK_ROWS", 0)
    records = random_records(5000)
    cfg = PluginConfig(name="t", type="print", aggregate=aggregate)
    agg = Aggregator(cfg, CoreConfig())
    for i in range(0, len(records), batch):
        agg.add(records[i:i + batch])
    rows = agg.purge()
    expected = reference(records, aggregate)
    got = ours(rows, aggregate)
    if "tcpflags" not in aggregate:
        expected = {k: v[:3] + [0] for k, v in expected.items()}
    assert got == expected
    assert len(rows) == len(expected)
    assert agg.purge().keys.size == 0                                  # purge empties the table


def test_hash_collisions_fall_back_to_exact_grouping(monkeypatch):
    monkeypatch.setattr(aggmod, "_hash_words", lambda words: words[:, 0] & np.uint64(3))
    records = random_records(3000)
    aggregate = ("src_host", "dst_host", "src_port")
    agg = Aggregator(PluginConfig(name="t", type="print", aggregate=aggregate), CoreConfig())
    agg.add(records[:1500])
    agg.add(records[1500:])
    rows = agg.purge()
    assert agg.collisions > 0
    expected = {k: v[:3] + [0] for k, v in reference(records, aggregate).items()}
    assert ours(rows, aggregate) == expected


@pytest.mark.parametrize("weak_hash", [False, True], ids=["hash", "weak-hash"])
def test_hash_table_spills_to_sorted_partials_and_back(monkeypatch, weak_hash):
    """Past HASH_TABLE_MAX_ROWS groups the table continues as sorted partials; an interval that ended
    big starts sorted, one that ended small starts hashed again; groups stay exact throughout."""
    monkeypatch.setattr(aggmod, "HASH_TABLE_MAX_ROWS", 300)
    monkeypatch.setattr(aggmod, "COMPACT_MIN_ROWS", 500)
    monkeypatch.setattr(aggmod, "COMPACT_SLACK_ROWS", 0)
    if weak_hash:                                   # many collisions inside the hash table too
        monkeypatch.setattr(aggmod, "_hash_words", lambda words: words[:, 0] & np.uint64(15))
    aggregate = ("src_host", "dst_host", "src_port", "tcpflags")
    records = random_records(4000, seed=11)
    agg = Aggregator(PluginConfig(name="t", type="print", aggregate=aggregate), CoreConfig())
    for interval in (records, records[:3000], records[:40], records):
        assert (agg._table is not None) == (agg._last_rows <= 300)
        for i in range(0, len(interval), 250):
            agg.add(interval[i:i + 250])
        rows = agg.purge()
        assert ours(rows, aggregate) == reference(interval, aggregate)
        assert len(rows) == len(reference(interval, aggregate))
    assert agg.collisions > 0 or not weak_hash


def test_a_due_fold_waits_for_its_moment_then_for_no_one(monkeypatch):
    """Past the groups, the spill buffer's fold is due (compaction_due) but add() leaves it to
    compact_if_due() -- the plugin loop's call once its rings are nearly empty -- until COMPACT_SLACK_ROWS more
    rows have come; either way the groups are exact."""
    monkeypatch.setattr(aggmod, "HASH_TABLE_MAX_ROWS", 100)
    monkeypatch.setattr(aggmod, "COMPACT_MIN_ROWS", 400)
    monkeypatch.setattr(aggmod, "COMPACT_SLACK_ROWS", 600)
    aggregate = ("src_host", "dst_host", "src_port")
    records = random_records(4000, seed=5)
    agg = Aggregator(PluginConfig(name="t", type="print", aggregate=aggregate), CoreConfig())
    seen_due = folded_by_add = 0
    for i in range(0, 2500, 50):
        before = agg._buffer.pending if agg._buffer is not None else 0
        agg.add(records[i:i + 50])
        buf = agg._buffer
        if buf is None:
            continue
        assert buf.pending < max(400, buf.folded) + 600 + 50      # never past the slack (and one batch)
        if agg.compaction_due:
            seen_due += 1
            assert buf.pending >= max(400, buf.folded)
        if buf.pending < before:
            folded_by_add += 1                          # the slack ran out: add() folded at once
    assert seen_due and folded_by_add
    i = 2500
    while not agg.compaction_due:                       # due again: now the loop's call folds it
        agg.add(records[i:i + 50])
        i += 50
    assert agg.compact_if_due() is True
    assert agg._buffer.pending == 0 and not agg.compaction_due
    assert agg.compact_if_due() is False                # nothing due: nothing done
    rows = agg.purge()
    assert ours(rows, aggregate) == {k: v[:3] + [0] for k, v in reference(records[:i], aggregate).items()}


def _fold_reference(words: np.ndarray, counts: np.ndarray) -> tuple[list, dict]:
    """Plain Python: keys in the order they first appear, and key -> [sums of rows 0-2, OR of row 3]."""
    sums: dict = {}
    for i, key in enumerate(map(bytes, words)):
        acc = sums.setdefault(key, [0] * counts.shape[0])
        for j in range(counts.shape[0]):
            acc[j] = acc[j] + int(counts[j, i]) if j < 3 else acc[j] | int(counts[j, i])
    return list(sums), sums


HASHES = {
    "real": lambda words: aggmod._hash_words(words),
    "low-bits": lambda words: words[:, 0] & np.uint64(0xFFFF),         # high bits all zero: one sorted run
    "few-values": lambda words: (words[:, 0] % np.uint64(5)) << np.uint64(61),     # distinct keys share hashes
    "constant": lambda words: np.zeros(len(words), np.uint64),
}


@pytest.mark.parametrize("hash_name", list(HASHES))
@pytest.mark.parametrize("n,distinct,width", [(1, 1, 1), (2, 1, 3), (3000, 40, 1), (3000, 2500, 3), (20000, 9000, 7)])
def test_fold_groups_exactly_whatever_the_hash(hash_name, n, distinct, width):
    rng = np.random.default_rng(n + width)
    pool = rng.integers(0, 2**63, (distinct, width), dtype=np.int64).view(np.uint64)
    pool[:, 0] &= np.uint64(0xFF)                   # small first words: weak hashes collide often
    words = pool[rng.integers(0, distinct, n)]
    counts = rng.integers(0, 2**40, (4, n), dtype=np.int64).view(np.uint64)
    counts[2] = 1
    h = HASHES[hash_name](words)
    out_words, out_counts, out_h, collided = aggmod.fold(words, counts, h)
    order, sums = _fold_reference(words, counts)
    assert [bytes(w) for w in out_words] == order                 # one row per key, first-arrival order
    assert {bytes(w): c.tolist() for w, c in zip(out_words, out_counts.T)} == sums
    assert out_h.tolist() == HASHES[hash_name](out_words).tolist()
    if hash_name in ("few-values", "constant") and len(sums) > 1:
        assert collided
    order, starts, _ = aggmod.group(words.view(f"V{8 * width}").ravel().view(
        np.dtype([("k", "u8", (width,))])))
    assert sorted(order.tolist()) == list(range(n))               # a permutation ...
    groups = np.split(order, starts[1:])
    assert len(groups) == len(sums)
    for rows in groups:                                           # ... of whole groups, rows in arrival order
        assert len({bytes(words[r]) for r in rows}) == 1 and rows.tolist() == sorted(rows.tolist())


def test_key_table_ids_follow_first_arrival_with_duplicates_in_a_batch():
    from engine.plugins.keytable import KeyTable
    rng = np.random.default_rng(5)
    dtype = np.dtype([("k", "u8", (2,))])
    pool = rng.integers(0, 2**63, (3000, 2), dtype=np.int64).view(np.uint64)
    table, dense = KeyTable(dtype, 3, 0), {}
    for batch in range(6):                          # grows past its first capacity, rebuilding its slots
        words = pool[rng.integers(0, 300 + 500 * batch, 2000)]
        keys = np.ascontiguousarray(words).view(dtype).ravel()
        ids, collided = table.index(keys, aggmod._hash_words(words))
        assert collided is None
        expected = [dense.setdefault(bytes(w), len(dense)) for w in words]
        assert ids.tolist() == expected
    assert len(table) == len(dense)
    keys, _ = table.rows()
    assert [bytes(k) for k in keys] == list(dense)


def test_high_cardinality_spills_before_the_table_grows(monkeypatch):
    """Batches of mostly new keys that would outgrow a new table's room go to sorted partials at once."""
    monkeypatch.setattr(aggmod, "HASH_TABLE_MIN_ROWS", 2048)
    records = random_records(6000, seed=5)
    records["src_port"] = np.arange(6000) % 5000                  # ~5000 keys, most batches all new
    aggregate = ("src_host", "src_port", "tcpflags")
    agg = Aggregator(PluginConfig(name="t", type="print", aggregate=aggregate), CoreConfig())
    for i in range(0, len(records), 1000):
        agg.add(records[i:i + 1000])
        assert (agg._table is None) == (i >= 2000)                # room for two batches, not three
    rows = agg.purge()
    assert ours(rows, aggregate) == reference(records, aggregate)


def test_counters_are_exact_uint64():
    r = empty(3)
    r["bytes"] = [2**63, 2**62, 12345]
    r["packets"] = 2**53 + 1
    agg = Aggregator(PluginConfig(name="t", type="print", aggregate=("src_port",)), CoreConfig())
    agg.add(r)
    rows = agg.purge()
    assert int(rows.bytes[0]) == 2**63 + 2**62 + 12345
    assert int(rows.packets[0]) == 3 * (2**53 + 1)


def test_net_addresses_as_nfacctd_prints_them():
    # (host, mask) -> network, as nfacctd printed them (netgraph-netflow5.pcap, 100-IPFIXv10-CISCO.pcap)
    cases = [("202.12.27.33", 22, "202.12.24.0"), ("91.64.55.126", 32, "91.64.55.126"),
             ("162.159.25.27", 22, "162.159.24.0"), ("192.168.1.100", 0, "0.0.0.0"),
             ("2001:1700:f101:2000::1", 41, "2001:1700:f100::"), ("2001:1700:f000:5600::1", 41, "2001:1700:f000::"),
             ("2001:db8::12", 0, "::")]
    addrs, masks, fams = [], [], []
    for host, mask, _ in cases:
        v6 = ":" in host
        raw = socket.inet_pton(socket.AF_INET6, host) if v6 else IPV4_MAPPED_PREFIX + socket.inet_aton(host)
        addrs.append(np.frombuffer(raw, np.uint8))
        masks.append(mask)
        fams.append(6 if v6 else 4)
    nets = net_addresses(np.stack(addrs), np.array(masks, np.uint8), np.array(fams, np.uint8))
    text = [socket.inet_ntop(socket.AF_INET6, bytes(n)) if f == 6 else socket.inet_ntoa(bytes(n[12:]))
            for n, f in zip(nets, fams)]
    assert text == [c[2] for c in cases]


def test_timestamps_secs_merges_within_a_second_and_time_new_bins_by_arrival():
    r = empty(2)
    r["ts_start"] = [1_500_000_000_100_000, 1_500_000_000_900_000]
    r["ts_arrival"] = [1_600_000_000_000_000, 1_600_000_400_000_000]
    r["packets"] = 1
    cfg = PluginConfig(name="t", type="print", aggregate=("timestamp_start",), timestamps_secs=True)
    agg = Aggregator(cfg, CoreConfig())
    agg.add(r)
    rows = agg.purge()
    assert rows.column("timestamp_start").tolist() == [1_500_000_000_000_000]
    cfg = PluginConfig(name="t", type="print", aggregate=("src_port",), history="5m", history_secs=300,
                       history_roundoff="m")
    agg = Aggregator(cfg, CoreConfig(time_new=True), start_s=1_600_000_500)
    agg.add(r, now_s=1_600_000_500)
    assert sorted(agg.purge().stamp_inserted.tolist()) == [1_599_999_900, 1_600_000_200]


# -- history bins: what nfacctd 1.7.7 printed (observed with a controlled start time) ------------------------
def test_bins_before_and_after_the_base(utc_zone):
    # nfacctd started 2017-07-25 12:00:23, print_history 5m, no roundoff
    observed = {"11:54:59": "11:50:00", "11:55:00": "11:50:00", "11:55:01": "11:55:00", "11:59:59": "11:55:00",
                "12:00:00": "12:00:00", "12:00:01": "12:00:00", "12:00:24": "12:00:00", "12:04:59": "12:00:00",
                "12:05:00": "12:05:00", "12:05:23": "12:05:00", "12:10:00": "12:10:00", "13:00:00": "13:00:00"}
    bins = TimeBins.create("5m", 300, "", utc("2017-07-25 12:00:23"))
    got = bins.assign(np.array([utc(f"2017-07-25 {t}") for t in observed]))
    assert [fmt(s)[11:] for s in got] == list(observed.values())
    # started 2020-01-01 10:07:23: 2017 flows are all before the base (grid at :02/:07)
    observed = {"12:00:00": "11:57:00", "12:02:00": "11:57:00", "12:02:01": "12:02:00", "12:07:00": "12:02:00",
                "12:07:01": "12:07:00", "12:16:40": "12:12:00", "13:00:00": "12:57:00"}
    bins = TimeBins.create("5m", 300, "", utc("2020-01-01 10:07:23"))
    got = bins.assign(np.array([utc(f"2017-07-25 {t}") for t in observed]))
    assert [fmt(s)[11:] for s in got] == list(observed.values())


@pytest.mark.parametrize("start,history,roundoff,observed", [
    ("2017-07-25 12:07:23", "1h", "", {"2017-07-25 12:00:00": "2017-07-25 11:07:00",
                                       "2017-07-25 12:59:59": "2017-07-25 12:07:00",
                                       "2017-06-15 12:00:00": "2017-06-15 11:07:00"}),
    ("2017-07-25 12:07:23", "1d", "", {"2017-07-25 12:07:00": "2017-07-25 12:07:00",
                                       "2017-07-25 12:00:01": "2017-07-24 12:07:00",
                                       "2017-09-08 12:00:00": "2017-09-07 12:07:00"}),
    ("2017-07-25 12:07:23", "1w", "", {"2017-07-17 12:00:00": "2017-07-11 12:07:00",
                                       "2017-08-03 12:00:00": "2017-08-01 12:07:00"}),
    ("2017-07-25 12:07:23", "5m", "m", {"2017-07-25 12:00:00": "2017-07-25 11:55:00",
                                        "2017-07-25 12:00:01": "2017-07-25 12:00:00",
                                        "2017-07-25 12:07:00": "2017-07-25 12:05:00",
                                        "2017-07-25 17:00:17": "2017-07-25 17:00:00"}),
    ("2017-07-25 12:07:23", "1h", "h", {"2017-07-25 11:00:00": "2017-07-25 10:00:00",
                                        "2017-07-25 12:00:00": "2017-07-25 12:00:00"}),
    ("2017-07-25 12:07:23", "1d", "d", {"2017-07-25 07:00:00": "2017-07-25 00:00:00",
                                        "2017-06-15 12:00:00": "2017-06-15 00:00:00"}),
    ("2017-07-25 12:07:23", "1w", "w", {"2017-06-15 12:00:00": "2017-06-12 00:00:00",
                                        "2017-07-26 12:00:00": "2017-07-24 00:00:00",
                                        "2017-08-03 12:00:00": "2017-07-31 00:00:00"}),
    ("2017-07-25 12:07:23", "7m", "m", {"2017-07-25 12:00:00": "2017-07-25 11:53:00",
                                        "2017-07-25 12:00:01": "2017-07-25 12:00:00",
                                        "2017-07-25 12:59:59": "2017-07-25 12:56:00",
                                        "2017-06-15 12:00:00": "2017-06-15 11:57:00"}),
    ("2017-07-25 12:07:23", "2h", "h", {"2017-07-25 11:59:59": "2017-07-25 10:00:00",
                                        "2017-07-25 12:00:00": "2017-07-25 12:00:00"}),
    ("2026-11-22 00:46:40", "1M", "", {"2026-11-22 00:46:39": "2026-11-01 00:00:00",
                                       "2027-01-01 00:48:00": "2027-01-01 00:00:00"}),
])
def test_bins_observed(utc_zone, start, history, roundoff, observed):
    bins = TimeBins.create(history, HISTORY_SECS[history], roundoff, utc(start))
    got = bins.assign(np.array([utc(t) for t in observed]))
    assert [fmt(s) for s in got] == list(observed.values())


@pytest.mark.parametrize("start,roundoff,phases", [
    # 7m bins between 11:40 and 12:20, as nfacctd placed them (minute of the bin starts)
    ("2017-07-25 12:07:23", "h", ["11:40", "11:47", "11:54", "12:01", "12:08", "12:15"]),
    ("2017-07-25 12:05:23", "h", ["11:40", "11:47", "11:54", "12:01", "12:08", "12:15"]),
    ("2017-07-25 12:07:23", "d", ["11:39", "11:46", "11:53", "12:00", "12:07", "12:14"]),
    ("2017-07-25 12:07:23", "w", ["11:35", "11:42", "11:49", "11:56", "12:03", "12:10", "12:17"]),
    ("2017-07-25 12:07:23", "M", ["11:37", "11:44", "11:51", "11:58", "12:05", "12:12", "12:19"]),
    ("2017-07-25 12:05:23", "m", ["11:39", "11:46", "11:53", "12:00", "12:07", "12:14"]),
    ("2017-07-25 12:05:23", "", ["11:37", "11:44", "11:51", "11:58", "12:05", "12:12", "12:19"]),
])
def test_roundoff_grid_observed(utc_zone, start, roundoff, phases):
    bins = TimeBins.create("7m", 420, roundoff, utc(start))
    flows = np.array([utc("2017-07-25 11:40:30") + 60 * k for k in range(40)])
    assert sorted({fmt(s)[11:16] for s in bins.assign(flows)}) == phases


def test_base_follows_the_clock(utc_zone):
    # nfacctd (1m history) started 00:49:50; flows sent at 00:50:05
    bins = TimeBins.create("1m", 60, "", utc("2026-11-22 00:49:50"))
    bins.advance(utc("2026-11-22 00:50:05"))
    observed = {"00:48:00": "00:47:00", "00:49:00": "00:48:00", "00:50:00": "00:50:00", "00:49:01": "00:49:00"}
    got = bins.assign(np.array([utc(f"2026-11-22 {t}") for t in observed]))
    assert [fmt(s)[11:] for s in got] == list(observed.values())


# -- history bins against a live nfacctd on crafted NetFlow v5 ------------------------------------------------
def _v5_pcap(path: Path, times: list[int]) -> None:
    from netflow_encoder import V5Record, v5_packet
    from engine.pcap import UdpPacket, write_pcap
    a = IPV4_MAPPED_PREFIX + socket.inet_aton("192.0.2.1")
    b = IPV4_MAPPED_PREFIX + socket.inet_aton("192.0.2.254")
    pkts = []
    for k, t in enumerate(times):       # one flow per packet: the export time is the flow start + 10 s
        rec = V5Record(f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}", "10.255.0.1", packets=1, octets=100,
                       first=3_600_000 - 10_000, last=3_600_000 - 10_000, proto=17)
        pkts.append(UdpPacket((t + 10) * 1_000_000, a, 50000, b, 2055,
                              v5_packet([rec], sys_uptime_ms=3_600_000, unix_secs=t + 10)))
    write_pcap(str(path), pkts)


BIN_CONFIGS = [("5m", "h"), ("5m", ""), ("1h", "m"), ("1d", "d")]


def _nfacctd_stamps(tmp_path: Path, times: list[int]) -> tuple[list[dict], float, float]:
    """One nfacctd run, one print plugin per BIN_CONFIGS entry: [{flow time: stamp_inserted}], start, end."""
    pcap = tmp_path / "bins.pcap"
    _v5_pcap(pcap, times)
    lines = ["daemonize: false", f"pcap_savefile: {pcap}",
             "plugins: " + ", ".join(f"print[b{i}]" for i in range(len(BIN_CONFIGS))),
             "aggregate: src_host", "print_output: json", "timestamps_since_epoch: true"]
    for i, (history, roundoff) in enumerate(BIN_CONFIGS):
        lines += [f"print_output_file[b{i}]: {tmp_path}/b{i}.json", f"print_history[b{i}]: {history}"]
        if roundoff:
            lines.append(f"print_history_roundoff[b{i}]: {roundoff}")
    conf = tmp_path / "nfacctd.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = tmp_path / "nfacctd.log"
    started = time.time()
    subprocess.run([NFACCTD, "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=open(log, "w"), timeout=120,
                   check=True)
    deadline = time.monotonic() + 30
    while log.read_text().count("Purging cache - END") < len(BIN_CONFIGS) and time.monotonic() < deadline:
        time.sleep(0.1)                 # the writers are forked children that may outlive the core
    result = []
    for i in range(len(BIN_CONFIGS)):
        stamps = {}
        for line in (tmp_path / f"b{i}.json").read_text().splitlines():
            a, b, c, d = (int(x) for x in json.loads(line)["ip_src"].split("."))
            stamps[times[(b << 16) | (c << 8) | d]] = int(json.loads(line)["stamp_inserted"])
        result.append(stamps)
    return result, started, time.time()


@pytest.mark.skipif(NFACCTD is None, reason="nfacctd (Debian package pmacct) is not installed")
def test_bins_match_nfacctd_on_crafted_flows(tmp_path):
    now = int(time.time())
    anchor = now - now % 86400 - 3 * 86400                  # midnight three days ago
    offsets = [-86401, -3601, -3600, -301, -300, -299, -240, -180, -120, -61, -60, -1, 0, 1, 59, 60, 120, 180,
               240, 299, 300, 301, 3599, 3600, 86400]
    times = [anchor + o for o in offsets] + [now + 7200 + o for o in (0, 1, 299, 300)]   # and some in the future
    for attempt in range(4):
        run_dir = tmp_path / f"run{attempt}"
        run_dir.mkdir()
        observed, started, finished = _nfacctd_stamps(run_dir, times)
        # nfacctd's base minute must be known, and on a loaded machine its plugins may miss records
        if int(started) // 60 == int(finished) // 60 and all(len(st) == len(times) for st in observed):
            break
    else:
        pytest.skip("could not get a complete nfacctd run within one wall-clock minute")
    for (history, roundoff), stamps in zip(BIN_CONFIGS, observed):
        bins = TimeBins.create(history, HISTORY_SECS[history], roundoff, started)
        ours = dict(zip(times, bins.assign(np.array(times)).tolist()))
        assert ours == stamps, (history, roundoff)


def test_high_cardinality_throughput():
    n = 1_000_000
    rng = np.random.default_rng(3)
    r = empty(n)
    r["family"] = 4
    r["src_host"][:, 12:] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    r["dst_host"][:, 12:] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    r["src_port"] = rng.integers(0, 65536, n)
    r["dst_port"] = rng.integers(0, 65536, n)
    r["packets"] = 1
    agg = Aggregator(PluginConfig(name="t", type="print",
                                  aggregate=("src_host", "dst_host", "src_port", "dst_port", "proto")), CoreConfig())
    t = time.perf_counter()
    for i in range(0, n, 65536):
        agg.add(r[i:i + 65536])
    rows = agg.purge()
    elapsed = time.perf_counter() - t
    assert int(rows.packets.sum()) == n
    assert elapsed < 20, f"1M records took {elapsed:.1f}s"   # ~0.5 s on a 2-core VM; catches quadratic merges
