"""An idle collector wakes rarely: each wakeup of a Python process costs ~0.1-0.3 ms of CPU on a VM (cold
caches), which is most of what an idle or lightly loaded pmengine spends.

Counted in voluntary context switches (/proc/<pid>/task/*/status), not CPU time, so the test does not depend on
the machine's speed or load: the plugin's idle sleep grows to loop.IdlePause's cap (0.1 s), the supervisor sleeps
until a child's hang deadline (at most TURN_MAX_S, 0.5 s) and wakes at once for a signal or a child's exit, the
template bus thread sleeps until a message or stop(), a shard polls until its next housekeeping (1 s) and wakes at
once for a datagram, a template or a signal.
"""
from __future__ import annotations

import os
import time

import pytest

from conftest import free_udp_port
from engine.plugins import loop
from engine.plugins.loop import RING_RATE_BOUND, IdlePause
from engine_probe import children, runtime_dir


def test_idle_pause_doubles_to_its_cap_and_resets_on_records(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(loop.time, "sleep", slept.append)      # loop.py's time module: record, do not sleep
    pause = IdlePause(0.02, 0.1, [1 << 20])
    for _ in range(5):
        pause.sleep()
    assert slept == [0.02, 0.04, 0.08, 0.1, 0.1]
    pause.busy()
    pause.sleep()
    assert slept[-1] == 0.02


def test_idle_pause_never_outlasts_half_a_small_ring():
    small = int(RING_RATE_BOUND * 0.05)          # fills in 50 ms at the assumed rate: sleep at most 25 ms
    assert IdlePause(0.02, 0.1, [1 << 20, small]).longest == pytest.approx(0.025)
    assert IdlePause(0.02, 0.1, [100]).longest == 0.02          # never below the shortest sleep
    assert IdlePause(0.02, 0.1, []).longest == 0.02


def switches(pid: int) -> dict[int, int]:
    """Voluntary context switches of each thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("voluntary_ctxt_switches:"):
                    out[int(tid)] = int(line.split()[1])
        except OSError:
            continue
    return out


def test_idle_collector_wakes_about_ten_times_a_second_per_process(collector_factory, tmp_path):
    port = free_udp_port()
    c = collector_factory(f"nfacctd_port: {port}\nnfacctd_ip: 127.0.0.1\nplugins: print[p]\n"
                          f"aggregate: src_host\nprint_output: csv\nprint_output_file: {tmp_path}/out.csv\n"
                          "print_refresh_time: 3600\n")
    c.wait_listening(1)
    kids = children(runtime_dir(c.proc.pid))
    pids = {"supervisor": c.proc.pid, "shard": kids["shard-0"]["pid"],
            "plugin": next(v["pid"] for k, v in kids.items() if k.startswith("plugin"))}
    time.sleep(1.0)                               # start-up done, the plugin's idle sleep at its cap
    before = {name: switches(pid) for name, pid in pids.items()}
    window = 3.0
    time.sleep(window)
    after = {name: switches(pid) for name, pid in pids.items()}
    per_second = {name: max((after[name][t] - before[name].get(t, 0)) for t in after[name]) / window
                  for name in pids}
    # the plugin ~10/s (a 0.1 s sleep), the supervisor ~2/s, the shard ~1/s; loops of old woke 50/s (plugin),
    # 20/s (supervisor, bus thread), then 10/s (supervisor, shard)
    assert per_second["plugin"] <= 16, per_second
    assert per_second["supervisor"] <= 4, per_second
    assert per_second["shard"] <= 3, per_second
    others = [t for t in after["supervisor"] if t != c.proc.pid]      # the template bus thread
    assert all((after["supervisor"][t] - before["supervisor"].get(t, 0)) / window <= 4 for t in others), after
    t0 = time.monotonic()
    assert c.stop(30) == 0, c.log_path.read_text()[-4000:]
    assert time.monotonic() - t0 < 5              # the supervisor heard SIGTERM at once and stopped everyone


def test_idle_pause_shortens_when_records_come_fast():
    capacity = 135_000
    pause = IdlePause(0.05, 0.1, [capacity])
    t = 100.0
    for _ in range(5):                           # 40k records every 25 ms: 1.6M records/s
        t += 0.025
        pause.busy(40_000, t)
    assert pause.pause() == pytest.approx(capacity / 2 / 1.6e6, rel=0.01)     # ~42 ms, not 50: half a ring
    t += 1.0
    pause.busy(1000, t)                          # then a trickle: the estimate falls slowly, not at once
    assert pause.rate == pytest.approx(1.6e6 + IdlePause.FALL * (1000 - 1.6e6))
    pause2 = IdlePause(0.05, 0.1, [capacity])
    pause2.busy(1000, 5.0)
    pause2.busy(1000, 6.0)                       # 1000 records/s: the shortest sleep
    assert pause2.pause() == 0.05
