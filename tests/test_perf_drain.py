"""perf/drain.py smoke: a small replay queued on stopped shards (1, then 2) is drained in full after a warm-up
replay drained the same way, every byte of both kept, and the engine's hang watch does not restart a shard that
was stopped for it."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_drain_queues_a_replay_on_stopped_shards_and_keeps_every_byte(tmp_path):
    proc = subprocess.run([sys.executable, "perf/drain.py", "--scenario", "v9-matrix", "--flows", "120000",
                           "--shards", "1,2", "--runs", "1", "--exporters", "8", "--warmup", "8000"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0] in ("1", "2")]
    assert [r[0] for r in rows] == ["1", "2"], proc.stdout
    for r in rows:
        assert r[-1] == "100.00" and r[-2] == "0" and r[-3] == "0", proc.stdout  # kept %, kernel drops, restarts
        assert len(r[1].split("/")) == int(r[0]), proc.stdout                   # a queue per shard
        assert sum(int(q) for q in r[1].split("/")) >= 1, proc.stdout           # the replay was queued (MiB)
        assert 0 <= int(r[5]) <= 100 and float(r[6]) > 0, proc.stdout           # kernel share, machine µs/flow
    assert any(line.startswith("shards 2: median wall") and "CPU model" in line and "machine" in line
               for line in lines), proc.stdout
    assert "after 8000 flows the same way" in lines[0], proc.stdout
