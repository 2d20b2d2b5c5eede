"""engine/shards/gather.py: how long a shard waits for datagrams to gather (pure logic)."""
from __future__ import annotations

import pytest

from engine.shards.gather import (HEADROOM, LONGEST_S, QUEUE_SHARE, SHORTEST_S, TARGET_PACKETS, TRUESIZE_EXTRA,
                                  TRUESIZE_FACTOR, GatherClock)

BIG = 1 << 30           # a receive buffer that never limits


def drain(clock: GatherClock, t: float, datagrams: int, payload_bytes: int) -> None:
    """What a shard does: the receives' datagrams, then the socket found drained at t."""
    clock.received(datagrams, payload_bytes)
    clock.drained(t)


def steady(clock: GatherClock, per_s: float, size: int = 1300, rounds: int = 5, t: float = 100.0) -> float:
    """Drains at the clock's own pace with datagrams arriving at per_s; the time of the last drain."""
    drain(clock, t, 0, 0)
    for _ in range(rounds):
        dt = max(clock.interval(), 1e-3)
        t += dt
        n = int(per_s * dt)
        drain(clock, t, n, n * size)
    return t


def test_first_receives_wait_the_shortest():
    clock = GatherClock(BIG)
    assert clock.wait(10.0) == 0.0                  # never drained: receive now
    drain(clock, 10.0, 3, 3000)                    # no interval measured yet
    assert clock.interval() == SHORTEST_S
    assert clock.wait(10.0) == pytest.approx(SHORTEST_S)
    assert clock.wait(10.0 + SHORTEST_S + 1) == 0.0


def test_batches_hold_about_the_target_whatever_the_rate():
    for per_s in (6000, 9000, 12000):
        clock = GatherClock(BIG)
        steady(clock, per_s)
        assert clock.interval() == pytest.approx(TARGET_PACKETS / per_s, rel=0.05)
        assert clock.interval() * per_s == pytest.approx(TARGET_PACKETS, rel=0.05)


def test_bounds_hold_at_low_and_high_rates():
    slow, fast = GatherClock(BIG), GatherClock(BIG)
    steady(slow, 50)
    steady(fast, 200_000)
    assert slow.interval() == LONGEST_S             # the heartbeat: never silent for long
    assert fast.interval() == SHORTEST_S


def test_the_receive_buffer_limits_the_wait():
    rcvbuf = 8 << 20
    clock = GatherClock(rcvbuf)
    per_s, size = 3000, 1300
    steady(clock, per_s, size)
    charged = size * TRUESIZE_FACTOR + TRUESIZE_EXTRA
    limit = QUEUE_SHARE * rcvbuf / (HEADROOM * per_s * charged)
    assert limit < TARGET_PACKETS / per_s           # the case this test is about
    assert clock.interval() == pytest.approx(max(SHORTEST_S, limit), rel=0.05)
    # a burst of HEADROOM x the rate during that wait fills at most QUEUE_SHARE of the buffer
    assert HEADROOM * per_s * clock.interval() * charged <= QUEUE_SHARE * rcvbuf * 1.06


def test_rate_rises_at_once_and_falls_slowly():
    clock = GatherClock(BIG)
    t = steady(clock, 2000)
    slow_wait = clock.interval()
    t += 0.05
    drain(clock, t, 1000, 1_300_000)               # 20k datagrams/s now: the next wait is short at once
    assert clock.interval() == pytest.approx(TARGET_PACKETS / 20_000)
    t += 1.0
    drain(clock, t, 2000, 2_600_000)               # back to 2000/s: one drain does not undo it
    assert clock.interval() < slow_wait / 2


def test_the_kernels_charge_replaces_the_estimate():
    rcvbuf = 8 << 20
    per_s, size, kernel = 3000, 3500, 4352          # loopback charges a 3.5 KB datagram 4352 bytes
    guessed, measured = GatherClock(rcvbuf), GatherClock(rcvbuf)
    measured.charged(10 * kernel, 10)
    steady(guessed, per_s, size)
    steady(measured, per_s, size)
    assert measured.charged_per_datagram == kernel
    assert guessed.charged_per_datagram == pytest.approx(size * TRUESIZE_FACTOR + TRUESIZE_EXTRA)
    limit = QUEUE_SHARE * rcvbuf / (HEADROOM * per_s * kernel)
    assert SHORTEST_S < limit < TARGET_PACKETS / per_s
    assert measured.interval() == pytest.approx(limit, rel=0.05)
    assert measured.interval() > guessed.interval() * 1.5     # the guess errs high: it waited too little
    measured.charged(0, 10)                                  # nothing read: the last figure stays
    measured.charged(1000, 0)
    assert measured.measured_per_datagram == kernel
