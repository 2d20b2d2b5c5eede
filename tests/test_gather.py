"""engine/shards/gather.py: how long a shard waits for datagrams to gather (pure logic)."""
from __future__ import annotations

import pytest

from engine.shards.gather import (HEADROOM, LONGEST_S, MORE_FROM_S, QUEUE_SHARE, SHORTEST_S, TARGET_BYTES,
                                  TARGET_PACKETS, TRUESIZE_EXTRA, TRUESIZE_FACTOR, GatherClock)

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


def test_batches_of_big_datagrams_hold_the_target_payload():
    clock = GatherClock(BIG)
    per_s, size = 6000, 9000                         # jumbo datagrams: 768 would be ~7 MB of payload
    steady(clock, per_s, size)
    assert clock.interval() * per_s * size == pytest.approx(TARGET_BYTES, rel=0.05)


def waits_of_a_batch(clock: GatherClock, t: float, per_s: float, charged: float, burst_at=None, burst=1.0):
    """The waits a shard makes before one receive: the first, then more() with the queue the rate (times
    `burst` from `burst_at` seconds into the wait) has built; the time it receives and the queue then."""
    start, waits, queued = t, [], 0.0
    wait = clock.wait(t)
    while wait > 0:
        waits.append(wait)
        for step in range(100):                     # the queue grows while we sleep
            now = t + wait * (step + 1) / 100
            rate = per_s * (burst if burst_at is not None and now - start >= burst_at else 1.0)
            queued += rate * wait / 100 * charged
        t += wait
        wait = clock.more(t, int(queued))
    return waits, t, queued


def test_a_wait_the_buffer_cut_short_goes_on_to_the_target():
    rcvbuf, per_s, size, kernel = 8 << 20, 3000, 1300, 2304
    clock = GatherClock(rcvbuf)
    clock.charged(10 * kernel, 10)
    t = steady(clock, per_s, size)
    limit = QUEUE_SHARE * rcvbuf / (HEADROOM * per_s * kernel)
    assert limit < TARGET_PACKETS / per_s            # one wait alone stops short of the target
    waits, end, queued = waits_of_a_batch(clock, t, per_s, kernel)
    assert waits[0] == pytest.approx(limit, rel=0.05)
    assert len(waits) >= 2
    assert (end - t) * per_s == pytest.approx(TARGET_PACKETS, rel=0.05)     # the batch holds the target
    # at every wake, a HEADROOM burst over the next wait still fits in the share
    queued_at = 0.0
    for w in waits:
        assert queued_at + HEADROOM * per_s * w * kernel <= QUEUE_SHARE * rcvbuf * 1.02
        queued_at += per_s * w * kernel


def test_a_burst_during_the_wait_is_received_at_once():
    rcvbuf, per_s, kernel = 8 << 20, 3000, 2304
    clock = GatherClock(rcvbuf)
    clock.charged(10 * kernel, 10)
    t = steady(clock, per_s, 1300)
    waits, end, queued = waits_of_a_batch(clock, t, per_s, kernel, burst_at=0.0, burst=HEADROOM)
    assert len(waits) == 1                           # the queue grew HEADROOM x faster: no second wait
    assert queued <= QUEUE_SHARE * rcvbuf * 1.02


def test_no_second_wait_without_the_queue_or_for_a_moment():
    clock = GatherClock(8 << 20)
    t = steady(clock, 3000, 1300)
    assert clock.more(t + clock.interval(), 0) == 0.0        # SO_MEMINFO missing: as before, receive
    fresh = GatherClock(8 << 20)
    assert fresh.more(1.0, 100_000) == 0.0                   # no rate yet
    big = GatherClock(BIG)
    t = steady(big, 3000, 1300)
    due = big.last + big.interval()
    assert big.more(due - MORE_FROM_S / 2, 1000) == 0.0       # the target is (nearly) due
