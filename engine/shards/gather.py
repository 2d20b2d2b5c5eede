"""How long a shard lets datagrams gather on its socket before the next receive.

Decoding costs ~0.5-1 ms per batch whatever its size, plus a cost per flow, and every wakeup of a process costs
~0.1-0.3 ms -- more for a large working set: a shard that slept finds its caches cold, and the same batch then
costs ~30% more CPU (measured here: decode + fold of 384 datagrams, 0.25 us/flow back to back, 0.33 after a
5-50 ms sleep; 768 datagrams after 100 ms: 0.28).  So below saturation a shard takes its datagrams in batches
of several hundred, not as they trickle in.

After a receive that drained the socket, the next one waits until about TARGET_PACKETS datagrams are expected
to be queued at the arrival rate measured over the last drains (fewer where they would hold more than
TARGET_BYTES of payload: a batch's data stays in cache) -- but never so long that traffic arriving at HEADROOM
times that rate would fill more than QUEUE_SHARE of the socket's receive buffer (a burst must not become kernel
drops), never longer than LONGEST_S (the shard declares the wait to the supervisor's hang watch with
proc.busy), never shorter than SHORTEST_S.  Where the buffer is what cuts a wait short, the shard looks at the
queue when it wakes (more(): the bytes queued, SO_MEMINFO) and waits on while a HEADROOM burst from that queue
would still fit: at a steady rate the first wait leaves most of the share free, so the batch reaches the
target at the cost of one more wakeup (~0.1 ms, against ~1 ms a batch costs whatever its size), and a burst
that came meanwhile is received at once.  The rate estimate rises at once and falls slowly.  What a datagram
costs the buffer is the kernel's own figure where the shard can read it (charged(): SO_MEMINFO's queued bytes
before a receive that took them all -- on loopback a 3.5 KB sFlow datagram is charged 4352 bytes, a 1464-byte
v5 one 2304), else a payload-based guess that errs high (TRUESIZE_*).  At saturation receives come back full
(MAX_PACKETS) and nobody waits.  With more shards each sees a share of the traffic and waits longer, so batch
sizes -- and CPU per flow -- stay what one shard has.  Latency is
irrelevant to a collector that purges every minute.
"""
from __future__ import annotations

SHORTEST_S = 0.02
LONGEST_S = 0.3
TARGET_PACKETS = 768            # 3/4 of receiver.MAX_PACKETS: a gathered queue fits one receive
TARGET_BYTES = 2 << 20          # ... and at most this much payload (sFlow decodes slower past ~2.7 MB a batch)
MORE_FROM_S = 0.01              # a further wait shorter than this is not worth its wakeup
HEADROOM = 4.0                  # a burst this many times the measured rate ...
QUEUE_SHARE = 0.5               # ... fills at most this share of the receive buffer while we wait
TRUESIZE_FACTOR = 2.0           # the kernel charges a datagram ~2x its payload + ~0.6 KiB (skb, slab rounding)
TRUESIZE_EXTRA = 640
FALL = 0.3                      # weight of a lower newest rate in the estimate (a higher one replaces it)


class GatherClock:
    """received(datagrams, payload_bytes) after each receive; drained(now) when one left the socket empty;
    wait(now): seconds to sleep before the next receive; more(now, queued_bytes) after that sleep: seconds to
    sleep on."""

    def __init__(self, rcvbuf_bytes: int) -> None:
        self.rcvbuf = max(1, rcvbuf_bytes)
        self.last = 0.0                 # when the socket was last found drained (0: never)
        self.datagrams = 0              # received since then, and their payload bytes
        self.payload_bytes = 0
        self.datagrams_per_s = 0.0
        self.charged_per_datagram = 0.0     # receive buffer bytes per datagram (truesize estimate)
        self.measured_per_datagram = 0.0    # ... as the kernel charged it (charged()), 0: not known
        self.target = float(TARGET_PACKETS)     # datagrams a batch should hold (TARGET_BYTES of payload at most)

    def received(self, datagrams: int, payload_bytes: int) -> None:
        self.datagrams += datagrams
        self.payload_bytes += payload_bytes

    def drained(self, now: float) -> None:
        """The socket was found drained at `now`: what was received since the last drain gives the rate."""
        datagrams = self.datagrams
        if self.last and now > self.last and datagrams:
            rate = datagrams / (now - self.last)
            old = self.datagrams_per_s
            self.datagrams_per_s = rate if rate >= old else old + FALL * (rate - old)
            self.charged_per_datagram = (self.measured_per_datagram
                                         or self.payload_bytes * TRUESIZE_FACTOR / datagrams + TRUESIZE_EXTRA)
            self.target = min(TARGET_PACKETS, TARGET_BYTES * datagrams / max(1, self.payload_bytes))
        self.last = now
        self.datagrams = self.payload_bytes = 0

    def charged(self, queued_bytes: int, datagrams: int) -> None:
        """The socket held queued_bytes of receive buffer (SO_MEMINFO) just before a receive that took all of
        it: `datagrams` datagrams.  From the next drain on, that is what a datagram costs the buffer."""
        if queued_bytes > 0 and datagrams > 0:
            self.measured_per_datagram = queued_bytes / datagrams

    def _burst_s(self, free_bytes: float) -> float:
        """Seconds until traffic at HEADROOM times the measured rate queues `free_bytes` more."""
        return free_bytes / (HEADROOM * self.datagrams_per_s * max(1.0, self.charged_per_datagram))

    def interval(self) -> float:
        """Seconds between drained receives at the measured rate."""
        rate = self.datagrams_per_s
        if rate <= 0:
            return SHORTEST_S
        wait = min(self.target / rate, self._burst_s(QUEUE_SHARE * self.rcvbuf))
        return max(SHORTEST_S, min(LONGEST_S, wait))

    def wait(self, now: float) -> float:
        return max(0.0, self.last + self.interval() - now)

    def more(self, now: float, queued_bytes: int) -> float:
        """After a wait, `queued_bytes` now queued (0: not known): seconds to wait on, 0 to receive now.  Until
        the target is due, as long as a HEADROOM burst from this queue would leave it within QUEUE_SHARE."""
        rate = self.datagrams_per_s
        if rate <= 0 or queued_bytes <= 0:
            return 0.0
        due = self.last + min(LONGEST_S, self.target / rate) - now
        wait = min(due, self._burst_s(QUEUE_SHARE * self.rcvbuf - queued_bytes))
        return wait if wait >= MORE_FROM_S else 0.0
