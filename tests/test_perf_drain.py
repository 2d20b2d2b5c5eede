"""perf/drain.py smoke: a small replay queued on stopped shards (1, then 2) is drained in full after a warm-up
replay drained the same way, every byte of both kept, and the engine's hang watch does not restart a shard that
was stopped for it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "perf"))
import drain  # noqa: E402


def test_drain_queues_a_replay_on_stopped_shards_and_keeps_every_byte(tmp_path):
    proc = subprocess.run([sys.executable, "perf/drain.py", "--scenario", "v9-matrix", "--flows", "120000",
                           "--shards", "1,2", "--runs", "1", "--exporters", "8", "--warmup", "8000",
                           "--plugin-pipe-size", str(64 << 20), "--pin", "0"],
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
    assert f"plugin_pipe_size {64 << 20}" in lines[0] and "pinned to CPUs 0" in lines[0], proc.stdout


def test_skb_defer_max_is_set_for_the_runs_and_put_back(tmp_path, monkeypatch):
    knob = tmp_path / "skb_defer_max"
    knob.write_text("64\n")
    monkeypatch.setattr(drain, "SKB_DEFER_MAX", knob)
    with drain.SkbDeferMax(0):
        assert drain.skb_defer_max() == "0"
    assert drain.skb_defer_max() == "64"
    with drain.SkbDeferMax(None):               # not asked for: left alone
        assert drain.skb_defer_max() == "64"
    try:
        with drain.SkbDeferMax(0):
            raise RuntimeError("a run failed")
    except RuntimeError:
        pass
    assert drain.skb_defer_max() == "64"        # put back after a failure too
    monkeypatch.setattr(drain, "SKB_DEFER_MAX", tmp_path / "absent")
    assert drain.skb_defer_max() == "-"


PIN_CHECK = """
import json, os, subprocess, sys
sys.path.insert(0, "perf")
import drain
root, shard = (subprocess.Popen(["sleep", "30"]) for _ in range(2))
try:
    drain.pin_tree(root.pid, {shard.pid}, [0])
    rest = set(range(os.cpu_count())) - {0}
    print(json.dumps([sorted(os.sched_getaffinity(p)) for p in (shard.pid, root.pid, 0)] + [sorted(rest)]))
finally:
    for p in (root, shard):
        p.kill()
        p.wait()
"""


def test_pinning_puts_the_shards_on_their_cpus_and_the_rest_elsewhere():
    # in a child: pin_tree also pins the calling process
    proc = subprocess.run([sys.executable, "-c", PIN_CHECK], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shard, root, me, rest = json.loads(proc.stdout)
    assert shard == [0]
    if rest:                                    # more than one CPU: the supervisor and the script off CPU 0
        assert root == rest and me == rest


@pytest.mark.parametrize("args, message", [
    (["--pin", "0,x"], "is not a comma-separated list of CPU numbers"),
    (["--pin", "0,100000"], "this process may run on CPUs"),
])
def test_bad_options_are_refused_before_anything_starts(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        drain.main(args)
    assert stop.value.code == 2 and message in capsys.readouterr().err
