"""perf/bench.py smoke: one tiny live scenario, nfacctd 1.7.7 then pmengine with 1 and 2 shards (2 plugin
workers); the table has them all, all bytes kept, and the shards 1 -> 2 model line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import NFACCTD, REPO
import pytest

sys.path.insert(0, str(REPO / "perf"))
import bench  # noqa: E402


@pytest.mark.skipif(NFACCTD is None, reason="nfacctd (Debian package pmacct) is not installed")
def test_quick_bench_table_has_both_collectors_with_all_bytes(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "perf/bench.py", "--quick", "--shards", "1,2", "--json", str(out),
                           "--keep", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    table = proc.stdout.splitlines()
    assert any(line.startswith("scenario") and line.split()[-2:] == ["steal%", "runs"] for line in table), proc.stdout
    assert any(line.startswith("v9-five") and " nfacctd " in line for line in table), proc.stdout
    assert any(line.startswith("v9-five") and " pmengine-1 " in line for line in table), proc.stdout
    rows = json.loads(out.read_text())
    results = {r["collector"]: r for r in rows if r["load"] == 1}
    expected = json.loads((tmp_path / "work" / "v9-five.json").read_text())
    assert set(results) == {"nfacctd", "pmengine-1", "pmengine-2"}
    assert results["pmengine-2"]["workers"] == 2        # --workers auto: the 5-tuple gets one worker per shard
    # the scaling model's row: 2 shards at twice the rate (the same load per shard as the 1-shard row)
    loaded = [r for r in rows if r["load"] != 1]
    assert [(r["collector"], r["load"]) for r in loaded] == [("pmengine-2", 2)], rows
    assert loaded[0]["send_rate"] > 1.5 * results["pmengine-2"]["send_rate"], rows
    assert any(line.startswith("v9-five") and " pmengine-2 w2 x2 " in line for line in table), proc.stdout
    model = [line for line in table if line.startswith("v9-five: CPU-time model")]
    assert model and "plugin workers 1 / 2" in model[0] and "the same load per shard" in model[0], proc.stdout
    results["pmengine-2 x2"] = loaded[0]
    for r in results.values():
        assert r["bytes_kept"] == 1.0, r
        assert r["run_cpu"] > 0 and r["peak_rss"] > 0, r
        assert r["kernel_drops"] == 0, r
        assert 0.0 <= r["steal"] < 1.0, r             # the host's steal over the run, from /proc/stat
        assert r["attempts"] == 1 and r["quiet_runs"] == (r["steal"] <= 0.03), r      # --quick: no re-runs
    # the reference attributes every byte to the right exporter (the generator's per-exporter totals)
    assert results["nfacctd"]["exporters_exact"] == len(expected["per_exporter"])
    assert results["nfacctd"]["rows"] == expected["distinct"]["five"]


@pytest.mark.parametrize("steals, runs, attempts, kept, made", [
    ([0.00, 0.01, 0.02], 3, 9, [0.00, 0.01, 0.02], 3),              # all quiet: no re-run
    ([0.10, 0.00, 0.20, 0.01, 0.00], 3, 9, [0.00, 0.01, 0.00], 5),  # stolen runs are re-run, not counted
    ([0.10, 0.00, 0.20, 0.30], 3, 4, [0.00], 4),                    # bounded: the quiet ones so far
    ([0.10, 0.20], 2, 2, [0.10, 0.20], 2),                          # none quiet: all of them
])
def test_quiet_runs_rerun_stolen_runs_within_the_attempts(steals, runs, attempts, kept, made):
    queue = list(steals)

    def run():
        return bench.Result("pmengine-1", 1, steal=queue.pop(0))

    results, calls = bench.quiet_runs(run, runs, 0.03, attempts)
    assert [r.steal for r in results] == kept and calls == made


def test_rows_add_the_same_load_per_shard_row_only_with_one_shard_and_a_rate():
    sc = bench.SCENARIOS["v9-matrix"]
    assert bench.collectors_of(sc, [1, 2], 400_000) == [("nfacctd", 1), ("pmengine-1", 1), ("pmengine-2", 1),
                                                        ("pmengine-2", 2)]
    assert bench.collectors_of(sc, [1, 2, 4], 1000)[-2:] == [("pmengine-2", 2), ("pmengine-4", 4)]
    assert bench.collectors_of(sc, [1, 2], 0) == [("nfacctd", 1), ("pmengine-1", 1), ("pmengine-2", 1)]
    assert bench.collectors_of(bench.SCENARIOS["sflow-five"], [2], 1000) == [("sfacctd", 1), ("pmengine-2", 1)]


def test_scaling_model_reads_the_loaded_row_when_there_is_one():
    def row(shards, load, receiver):
        return bench.Result(f"pmengine-{shards}", 1_000_000, receiver_cpu=receiver, busiest_other_cpu=0.01,
                            shards=shards, load=load)
    one, two, loaded = row(1, 1, 0.20), row(2, 1, 0.25), row(2, 2, 0.21)
    assert bench.scaling_model(one, two).endswith("scaling 1.60x")
    line = bench.scaling_model(one, two, loaded)
    assert "1.60x at the same total rate" in line and line.endswith("scaling 1.90x"), line


CHILD_BURNS = """
import sys, time
# spin until this process's CPU time is 5 ms past a multiple of 10 ms (past 80 ms): clock ticks read it >= 5 ms low
target = (max(80_000_000, time.process_time_ns()) // 10_000_000 + 1) * 10_000_000 + 5_000_000
while time.process_time_ns() < target:
    pass
print(time.process_time_ns(), flush=True)
sys.stdin.read()
"""


def test_cpu_seconds_reads_a_process_exactly_not_in_clock_ticks():
    # the bench subtracts a start-up CPU read from /proc from the exact rusage at the end: ticks (utime and stime
    # each truncated to 10 ms) would make every process of the tree look ~10 ms busier than it was
    child = subprocess.Popen([sys.executable, "-c", CHILD_BURNS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        own = int(child.stdout.readline()) / 1e9
        seen = bench.cpu_seconds(child.pid)
        assert seen is not None and abs(seen - own) < 0.002, (seen, own)
    finally:
        child.stdin.close()
        child.wait(10)
    assert bench.cpu_seconds(child.pid) is None          # gone: nothing to read
