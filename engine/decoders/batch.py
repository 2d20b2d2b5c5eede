"""A batch of received export packets: what a shard hands to the decoders.

Packets lie back to back in one buffer (filled by recv_into); per packet we
keep its offset, length, exporter address (16 bytes, IPv4-mapped for IPv4)
and arrival time.  Decoders never touch sockets: they take a PacketBatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..schema import IPV4_MAPPED_PREFIX


@dataclass
class PacketBatch:
    buf: np.ndarray          # uint8, the packets back to back (may be longer than used)
    offsets: np.ndarray      # int64, start of packet i in buf
    lengths: np.ndarray      # int64, length of packet i
    exporters: np.ndarray    # uint8 (n, 16), exporter address of packet i
    arrival_us: np.ndarray   # int64, arrival time of packet i, µs since epoch

    def __len__(self) -> int:
        return len(self.offsets)

    def packet(self, i: int) -> memoryview:
        o = int(self.offsets[i])
        return memoryview(self.buf)[o:o + int(self.lengths[i])]

    @classmethod
    def from_packets(cls, packets: list[tuple[bytes, bytes, int]]) -> "PacketBatch":
        """Build a batch from (payload, exporter16, arrival_us) tuples (tests, pcap replay)."""
        n = len(packets)
        lengths = np.fromiter((len(p[0]) for p in packets), dtype=np.int64, count=n)
        offsets = np.zeros(n, dtype=np.int64)
        if n:
            offsets[1:] = np.cumsum(lengths)[:-1]
        buf = np.frombuffer(b"".join(p[0] for p in packets), dtype=np.uint8).copy()
        exporters = np.zeros((n, 16), dtype=np.uint8)
        for i, p in enumerate(packets):
            exporters[i] = np.frombuffer(p[1], dtype=np.uint8)
        arrival = np.fromiter((p[2] for p in packets), dtype=np.int64, count=n)
        return cls(buf, offsets, lengths, exporters, arrival)


def exporter_bytes(ip: str) -> bytes:
    """'192.0.2.1' or '2001:db8::1' (or an IPv4-mapped form) → 16 bytes."""
    import ipaddress
    a = ipaddress.ip_address(ip.split("%")[0])
    if a.version == 4:
        return IPV4_MAPPED_PREFIX + a.packed
    if a.ipv4_mapped is not None:
        return IPV4_MAPPED_PREFIX + a.ipv4_mapped.packed
    return a.packed
