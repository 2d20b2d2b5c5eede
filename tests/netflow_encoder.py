"""A test encoder for NetFlow v5, NetFlow v9 and IPFIX export packets.

It builds byte-exact packets from templates and values, for the decoder
tests, property tests and the performance generators.  It knows nothing
about the decoders: it follows the wire formats of the RFCs (3954, 7011)
and of the NetFlow v5 export format.

    tpl = Template(256, [Field(8, 4), Field(12, 4), Field(1, 4), Field(2, 4)])
    data = data_set(tpl, [["10.0.0.1", "10.0.0.2", 1500, 3]])
    pkt = v9_packet([template_set(9, [tpl]), data], unix_secs=1_700_000_000)
    msg = ipfix_message([template_set(10, [tpl]), data], export_time=1_700_000_000)

Values: an int is written big-endian in the field's length; a str is an IP or
MAC address ("10.0.0.1", "2001:db8::1", "00:11:22:33:44:55"); bytes are
written as they are (padded/cut to the length).  A variable-length IPFIX field
(length VARLEN) takes bytes and gets the 1-byte length prefix, or the 3-byte
form when the value is 255 bytes or longer (or when `Varlen(b, long=True)`).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

VARLEN = 0xFFFF
V9_TEMPLATE_SET, V9_OPTIONS_TEMPLATE_SET = 0, 1
IPFIX_TEMPLATE_SET, IPFIX_OPTIONS_TEMPLATE_SET = 2, 3


@dataclass(frozen=True)
class Field:
    """One template field: information element id, length on the wire, enterprise number (IPFIX)."""
    ie: int
    length: int
    pen: int = 0


@dataclass(frozen=True)
class Varlen:
    """A variable-length value; long=True forces the 3-byte length form."""
    value: bytes
    long: bool = False


Value = Union[int, str, bytes, Varlen, None]


@dataclass
class Template:
    """A (data or options) template.  For options templates, the first scope_count fields are the scope."""
    template_id: int
    fields: list[Field]
    scope_count: int = 0
    options: bool = False

    def __post_init__(self) -> None:
        if self.scope_count:
            self.options = True

    @property
    def record_length(self) -> int:
        """Length of one record; -1 when the template has variable-length fields."""
        if any(f.length == VARLEN for f in self.fields):
            return -1
        return sum(f.length for f in self.fields)


# -- values -------------------------------------------------------------------

def encode_value(value: Value, length: int) -> bytes:
    """Encode one field value in `length` bytes (or, for VARLEN, with its length prefix)."""
    if length == VARLEN:
        long = False
        if isinstance(value, Varlen):
            value, long = value.value, value.long
        raw = b"" if value is None else (value.encode() if isinstance(value, str) else bytes(value))
        if long or len(raw) >= 255:
            return b"\xff" + struct.pack(">H", len(raw)) + raw
        return bytes([len(raw)]) + raw
    if value is None:
        return bytes(length)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return (value % (1 << (8 * length))).to_bytes(length, "big") if length else b""
    if isinstance(value, str):
        raw = address_bytes(value)
    else:
        raw = bytes(value)
    return raw[:length].ljust(length, b"\x00")


def address_bytes(text: str) -> bytes:
    """'10.0.0.1' → 4 bytes, '2001:db8::1' → 16 bytes, '00:11:22:33:44:55' → 6 bytes."""
    if text.count(":") == 5 and all(len(p) == 2 for p in text.split(":")):
        return bytes(int(p, 16) for p in text.split(":"))
    return ipaddress.ip_address(text).packed


def encode_record(template: Template, values: Sequence[Value]) -> bytes:
    if len(values) != len(template.fields):
        raise ValueError(f"template {template.template_id} has {len(template.fields)} fields, got {len(values)} values")
    return b"".join(encode_value(v, f.length) for f, v in zip(template.fields, values))


def _pad(body: bytes, align: int) -> bytes:
    return body + bytes(-len(body) % align) if align else body


def _set(set_id: int, body: bytes) -> bytes:
    return struct.pack(">HH", set_id, 4 + len(body)) + body


# -- sets ---------------------------------------------------------------------

def template_set(version: int, templates: Iterable[Template], pad_to: int = 0) -> bytes:
    """A template set (v9 id 0 / IPFIX id 2) holding the given non-options templates."""
    body = b""
    for t in templates:
        body += struct.pack(">HH", t.template_id, len(t.fields))
        for f in t.fields:
            body += _field_spec(version, f)
    return _set(V9_TEMPLATE_SET if version == 9 else IPFIX_TEMPLATE_SET, _pad(body, pad_to))


def options_template_set(version: int, templates: Iterable[Template], pad_to: int = 0) -> bytes:
    """An options template set (v9 id 1 / IPFIX id 3).

    v9 scope fields are (scope type, length): 1 system, 2 interface, 3 line card, 4 cache, 5 template.
    """
    body = b""
    for t in templates:
        scope, rest = t.fields[:t.scope_count], t.fields[t.scope_count:]
        if version == 9:
            body += struct.pack(">HHH", t.template_id, 4 * len(scope), 4 * len(rest))
            body += b"".join(struct.pack(">HH", f.ie, f.length) for f in t.fields)
        else:
            body += struct.pack(">HHH", t.template_id, len(t.fields), t.scope_count)
            body += b"".join(_field_spec(10, f) for f in t.fields)
    if version == 9 and not pad_to:
        pad_to = 4
    return _set(V9_OPTIONS_TEMPLATE_SET if version == 9 else IPFIX_OPTIONS_TEMPLATE_SET, _pad(body, pad_to))


def withdrawal_set(template_ids: Iterable[int], options: bool = False) -> bytes:
    """IPFIX template withdrawal: template records with field count 0."""
    body = b"".join(struct.pack(">HH", tid, 0) for tid in template_ids)
    return _set(IPFIX_OPTIONS_TEMPLATE_SET if options else IPFIX_TEMPLATE_SET, body)


def _field_spec(version: int, f: Field) -> bytes:
    if f.pen and version == 10:
        return struct.pack(">HHI", f.ie | 0x8000, f.length, f.pen)
    return struct.pack(">HH", f.ie, f.length)


def data_set(template: Template, records: Iterable[Sequence[Value]], pad_to: int = 0,
             padding: int = 0) -> bytes:
    """A data set of records for `template`; pad_to aligns the set body, padding adds that many zero bytes."""
    body = b"".join(encode_record(template, r) for r in records)
    return _set(template.template_id, _pad(body, pad_to) + bytes(padding))


def raw_set(set_id: int, body: bytes, length: int | None = None) -> bytes:
    """A set with an arbitrary body and (possibly lying) length field: for malformed-input tests."""
    return struct.pack(">HH", set_id, 4 + len(body) if length is None else length) + body


# -- packets --------------------------------------------------------------------

def v9_packet(sets: Sequence[bytes], *, sys_uptime_ms: int = 0, unix_secs: int = 0, sequence: int = 0,
              source_id: int = 0, count: int | None = None) -> bytes:
    """A NetFlow v9 packet; count defaults to the number of sets (nfacctd walks at most `count` flowsets)."""
    n = len(sets) if count is None else count
    return struct.pack(">HHIIII", 9, n, sys_uptime_ms & 0xFFFFFFFF, unix_secs, sequence & 0xFFFFFFFF,
                       source_id) + b"".join(sets)


def ipfix_message(sets: Sequence[bytes], *, export_time: int = 0, sequence: int = 0,
                  domain_id: int = 0, length: int | None = None) -> bytes:
    body = b"".join(sets)
    n = 16 + len(body) if length is None else length
    return struct.pack(">HHIII", 10, n, export_time, sequence & 0xFFFFFFFF, domain_id) + body


@dataclass
class V5Record:
    src_addr: str = "0.0.0.0"
    dst_addr: str = "0.0.0.0"
    next_hop: str = "0.0.0.0"
    input: int = 0
    output: int = 0
    packets: int = 0
    octets: int = 0
    first: int = 0              # sysUptime ms at flow start
    last: int = 0
    src_port: int = 0
    dst_port: int = 0
    tcp_flags: int = 0
    proto: int = 0
    tos: int = 0
    src_as: int = 0
    dst_as: int = 0
    src_mask: int = 0
    dst_mask: int = 0

    def encode(self) -> bytes:
        return struct.pack(">4s4s4sHHIIIIHHBBBBHHBBH", address_bytes(self.src_addr), address_bytes(self.dst_addr),
                           address_bytes(self.next_hop), self.input, self.output, self.packets, self.octets,
                           self.first, self.last, self.src_port, self.dst_port, 0, self.tcp_flags, self.proto,
                           self.tos, self.src_as, self.dst_as, self.src_mask, self.dst_mask, 0)


def v5_packet(records: Sequence[V5Record], *, sys_uptime_ms: int = 0, unix_secs: int = 0, unix_nsecs: int = 0,
              flow_sequence: int = 0, engine_type: int = 0, engine_id: int = 0, sampling_interval: int = 0,
              sampling_mode: int = 0, count: int | None = None) -> bytes:
    """A NetFlow v5 packet (24-byte header + 48-byte records)."""
    n = len(records) if count is None else count
    sampling = ((sampling_mode & 0x3) << 14) | (sampling_interval & 0x3FFF)
    header = struct.pack(">HHIIIIBBH", 5, n, sys_uptime_ms & 0xFFFFFFFF, unix_secs, unix_nsecs,
                         flow_sequence & 0xFFFFFFFF, engine_type, engine_id, sampling)
    return header + b"".join(r.encode() for r in records)


def v1_packet(records: Sequence[V5Record], *, sys_uptime_ms: int = 0, unix_secs: int = 0,
              unix_nsecs: int = 0) -> bytes:
    """A NetFlow v1 packet (16-byte header + 48-byte records; no AS/mask fields)."""
    header = struct.pack(">HHIII", 1, len(records), sys_uptime_ms & 0xFFFFFFFF, unix_secs, unix_nsecs)
    body = b"".join(
        struct.pack(">4s4s4sHHIIIIHHHBBBBHI", address_bytes(r.src_addr), address_bytes(r.dst_addr),
                    address_bytes(r.next_hop), r.input, r.output, r.packets, r.octets, r.first, r.last,
                    r.src_port, r.dst_port, 0, r.proto, r.tos, r.tcp_flags, 0, 0, 0)
        for r in records)
    return header + body


# -- convenience -----------------------------------------------------------------

@dataclass
class Exporter:
    """Keeps per-exporter sequence numbers so that a test can emit gap-free streams."""
    version: int = 10
    domain_id: int = 0
    sequence: int = 0
    unix_secs: int = 1_700_000_000
    sys_uptime_ms: int = 3_600_000
    records_sent: int = field(default=0)

    def packet(self, sets: Sequence[bytes], data_records: int = 0) -> bytes:
        """One v9 packet or IPFIX message; data_records advances the IPFIX sequence."""
        if self.version == 9:
            pkt = v9_packet(sets, sys_uptime_ms=self.sys_uptime_ms, unix_secs=self.unix_secs,
                            sequence=self.sequence, source_id=self.domain_id)
            self.sequence += 1
        else:
            pkt = ipfix_message(sets, export_time=self.unix_secs, sequence=self.sequence,
                                domain_id=self.domain_id)
            self.sequence += data_records
        return pkt
