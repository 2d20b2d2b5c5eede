"""MemoryTable: exact aggregation across merges, the row bound (new keys dropped and counted), resets;
the imt_* keys."""
from __future__ import annotations

from collections import Counter

import numpy as np

from engine.config import loads_config
from engine.plugins.memory.plugin import table_for
from engine.plugins.memory.table import MemoryTable, entry_bytes
from engine.schema import empty


def batch(ports: list[int], nbytes: list[int]) -> np.ndarray:
    rec = empty(len(ports))
    rec["src_port"] = ports
    rec["bytes"] = nbytes
    rec["packets"] = 1
    rec["flows"] = 1
    return rec


def as_dict(table: MemoryTable) -> dict[int, int]:
    table.merge()
    return dict(zip(table.keys["src_port"].tolist(), table.counts[1].tolist()))


def test_sums_are_exact_across_many_merges():
    rng = np.random.default_rng(7)
    table = MemoryTable(("src_port",))
    want: Counter = Counter()
    for _ in range(40):
        ports = rng.integers(0, 5000, 3000).tolist()
        nbytes = rng.integers(1, 10**9, 3000).tolist()
        table.add(batch(ports, nbytes))
        for p, b in zip(ports, nbytes):
            want[p] += b
        if _ % 7 == 0:
            table.merge()
    assert as_dict(table) == dict(want)


def test_full_table_drops_new_keys_and_keeps_counting_old_ones():
    table = MemoryTable(("src_port",), max_rows=3)
    table.add(batch([1, 2, 3], [10, 20, 30]))
    table.merge()
    table.add(batch([4, 1, 5, 2], [400, 1, 500, 2]))
    table.merge()
    assert as_dict(table) == {1: 11, 2: 22, 3: 30}
    assert (table.dropped_keys, table.dropped_bytes, table.dropped_flows) == (2, 900, 2)


def test_bound_fills_up_then_drops():
    table = MemoryTable(("src_port",), max_rows=4)
    table.add(batch([1, 2], [1, 1]))
    table.merge()
    table.add(batch([3, 4, 5, 6], [1, 1, 1, 1]))
    table.merge()
    assert len(table) == 4 and {1, 2} <= set(as_dict(table)) and table.dropped_keys == 2


def test_remove_and_snapshot_is_unaffected():
    table = MemoryTable(("src_port",))
    table.add(batch([1, 2, 3], [10, 20, 30]))
    snap = table.snapshot()
    table.remove(table.keys["src_port"] == 2)
    table.add(batch([1], [5]))
    assert as_dict(table) == {1: 15, 3: 30}
    assert dict(zip(snap.keys["src_port"].tolist(), snap.counts[1].tolist())) == {1: 10, 2: 20, 3: 30}


def test_imt_keys_bound_the_table():
    config = loads_config("plugins: memory[m]\naggregate: src_port\nimt_path: /tmp/x.pipe\n"
                          "imt_mem_pools_number: 4\nimt_mem_pools_size: 1024\nimt_buckets: 65537\n")
    plugin = config.plugins[0]
    assert (plugin.options.path, plugin.options.buckets) == ("/tmp/x.pipe", 65537)
    table = table_for(plugin)
    assert table.max_rows == 4 * 1024 // entry_bytes(table.spec)
    unbounded = loads_config("plugins: memory\nimt_mem_pools_number: 0\n").plugins[0]
    assert table_for(unbounded).max_rows is None
    assert unbounded.options.path == "/tmp/collect.pipe"
