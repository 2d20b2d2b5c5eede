"""plugin_workers: one plugin aggregated by several processes, each owning a hash share of the keys.

Pure parts (the split, the hashed columns, the config checks) and a live run: 2 shards, 3 workers, real UDP;
the output holds every key once with its exact totals, every worker got a share, the stats balance.
"""
from __future__ import annotations

import json
import random
import socket
import subprocess
import time
from collections import Counter

import numpy as np
import pytest

from conftest import REPO, free_udp_port, pmengine_cmd
from engine.config.parser import ConfigError, loads_config
from engine.schema import RECORD_DTYPE
from engine.shards.partition import NETWORKS_WRITES, PartitionSpec, Partitioner, partition_columns
from netflow_encoder import V5Record, v5_packet

FIVE = ("src_host", "dst_host", "src_port", "dst_port", "proto")


def records(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, dtype=RECORD_DTYPE)
    r["family"] = 4
    r["src_host"][:, 10:12] = 0xFF
    r["src_host"][:, 12:] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    r["dst_host"][:, 12:] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    r["src_port"] = rng.integers(0, 65536, n)
    r["dst_port"] = rng.integers(0, 65536, n)
    r["proto"] = rng.choice([6, 17], n)
    r["bytes"] = rng.integers(1, 10**6, n)
    r["packets"] = rng.integers(1, 1000, n)
    r["ts_start"] = rng.integers(1, 10**15, n)
    return r


def test_one_key_one_worker_whatever_the_other_fields():
    split = Partitioner(PartitionSpec(FIVE + ("family",), 3))
    a = records(5000, seed=1)
    b = a.copy()
    noise = records(5000, seed=2)
    for name in ("bytes", "packets", "ts_start", "in_iface", "out_iface", "tcp_flags", "src_as", "tos"):
        b[name] = noise[name]                     # not key columns: must not move a record
    assert (split.worker_of(a) == split.worker_of(b)).all()
    b["dst_port"] ^= 1                            # a key column: moves about 2/3 of them
    moved = (split.worker_of(a) != split.worker_of(b)).mean()
    assert 0.55 < moved < 0.78


@pytest.mark.parametrize("workers", [2, 3, 4, 7])
def test_split_is_a_partition_and_balanced(workers):
    split = Partitioner(PartitionSpec(FIVE, workers))
    r = records(40000, seed=workers)
    parts = split.split(r)                        # row numbers per worker
    assert len(parts) == workers
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(r)))
    for k, rows in enumerate(parts):
        assert (split.worker_of(r[rows]) == k).all()
        assert abs(len(rows) - len(r) / workers) < 0.06 * len(r) / workers, [len(q) for q in parts]


@pytest.mark.parametrize("workers", [2, 3, 4, 16])
def test_split_is_balanced_on_low_entropy_keys(workers):
    """Consecutive IPv4 sources to one destination, few ports: the mixed hash still spreads them evenly (power
    of two workers take the top bits, others a multiply of the top 32)."""
    n = 40000
    r = np.zeros(n, RECORD_DTYPE)
    r["src_host"][:, :4] = (np.arange(n, dtype=np.uint32) + 0x0A000000).byteswap().view(np.uint8).reshape(n, 4)
    r["dst_host"][:, :4] = [10, 9, 8, 7]
    r["src_port"], r["dst_port"], r["proto"] = 443, np.arange(n) % 7, 6
    counts = np.bincount(Partitioner(PartitionSpec(FIVE, workers)).worker_of(r).astype(np.intp), minlength=workers)
    assert len(counts) == workers and (abs(counts - n / workers) < 0.06 * n / workers).all(), counts


def test_same_keys_same_workers_in_every_process():
    """The split depends on nothing but the key bytes: another Partitioner (another shard) agrees."""
    r = records(3000, seed=5)
    assert (Partitioner(PartitionSpec(FIVE, 4)).worker_of(r)
            == Partitioner(PartitionSpec(FIVE, 4)).worker_of(r[::-1])[::-1]).all()


def test_no_hashable_column_sends_everything_to_worker_0():
    split = Partitioner(PartitionSpec((), 3))
    parts = split.split(records(100))
    assert [p.tolist() for p in parts] == [list(range(100)), [], []]
    assert [len(p) for p in split.split(records(0))] == [0, 0, 0]


def test_hashed_columns_leave_out_what_the_plugin_computes_or_rewrites():
    cfg = loads_config("plugins: print[a], print[b]\nplugin_workers: 2\n"
                       "aggregate[a]: src_net, dst_net, src_port, proto, src_as\n"
                       "aggregate[b]: src_host, dst_host, src_as, in_iface\nnetworks_file[b]: /dev/null\n")
    a, b = cfg.plugins
    assert set(partition_columns(cfg, a)) == {"src_port", "proto", "src_as", "family"}
    cols_b = set(partition_columns(cfg, b))
    assert "in_iface" in cols_b and not cols_b & NETWORKS_WRITES


def test_config_checks():
    cfg = loads_config("plugins: print[a], kafka[k]\nplugin_workers[a]: 4\n")
    assert [(p.name, p.workers) for p in cfg.plugins] == [("a", 4), ("k", 1)]
    with pytest.raises(ConfigError, match="plugin_workers"):
        loads_config("plugins: memory[m]\nplugin_workers: 2\n")
    with pytest.raises(ConfigError, match="range 1-64"):
        loads_config("plugin_workers: 65\n")


def test_live_two_shards_three_workers(collector_factory, tmp_path):
    port, out, pidfile = free_udp_port(), tmp_path / "flows.json", tmp_path / "pm.pid"
    conf = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\npidfile: {pidfile}\nplugins: print[out]\n"
            f"aggregate: src_host, dst_host, src_port, dst_port, proto\nprint_output: json\n"
            f"print_output_file: {out}\nprint_refresh_time: 3600\nplugin_workers: 3\n")
    collector = collector_factory(conf, shards=2)
    collector.wait_listening(2)
    rng = random.Random(3)
    expected: Counter = Counter()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for i, s in enumerate(socks):
        s.bind((f"127.0.0.{20 + i}", 0))
    for n in range(400):
        recs = []
        for _ in range(30):
            src, dst = f"10.0.0.{rng.randrange(1, 40)}", f"10.9.0.{rng.randrange(1, 40)}"
            sport, dport, octets = rng.randrange(1, 30), 80, rng.randrange(40, 9000)
            recs.append(V5Record(src_addr=src, dst_addr=dst, packets=1, octets=octets, proto=6,
                                 src_port=sport, dst_port=dport))
            expected[(src, dst, sport, dport)] += octets
        socks[n % 4].sendto(v5_packet(recs, unix_secs=1_700_000_000, flow_sequence=30 * n),
                            ("127.0.0.1", port))
        if n % 50 == 49:
            time.sleep(0.01)
    for s in socks:
        s.close()
    time.sleep(1.5)
    proc = subprocess.run(pmengine_cmd("stats", "-F", str(pidfile), "--json"), cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    model = json.loads(proc.stdout)
    assert proc.returncode == 0 and model["balance"]["ok"], model["balance"]
    workers = {n: p for n, p in model["plugins"].items()}
    assert sorted(workers) == ["out.w0", "out.w1", "out.w2"]
    assert all(p["records"] > 0.2 * 12000 / 3 for p in workers.values()), {n: p["records"] for n, p in workers.items()}
    assert sum(p["records"] for p in workers.values()) == 12000        # v5 records were not folded: 1 per flow
    assert collector.stop() == 0
    got: Counter = Counter()
    keys = Counter()
    for line in out.read_text().splitlines():
        d = json.loads(line)
        key = (d["ip_src"], d["ip_dst"], d["port_src"], d["port_dst"])
        got[key] += d["bytes"]
        keys[key] += 1
    assert got == expected
    assert set(keys.values()) == {1}, "a key was aggregated by two workers"
