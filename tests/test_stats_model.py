"""The merged stats model (engine/ops/stats_model.py) over hand-written stats files: sums, balance, problems;
ShardStats carrying its counters over a restart; the runtime-dir locator behind `pmengine stats`."""
from __future__ import annotations

import dataclasses
import json
import os

from engine.decoders.state import ExporterCounters
from engine.ops import locate
from engine.ops.stats_model import build_model, load_model
from engine.ops.summary import summary_lines
from engine.schema import IPV4_MAPPED_PREFIX
from engine.shards.stats import ShardStats


def ring(written=0, dropped=0, read=0):
    return {"written_records": written, "written_batches": 1, "dropped_records": dropped, "dropped_batches": 0,
            "read_records": read, "resyncs": 0}


def shard(sid, exporters, decoded, offered, rings, from_bus=0, kernel_drops=0):
    return {"shard": sid, "pid": 100 + sid, "packets": sum(e.get("packets", 0) for e in exporters.values()),
            "batches": 1, "kernel_drops": kernel_drops, "records_decoded": decoded, "records_from_bus": from_bus,
            "records_offered": offered, "pending_sets_now": 0, "rings": rings, "enrich": {}, "exporters": exporters}


def files():
    return {
        "shard-0": shard(0, {"10.0.0.1": {"packets": 5, "flows": 50, "seq_gaps": 1},
                             "10.0.0.2": {"packets": 2, "flows": 0, "decode_errors": 2}},
                         decoded=60, offered=60, from_bus=10, kernel_drops=3,
                         rings={"r0a": ring(60, 0, 60), "r0b": ring(40, 20, 40)}),
        "shard-1": shard(1, {"10.0.0.1": {"packets": 1, "flows": 7}}, decoded=7, offered=7,
                         rings={"r1a": ring(7, 0, 7), "r1b": ring(7, 0, 5)}),
        "plugin-a": {"plugin": "a", "type": "print", "records": 67, "rings": {"r0a": ring(read=60), "r1a": ring(read=7)},
                     "writer": {}, "write_errors": 1},
        "plugin-b": {"plugin": "b", "type": "pgsql", "records": 45, "rings": {"r0b": ring(read=40), "r1b": ring(read=5)},
                     "writer": {"rows_dropped": 4, "rows_failed": 1, "rows_buffered": 9}},
    }


def test_exporters_are_summed_over_shards_and_totals_add_up():
    m = build_model(files())
    e = m["exporters"]["10.0.0.1"]
    assert (e["packets"], e["flows"], e["seq_gaps"], e["shards"]) == (6, 57, 1, [0, 1])
    assert m["totals"]["packets"] == 8 and m["totals"]["decode_errors"] == 2 and m["totals"]["kernel_drops"] == 3
    assert m["totals"]["ring_dropped_records"] == 20
    assert m["totals"]["sink_lost_rows"] == 5 and m["totals"]["write_errors"] == 1


def test_per_plugin_records_read_plus_ring_drops_equal_records_offered():
    m = build_model(files())
    b = m["plugins"]["b"]
    assert (b["records_read"], b["ring_dropped_records"], b["records_offered"], b["records_in_flight"]) == (45, 20, 67, 2)
    assert m["rings"]["r1b"] == {**m["rings"]["r1b"], "shard": 1, "plugin": "b", "in_flight": 2}
    assert m["balance"] == {"ok": True, "problems": []}


def test_balance_names_each_unaccounted_difference():
    f = files()
    f["shard-1"]["records_decoded"] = 9                  # 2 records from nowhere
    f["shard-0"]["rings"]["r0b"]["dropped_records"] = 0  # the ring lost 20 without counting
    f["plugin-a"]["records"] = 60                        # the plugin lost 7 it read
    problems = build_model(f)["balance"]["problems"]
    assert len(problems) == 3
    assert any("shard 1" in p and "9" in p for p in problems)
    assert any("r0b" in p and "offered 40" in p for p in problems)
    assert any("plugin a" in p for p in problems)
    assert summary_lines(build_model(f))[-1].startswith("stats balance: NOT OK")


def test_plugin_workers_rings_are_offered_the_shards_records_together():
    """plugin_workers: a shard splits a plugin's records over its workers' rings; each worker is an entry."""
    f = files()
    f["shard-1"]["rings"] = {"r1a": ring(7, 0, 7), "r1b0": ring(3, 0, 3), "r1b1": ring(4, 0, 4)}
    f["shard-1"]["ring_groups"] = [["r1a"], ["r1b0", "r1b1"]]
    f["shard-0"]["ring_groups"] = [["r0a"], ["r0b"]]
    del f["plugin-b"]
    f["plugin-b.w0"] = {"plugin": "b", "worker": 0, "workers": 2, "type": "pgsql", "records": 43,
                        "rings": {"r0b": ring(read=40), "r1b0": ring(read=3)}, "writer": {}}
    f["plugin-b.w1"] = {"plugin": "b", "worker": 1, "workers": 2, "type": "pgsql", "records": 4,
                        "rings": {"r1b1": ring(read=4)}, "writer": {}}
    m = build_model(f)
    assert m["balance"] == {"ok": True, "problems": []}
    assert set(m["plugins"]) == {"a", "b.w0", "b.w1"}
    assert (m["plugins"]["b.w1"]["plugin"], m["plugins"]["b.w1"]["worker"]) == ("b", 1)
    f["shard-1"]["rings"]["r1b1"]["written_records"] = 3         # one record offered to no worker
    problems = build_model(f)["balance"]["problems"]
    assert len(problems) == 1 and "r1b0, r1b1 were offered 6 records" in problems[0]


def test_summary_has_one_line_per_shard_ring_plugin_exporter():
    lines = summary_lines(build_model(files()))
    kinds = [line.split()[1] for line in lines]
    assert kinds.count("shard") == 2 and kinds.count("ring") == 4 and kinds.count("plugin") == 2
    assert kinds.count("exporter") == 2 and lines[-1] == "stats balance: ok"
    assert "sink_rows_dropped=4" in next(line for line in lines if line.startswith("stats plugin b:"))


def test_unreadable_and_half_written_files_are_skipped(tmp_path):
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "shard-0.json").write_text(json.dumps(files()["shard-0"]))
    (tmp_path / "stats" / "shard-1.json").write_text('{"shard": 1, "pack')
    (tmp_path / "stats" / "shard-1.json.tmp").write_text("{}")
    m = load_model(str(tmp_path))
    assert list(m["shards"]) == ["0"] and m["totals"]["packets"] == 7


def test_a_restarted_shard_carries_its_predecessors_counters(tmp_path):
    path = str(tmp_path / "shard-0.json")
    addr = IPV4_MAPPED_PREFIX + bytes([10, 0, 0, 1])
    first = ShardStats(0, path)
    first.add_decode({addr: ExporterCounters(packets=3, flows=30, seq_gaps=1)}, 3)
    first.kernel_drops, first.records_decoded = 4, 30
    first.save()
    second = ShardStats(0, path)                         # the restarted shard: a new socket, new counters
    second.add_decode({addr: ExporterCounters(packets=2, flows=20)}, 2)
    second.kernel_drops, second.records_decoded, second.pending_sets_now = 6, 20, 6   # the held socket's own count
    d = second.as_dict()
    # kernel drops are read off the socket the supervisor holds across restarts: not added up again
    assert (d["packets"], d["kernel_drops"], d["records_decoded"], d["starts"], d["pending_sets_now"]) == (5, 6, 50, 2, 6)
    assert d["exporters"]["10.0.0.1"]["flows"] == 50 and d["exporters"]["10.0.0.1"]["seq_gaps"] == 1


def test_batches_of_exporter_counters_add_up_field_by_field():
    total = ShardStats(0, None)
    addr = IPV4_MAPPED_PREFIX + bytes([10, 0, 0, 2])
    names = [f.name for f in dataclasses.fields(ExporterCounters)]
    for k in range(1, 4):                                  # batch k: every counter k, then k + its position
        total.add_decode({addr: ExporterCounters(**{n: k + i for i, n in enumerate(names)})}, 1)
    total.add_decode({addr: ExporterCounters()}, 1)        # an all-zero batch changes nothing
    assert dataclasses.asdict(total.exporters[addr]) == {n: 6 + 3 * i for i, n in enumerate(names)}


def test_locator_finds_the_runtime_dir_from_the_pidfile(tmp_path):
    runtime = tmp_path / "rt"
    runtime.mkdir()
    (runtime / locate.PID_NAME).write_text(f"{os.getpid()} 12345\n")
    pidfile = tmp_path / "pm.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    locate.publish(str(runtime), str(pidfile))
    link = tmp_path / "pm.pid.runtime"
    assert oct(link.stat().st_mode & 0o777) == "0o600"
    assert locate.find_runtime(str(pidfile)) == (os.getpid(), str(runtime))
    locate.unpublish(str(runtime), str(pidfile))
    assert not link.exists()
    pidfile.write_text("999999999\n")
    try:
        locate.find_runtime(str(pidfile))
        raise AssertionError("found a dead engine")
    except LookupError as e:
        assert "not running" in str(e)
