"""Template-bus messages: what one shard learns and every other shard applies.

Key layout (29 bytes), so that a newer message with the same key replaces the older one:

    kind (1 byte) | exporter address (16) | domain / source id (4, big-endian) | id (8, big-endian)

    kind b"T": a data or options template; id = template id; payload = templates.template_to_bytes
               (a template with no fields is a withdrawal).
    kind b"S": a sampling rate learnt from options data; domain = 0 (nfacctd keeps sampling per
               exporter, across source ids / domains); id = sampler id (0: the exporter-wide rate);
               payload = rate as 4 bytes big-endian.

Wire form of a message (to_bytes): key length (2 bytes, big-endian) | key | payload.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

KIND_TEMPLATE = b"T"
KIND_SAMPLING = b"S"
KEY_LENGTH = 29
_KEY = struct.Struct(">c16sIQ")


@dataclass(frozen=True)
class BusMessage:
    key: bytes
    payload: bytes

    def to_bytes(self) -> bytes:
        return struct.pack(">H", len(self.key)) + self.key + self.payload

    @classmethod
    def from_bytes(cls, b: bytes) -> "BusMessage":
        if len(b) < 2:
            raise ValueError("bus message too short")
        n = struct.unpack_from(">H", b, 0)[0]
        if len(b) < 2 + n:
            raise ValueError("bus message key truncated")
        return cls(bytes(b[2:2 + n]), bytes(b[2 + n:]))

    @property
    def kind(self) -> bytes:
        return self.key[:1]


def make_key(kind: bytes, exporter: bytes, domain: int, ident: int) -> bytes:
    return _KEY.pack(kind, exporter, domain & 0xFFFFFFFF, ident & 0xFFFFFFFFFFFFFFFF)


def parse_key(key: bytes) -> tuple[bytes, bytes, int, int]:
    """(kind, exporter16, domain, id); raises ValueError on a malformed key."""
    if len(key) != KEY_LENGTH:
        raise ValueError(f"bus key of {len(key)} bytes")
    return _KEY.unpack(key)


def sampling_message(exporter: bytes, sampler_id: int, rate: int) -> BusMessage:
    return BusMessage(make_key(KIND_SAMPLING, exporter, 0, sampler_id), struct.pack(">I", rate & 0xFFFFFFFF))


def sampling_rate_from(payload: bytes) -> int:
    if len(payload) != 4:
        raise ValueError("bad sampling payload")
    return struct.unpack(">I", payload)[0]
