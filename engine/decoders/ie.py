"""The information-element table (IANA IE id → canonical record field) and the conversion of records.

The choices follow what nfacctd 1.7.7 reports for the same packets (each was
checked by running nfacctd on crafted packets):

- 56/80 (source/destinationMacAddress) fill src/dst mac; 81/57 (post MACs) only
  when the template lacks 56/80.
- vlan, with 58 vlanId, 59 postVlanId, 243 dot1qVlanId, 254 postDot1qVlanId:
  flowDirection (61) ingress: 58 > 243; egress: 59 > 254; another direction: 0;
  no direction field: 58 > 59 > 243 > 254.  In IPFIX a zero 58 (59) falls back to 243 (254).
- 128 (bgpNextAdjacentAsNumber) → peer_dst_as, 129 (bgpPrevAdjacentAsNumber) → peer_src_as.
- peer_dst_ip: 18 (bgpNextHopIPv4Address) > 47 (mplsTopLabelIPv4Address) > 63
  (bgpNextHopIPv6Address), by presence in the template.  ip_next_hop: 15 > 62.
- 32/139 (ICMP type/code) are NOT copied into dst_port: nfacctd leaves ports as 7/11 give them.
- bytes/packets come from 1/2; when a template lacks them, from 85/86 (total counts),
  else from 23/24 (post counts) — nfacctd does this fallback.  231/232/298/299 are not used.
  Counters of any width 1-8 are read (nfacctd reads only 4- and 8-byte counters).
- The address family comes from 60 (ipVersion) when present, else IPv4 when the
  template has 8 and this record's IPv4 source is non-zero, else IPv6 when the
  template has 27, else IPv4 when it has 8; with none of these the record has no
  L3 family (family 0, etype 0; nfacctd drops such records, we keep them).
- Masks (9/13 vs 29/30) and addresses (8/12 vs 27/28) are taken for the record's family.
- When an IE occurs twice in a template the last occurrence is used (templates.py).
- Enterprise-specific fields are never mapped (nfacctd ignores them too).
- Sampling fields are read with nfacctd's widths: 34, 305, 306 only as 4 bytes, 50 as 1-4.

Where we deliberately differ from nfacctd 1.7.7:
- tcpControlBits (6) of 2 bytes keeps its low 8 bits (nfacctd reports 0).
- Counters (1, 2, …) of any width 1-8 (nfacctd: only 4 or 8 bytes, else 0).
- 154-157 (NTP µs/ns timestamps) are used, after the forms nfacctd knows (it ignores them).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..schema import IPV4_MAPPED_PREFIX, RECORD_DTYPE


@dataclass(frozen=True)
class IeSpec:
    ie: int
    name: str          # IANA name, for messages
    kind: str          # how the value is read: uint, ipv4, ipv6, mac
    column: str        # the RECORD_DTYPE column it feeds, or a role ("time:…", "sampling:…", "family:…")
    widths: tuple = ()  # accepted widths in bytes (empty: any width 1-8 for uint)


# Plain copies into one column; the order here is irrelevant (each column has one IE).
_PLAIN = [
    IeSpec(1, "octetDeltaCount", "uint", "bytes"),
    IeSpec(2, "packetDeltaCount", "uint", "packets"),
    IeSpec(3, "deltaFlowCount", "uint", "flows"),
    IeSpec(4, "protocolIdentifier", "uint", "proto"),
    IeSpec(5, "ipClassOfService", "uint", "tos"),
    IeSpec(6, "tcpControlBits", "uint", "tcp_flags"),        # 1 or 2 bytes: low 8 bits kept
    IeSpec(7, "sourceTransportPort", "uint", "src_port"),
    IeSpec(11, "destinationTransportPort", "uint", "dst_port"),
    IeSpec(10, "ingressInterface", "uint", "in_iface"),
    IeSpec(14, "egressInterface", "uint", "out_iface"),
    IeSpec(16, "bgpSourceAsNumber", "uint", "src_as"),
    IeSpec(17, "bgpDestinationAsNumber", "uint", "dst_as"),
    IeSpec(128, "bgpNextAdjacentAsNumber", "uint", "peer_dst_as"),
    IeSpec(129, "bgpPrevAdjacentAsNumber", "uint", "peer_src_as"),
    IeSpec(61, "flowDirection", "uint", "direction"),
    IeSpec(256, "ethernetType", "uint", "etype"),
]

# Values that need a per-record choice (family, fallbacks) or a computation.
_ROLES = [
    IeSpec(56, "sourceMacAddress", "mac", "mac:src56", (6,)),
    IeSpec(81, "postSourceMacAddress", "mac", "mac:src81", (6,)),
    IeSpec(80, "destinationMacAddress", "mac", "mac:dst80", (6,)),
    IeSpec(57, "postDestinationMacAddress", "mac", "mac:dst57", (6,)),
    IeSpec(8, "sourceIPv4Address", "ipv4", "addr:src4", (4,)),
    IeSpec(12, "destinationIPv4Address", "ipv4", "addr:dst4", (4,)),
    IeSpec(27, "sourceIPv6Address", "ipv6", "addr:src6", (16,)),
    IeSpec(28, "destinationIPv6Address", "ipv6", "addr:dst6", (16,)),
    IeSpec(9, "sourceIPv4PrefixLength", "uint", "mask:src4"),
    IeSpec(13, "destinationIPv4PrefixLength", "uint", "mask:dst4"),
    IeSpec(29, "sourceIPv6PrefixLength", "uint", "mask:src6"),
    IeSpec(30, "destinationIPv6PrefixLength", "uint", "mask:dst6"),
    IeSpec(15, "ipNextHopIPv4Address", "ipv4", "nexthop:4", (4,)),
    IeSpec(62, "ipNextHopIPv6Address", "ipv6", "nexthop:6", (16,)),
    IeSpec(18, "bgpNextHopIPv4Address", "ipv4", "bgpnexthop:4", (4,)),
    IeSpec(63, "bgpNextHopIPv6Address", "ipv6", "bgpnexthop:6", (16,)),
    IeSpec(47, "mplsTopLabelIPv4Address", "ipv4", "bgpnexthop:mpls4", (4,)),
    IeSpec(60, "ipVersion", "uint", "family:ipversion"),
    IeSpec(252, "ingressPhysicalInterface", "uint", "fallback:in_iface252"),
    IeSpec(253, "egressPhysicalInterface", "uint", "fallback:out_iface253"),
    IeSpec(85, "octetTotalCount", "uint", "fallback:bytes85"),
    IeSpec(23, "postOctetDeltaCount", "uint", "fallback:bytes23"),
    IeSpec(86, "packetTotalCount", "uint", "fallback:packets86"),
    IeSpec(24, "postPacketDeltaCount", "uint", "fallback:packets24"),
    IeSpec(58, "vlanId", "uint", "vlan:58"),
    IeSpec(243, "dot1qVlanId", "uint", "vlan:243"),
    IeSpec(59, "postVlanId", "uint", "vlan:59"),
    IeSpec(254, "postDot1qVlanId", "uint", "vlan:254"),
    IeSpec(22, "flowStartSysUpTime", "uint", "time:start_uptime"),
    IeSpec(21, "flowEndSysUpTime", "uint", "time:end_uptime"),
    IeSpec(150, "flowStartSeconds", "uint", "time:start_s"),
    IeSpec(151, "flowEndSeconds", "uint", "time:end_s"),
    IeSpec(152, "flowStartMilliseconds", "uint", "time:start_ms"),
    IeSpec(153, "flowEndMilliseconds", "uint", "time:end_ms"),
    IeSpec(154, "flowStartMicroseconds", "uint", "time:start_ntp_us"),
    IeSpec(155, "flowEndMicroseconds", "uint", "time:end_ntp_us"),
    IeSpec(156, "flowStartNanoseconds", "uint", "time:start_ntp_ns"),
    IeSpec(157, "flowEndNanoseconds", "uint", "time:end_ntp_ns"),
    IeSpec(158, "flowStartDeltaMicroseconds", "uint", "time:start_delta_us"),
    IeSpec(159, "flowEndDeltaMicroseconds", "uint", "time:end_delta_us"),
    IeSpec(160, "systemInitTimeMilliseconds", "uint", "time:sysinit_ms"),
    IeSpec(323, "observationTimeMilliseconds", "uint", "time:start_observation_ms"),
    IeSpec(34, "samplingInterval", "uint", "sampling:interval", (4,)),            # widths as nfacctd
    IeSpec(50, "samplerRandomInterval", "uint", "sampling:random_interval", (1, 2, 3, 4)),
    IeSpec(305, "samplingPacketInterval", "uint", "sampling:packet_interval", (4,)),
    IeSpec(306, "samplingPacketSpace", "uint", "sampling:packet_space", (4,)),
    IeSpec(48, "samplerId", "uint", "sampling:sampler_id"),
    IeSpec(302, "selectorId", "uint", "sampling:selector_id"),          # a sampler id only as 8 bytes
]

IE_TABLE: dict[int, IeSpec] = {s.ie: s for s in _PLAIN + _ROLES}

# Where IPFIX NTP timestamps start (1900-01-01) relative to the Unix epoch, in seconds.
NTP_EPOCH_OFFSET = 2_208_988_800


def spec_for(ie: int, pen: int, length: int) -> IeSpec | None:
    """The mapping of one template field, or None when it is not used (enterprise, odd width, varlen)."""
    if pen:
        return None
    spec = IE_TABLE.get(ie)
    if spec is None:
        return None
    if spec.widths:
        return spec if length in spec.widths else None
    return spec if 1 <= length <= 8 else None


# -- conversion helpers shared by the decoders ---------------------------------------------

_MAPPED = np.frombuffer(IPV4_MAPPED_PREFIX, dtype=np.uint8)
CHUNK_RECORDS = 2048        # RecordPlan.fill writes this many records at a time (≈ 0.5 MB: stays in cache)
VALUE_RECORDS = 16384       # … and computes their values this many records at a time
PROTO_BLOCK = 64            # prototype records copied at once


def uint_values(col: np.ndarray) -> np.ndarray:
    """A big-endian unsigned column as uint64: either a '>uN' field or an (n, w) byte array, w <= 8."""
    if col.ndim == 1:
        return col.astype(np.uint64)
    n, w = col.shape
    if w == 0:
        return np.zeros(n, dtype=np.uint64)
    padded = np.zeros((n, 8), dtype=np.uint8)
    padded[:, 8 - w:] = col
    return padded.view(">u8").reshape(n).astype(np.uint64)


def ipv4_mapped(col: np.ndarray) -> np.ndarray:
    """(n, 4) IPv4 bytes → (n, 16) IPv4-mapped IPv6 bytes."""
    out = np.empty((len(col), 16), dtype=np.uint8)
    out[:, :12] = _MAPPED
    out[:, 12:] = col
    return out


# -- fast column writes into RECORD_DTYPE ------------------------------------------------------
# Writing a sub-array column (an address's bytes) goes through numpy's slow per-byte loop; a view of
# the record as one plain integer at the right offset copies 4 or 8 bytes per record instead.

_VIEW_DTYPES: dict = {}


def record_view(out: np.ndarray, column: str, at: int, fmt: str) -> np.ndarray:
    """The bytes at `at` within `column` of every record of `out`, viewed as one `fmt` value per record."""
    key = (out.dtype, column, at, fmt)
    dt = _VIEW_DTYPES.get(key)
    if dt is None:
        dt = _VIEW_DTYPES[key] = np.dtype({"names": ["v"], "formats": [fmt],
                                           "offsets": [out.dtype.fields[column][1] + at],
                                           "itemsize": out.dtype.itemsize})
    return out.view(dt)["v"]


def field_view(records: np.ndarray, offset: int, fmt: np.dtype) -> np.ndarray:
    """The bytes at `offset` of every record of a contiguous array, as one `fmt` value per record."""
    return np.ndarray((len(records),), fmt, records, offset, (records.itemsize,))


U2, U4, U8, I8 = (np.dtype(f) for f in ("<u2", "<u4", "<u8", "<i8"))
_BYTES = np.dtype(np.uint8)


def raw_u32(col: np.ndarray) -> np.ndarray:
    """4 address bytes per record ((n, 4) uint8, maybe a strided field) as one native uint32 holding those bytes."""
    return np.ascontiguousarray(col).view(np.uint32).reshape(len(col))


def set_ipv4_mapped(out: np.ndarray, column: str, value: np.ndarray, rows=None) -> None:
    """column = ::ffff:value, value (n, 4) bytes; only `rows` (a mask) when given."""
    if rows is None:
        record_view(out, column, 10, "u2")[...] = 0xFFFF
        record_view(out, column, 12, "u4")[...] = raw_u32(value)
    else:
        out[column][rows] = ipv4_mapped(value[rows])


def fill_rows(out: np.ndarray, block: np.ndarray) -> None:
    """Every record of a contiguous `out` = the record repeated in `block` ((k, itemsize) bytes: k copies)."""
    n = len(out)
    k, size = block.shape
    whole = n // k
    if whole:
        np.ndarray((whole, k, size), _BYTES, out)[...] = block
    if n > whole * k:
        np.ndarray((n - whole * k, size), _BYTES, out, whole * k * size)[...] = block[:n - whole * k]


# -- values records take from their packet ----------------------------------------------------

class PerSet:
    """Values of each set's packet (by name: an array with one value per set, or one int for all), given
    per record on demand: a Python int when every set has the same value, else repeated by the sets'
    record counts."""

    def __init__(self, values: dict, counts: np.ndarray) -> None:
        self.values, self.counts = values, counts
        self.window = slice(None)                    # the records being converted (RecordPlan.fill)
        self._scalars: dict = {}
        self._records: dict = {}

    def scalar(self, name: str):
        """The value every set shares, or None."""
        if name not in self._scalars:
            v = self.values[name]
            if isinstance(v, int):
                self._scalars[name] = v
            else:
                self._scalars[name] = int(v[0]) if len(v) == 1 or (v == v[0]).all() else None
        return self._scalars[name]

    def vary(self, name: str, values: np.ndarray) -> None:
        """Per-set values known not to be all the same (no need to compare them)."""
        self.values[name] = values
        self._scalars[name] = None

    def records(self, name: str, dtype=None):
        s = self.scalar(name)
        if s is not None:
            return s
        r = self._records.get((name, dtype))
        if r is None:
            v = self.values[name]
            r = self._records[(name, dtype)] = np.repeat(v if dtype is None else v.astype(dtype), self.counts)
        return r[self.window]


# -- wire records → canonical records: a plan per template ---------------------------------------

_PLAIN_COLUMNS = {s.column: s for s in _PLAIN}
_FALLBACKS = (("bytes", ("fallback:bytes85", "fallback:bytes23")),
              ("packets", ("fallback:packets86", "fallback:packets24")),
              ("in_iface", ("fallback:in_iface252",)), ("out_iface", ("fallback:out_iface253",)))
_FIRST_ROLE = (("peer_dst_ip", ("bgpnexthop:4", "bgpnexthop:mpls4", "bgpnexthop:6")),
               ("ip_next_hop", ("nexthop:4", "nexthop:6")),
               ("src_mac", ("mac:src56", "mac:src81")), ("dst_mac", ("mac:dst80", "mac:dst57")))


def _offset(column: str) -> int:
    return RECORD_DTYPE.fields[column][1]


class RecordPlan:
    """How records viewed as one compiled template's wire dtype become RECORD_DTYPE records (vectorised).

    Decided once per (template, version, wanted fields, time_secs): the constants of every record (a
    prototype record, copied into all of them first: it also zeroes what nothing writes), and the
    sources of the other fields: wire fields, values computed from them (times), values records take
    from their packet.  A source that is one value for every record goes into the prototype; the
    others are written in chunks of CHUNK_RECORDS records, which stay in cache meanwhile (one pass per
    field).  The choices follow nfacctd 1.7.7 (module docstring).
    """

    def __init__(self, compiled, version: int, wanted, time_secs: bool) -> None:
        cols = compiled.columns
        self.wire_dtype = compiled.wire_dtype
        self.proto = np.zeros(1, dtype=RECORD_DTYPE)
        # (target: a column name or (byte offset, dtype), value: function(wire, per_set, *args), *args)
        self.sources: list[tuple] = []
        self.after: list[tuple] = []              # (function(out, wire, *args), *args) on the whole records
        self.proto["export_proto_version"] = version

        def want(column: str) -> bool:
            return wanted is None or column in wanted

        for column in _PLAIN_COLUMNS:
            if column in cols and (want(column) or (column == "direction" and want("vlan"))):
                self._copy(column, cols[column])
        if "flows" not in cols:
            self.proto["flows"] = 1
        for column, fallbacks in _FALLBACKS:
            if column not in cols and want(column):
                role = next((r for r in fallbacks if r in cols), None)
                if role is not None:
                    self.sources.append((column, _uint_field, cols[role][0]))
        self._from_packet("domain_id", "domain")
        self._from_packet((_offset("peer_src_ip"), U8), "peer_lo")
        self._from_packet((_offset("peer_src_ip") + 8, U8), "peer_hi")
        if want("ts_arrival") or version in (1, 5):                 # v1 / v5: as their decoder always did
            self._from_packet("ts_arrival", "arrival_us")
        if version == 5:                                           # from the header (netflow_v5)
            self._from_packet("sampling_rate", "sampling")

        has8, has27 = "addr:src4" in cols, "addr:src6" in cols
        if (has8 and has27) or "family:ipversion" in cols:       # the family is decided per record
            self.after.append((_mixed_families, cols, wanted))
        else:                                                     # the template alone decides
            l3 = 4 if has8 else (6 if has27 else 0)
            self.proto["family"] = l3
            if "etype" not in cols:
                self.proto["etype"] = {4: 0x0800, 6: 0x86DD, 0: 0}[l3]
            for side in ("src", "dst") if l3 else ():
                for column, role in ((f"{side}_host", f"addr:{side}{l3}"), (f"{side}_mask", f"mask:{side}{l3}")):
                    if want(column) and role in cols:
                        self._copy(column, cols[role])
        for column, roles in _FIRST_ROLE:
            role = next((r for r in roles if r in cols), None) if want(column) else None
            if role is not None:
                self._copy(column, cols[role])
        if want("vlan"):
            self.after.append((_vlan, cols, version))
        for which in ("start", "end"):
            if want(f"ts_{which}"):
                source = _time_source(which, cols, version)
                if source[0] != "zero":
                    self.sources.append((f"ts_{which}", _flow_time, source, time_secs))
        self.proto_bytes = self.proto.tobytes()
        # where a source that is one int for every record goes in the prototype: (byte offset, struct format)
        self.packers = [_packer(target) for target, *_ in self.sources]

    def _from_packet(self, target, name: str) -> None:
        self.sources.append((target, _packet_value, name))

    def _copy(self, column: str, col: tuple) -> None:
        """One wire field into one record column, by its kind."""
        name, width, spec = col
        at = self.wire_dtype.fields[name][1]
        if spec.kind == "ipv4":                       # ::ffff: in the prototype, the 4 bytes as one word
            np.ndarray((1,), U2, self.proto, _offset(column) + 10)[0] = 0xFFFF
            self._copy_word(_offset(column) + 12, at, U4)
        elif spec.kind == "ipv6":
            self._copy_word(_offset(column), at, U8)
            self._copy_word(_offset(column) + 8, at + 8, U8)
        elif spec.kind == "mac" or width in (1, 2, 4, 8):
            # '>uN' fields and MAC bytes are assigned as they are (casting keeps the low bits,
            # so a 2-byte tcpControlBits keeps its low 8 bits)
            self.sources.append((column, _field, name))
        else:                                          # an odd width: through uint64
            self.sources.append((column, _uint_field, name))

    def _copy_word(self, out_offset: int, wire_offset: int, fmt: np.dtype) -> None:
        """`fmt`-sized bytes of the wire records into the records, as they are.  Unaligned wire words are
        read byte-swapped and written swapped back: numpy's swapping loops load unaligned words fast,
        its plain copy does not."""
        if wire_offset % fmt.itemsize or self.wire_dtype.itemsize % fmt.itemsize:
            self.sources.append(((out_offset, fmt.newbyteorder()), _swapped_word, wire_offset, fmt))
        else:
            self.sources.append(((out_offset, fmt), _word, wire_offset, fmt))

    def fill(self, wire: np.ndarray, per_set: PerSet) -> np.ndarray:
        """The records of `wire` (contiguous), with what they take from their packets.

        Values are computed VALUE_RECORDS records at a time and written CHUNK_RECORDS at a time."""
        n = len(wire)
        out = np.empty(n, dtype=RECORD_DTYPE)
        proto = bytearray(self.proto_bytes)
        block = None
        for a0 in range(0, n, VALUE_RECORDS):
            b0 = min(n, a0 + VALUE_RECORDS)
            per_set.window = slice(a0, b0)
            w = wire if b0 - a0 == n else wire[a0:b0]
            writes = []
            for (target, value, *args), (offset, fmt) in zip(self.sources, self.packers):
                v = value(w, per_set, *args)
                if type(v) is not int:
                    writes.append((target, v))
                elif block is None:                  # the same for every record: into the prototype
                    struct.pack_into(fmt, proto, offset, v)
            if block is None:
                k = min(n, PROTO_BLOCK)
                block = np.frombuffer(bytes(proto) * k, dtype=np.uint8).reshape(k, len(proto))
            for a in range(a0, b0, CHUNK_RECORDS):
                b = min(b0, a + CHUNK_RECORDS)
                chunk = out if b - a == n else out[a:b]
                fill_rows(chunk, block)
                for target, v in writes:
                    if b - a < len(v):
                        v = v[a - a0:b - a0]
                    if type(target) is str:
                        chunk[target] = v
                    else:
                        field_view(chunk, *target)[...] = v
        per_set.window = slice(None)
        for step in self.after:
            step[0](out, wire, *step[1:])
        return out


_STRUCTS = {np.dtype(t).str: f for t, f in (("u1", "B"), ("<u2", "<H"), ("<u4", "<I"), ("<u8", "<Q"), ("<i8", "<q"))}


def _packer(target) -> tuple:
    """(byte offset, struct format) that writes an int into a record at a source's target (None: never an int)."""
    offset, dtype = target if type(target) is tuple else (RECORD_DTYPE.fields[target][1],
                                                          RECORD_DTYPE.fields[target][0])
    return offset, _STRUCTS.get(dtype.str)


def record_plan(compiled, version: int, wanted, time_secs: bool) -> RecordPlan:
    """The compiled template's plan for these settings (made once, kept on the template)."""
    key = (version, wanted, time_secs)
    plan = compiled.plans.get(key)
    if plan is None:
        if len(compiled.plans) >= 16:
            compiled.plans.clear()
        plan = compiled.plans[key] = RecordPlan(compiled, version, wanted, time_secs)
    return plan


# -- the sources of a plan (whole arrays of values, or one int for every record) ----------------

def _field(wire, per_set, name: str) -> np.ndarray:
    return wire[name]


def _uint_field(wire, per_set, name: str) -> np.ndarray:
    return uint_values(wire[name])


def _packet_value(wire, per_set: PerSet, name: str):
    return per_set.records(name)


def _word(wire, per_set, offset: int, fmt: np.dtype) -> np.ndarray:
    return field_view(wire, offset, fmt)


def _swapped_word(wire, per_set, offset: int, fmt: np.dtype) -> np.ndarray:
    """The word's bytes byte-swapped (written through a swapped view: the bytes come back as they were)."""
    return field_view(wire, offset, fmt.newbyteorder()).astype(fmt)


def _vlan(out, wire, cols, version: int) -> None:
    _fill_vlan(out, cols, lambda role: uint_values(wire[cols[role][0]]), version)


def _mixed_families(out, wire, cols, wanted) -> None:
    """Family, addresses and masks when records of one template differ in family (ipVersion, or both
    IPv4 and IPv6 addresses in the template)."""
    n = len(out)

    def raw(role):
        return wire[cols[role][0]]

    def uint(role):
        return uint_values(raw(role))

    l3 = _l3_family(cols, raw, uint, n)
    has_v4 = "addr:src4" in cols or "addr:dst4" in cols
    has_v6 = "addr:src6" in cols or "addr:dst6" in cols
    if np.isscalar(l3):
        l3 = np.full(n, l3)
    all4, all6 = bool((l3 == 4).all()), bool((l3 == 6).all())
    if all4 or all6:                                  # one family: scalar writes, no masks
        out["family"] = (4 if has_v4 else 0) if all4 else (6 if has_v6 else 0)
        if "etype" not in cols:
            out["etype"] = 0x0800 if all4 else 0x86DD
        is4 = is6 = None
    else:
        is4, is6 = l3 == 4, l3 == 6
        out["family"] = np.where(is4, 4 if has_v4 else 0, np.where(is6, 6 if has_v6 else 0, 0))
        if "etype" not in cols:
            out["etype"] = np.where(is4, 0x0800, np.where(is6, 0x86DD, 0))
    for side in ("src", "dst"):
        for column, role in ((f"{side}_host", "addr"), (f"{side}_mask", "mask")):
            if wanted is None or column in wanted:
                _fill_by_family(out, column, cols, raw, f"{role}:{side}4", f"{role}:{side}6", is4, is6, all4, all6)


def _fill_by_family(out: np.ndarray, name: str, cols, raw, role4: str, role6: str, is4, is6, all4: bool,
                    all6: bool) -> None:
    """Copy the IPv4 role into IPv4 records and the IPv6 role into IPv6 records (fast when uniform)."""
    column = out[name]
    for role, rows, every in ((role4, is4, all4), (role6, is6, all6)):
        if role not in cols or not (every or (rows is not None and rows.any())):
            continue
        value = raw(role)
        if cols[role][2].kind == "ipv4":
            if every:
                set_ipv4_mapped(out, name, value)
                continue
            value = ipv4_mapped(value)
        elif value.ndim == 2 and cols[role][2].kind == "uint":
            value = uint_values(value)
        if every:
            column[...] = value
        else:
            column[rows] = value[rows]


def _fill_vlan(out: np.ndarray, cols, uint, version: int) -> None:
    """nfacctd's VLAN choice among 58/243 (ingress) and 59/254 (egress); see the module docstring."""
    def pick(primary: str, fallback: str):
        if primary in cols:
            v = uint(primary)
            if version == 10 and fallback in cols:
                v = np.where(v == 0, uint(fallback), v)
            return v
        return uint(fallback) if fallback in cols else None

    in_vlan, out_vlan = pick("vlan:58", "vlan:243"), pick("vlan:59", "vlan:254")
    if "direction" in cols:
        zero = np.zeros(len(out), dtype=np.uint64)
        direction = out["direction"]
        out["vlan"] = np.where(direction == 0, zero if in_vlan is None else in_vlan,
                               np.where(direction == 1, zero if out_vlan is None else out_vlan, zero))
        return
    for role in ("vlan:58", "vlan:59", "vlan:243", "vlan:254"):
        if role in cols:
            out["vlan"] = in_vlan if role in ("vlan:58", "vlan:243") else out_vlan
            return


def _l3_family(cols, raw, uint, n: int) -> np.ndarray | int:
    """4, 6 or 0 per record (an int when the template alone decides): ipVersion if given, else from the
    address fields (nfacctd's choice)."""
    has8, has27 = "addr:src4" in cols, "addr:src6" in cols
    if has8 and has27:
        default = np.where(raw("addr:src4").any(axis=1), 4, 6)
    else:
        default = 4 if has8 else (6 if has27 else 0)
        if "family:ipversion" not in cols:
            return default
    if "family:ipversion" in cols:
        v = uint("family:ipversion")
        return np.where(v == 4, 4, np.where(v == 6, 6, default))
    return default


def _time_source(which: str, cols, version: int) -> tuple:
    """Where flow start or end comes from; precedence as nfacctd 1.7.7 (then the NTP forms it ignores).

    start: 22 (uptime; IPFIX needs 160) > 152 > 323 > 150 > 158 (IPFIX) > 154/156 > export time.
    end:   21 (uptime; IPFIX needs 160) > 153 > 151 > 159 (IPFIX) > 155/157 > 0.
    """
    if f"time:{which}_uptime" in cols:
        if version != 10:                             # v9 (and v5 / v1 records): the header's uptime
            return ("uptime", cols[f"time:{which}_uptime"][0])
        if "time:sysinit_ms" in cols:                 # IPFIX: relative to systemInitTimeMilliseconds
            return ("sysinit", cols[f"time:{which}_uptime"][0], cols["time:sysinit_ms"][0])
    else:
        for role, kind in ((f"time:{which}_ms", "ms"), (f"time:{which}_observation_ms", "ms"),
                           (f"time:{which}_s", "s")):
            if role in cols:
                return (kind, cols[role][0])
        if version == 10 and f"time:{which}_delta_us" in cols:
            return ("delta_us", cols[f"time:{which}_delta_us"][0])
        for role in (f"time:{which}_ntp_us", f"time:{which}_ntp_ns"):
            if role in cols:
                return ("ntp", cols[role][0])
    return ("export",) if which == "start" else ("zero",)


def _flow_time(wire, per_set: PerSet, source: tuple, time_secs: bool):
    """Flow start or end, µs since epoch (an int when it is the same for every record).

    Relative to the header's sysUptime as nfacctd computes it: whole seconds, 32-bit wrap,
    seconds = (export_secs - ((uptime - at) mod 2^32) // 1000) mod 2^32; with time_secs
    (nfacctd_time_secs) uptime and `at` are taken as seconds.
    """
    kind = source[0]
    if kind == "export":
        return per_set.records("export_secs") * 1_000_000
    field = wire[source[1]]
    if kind == "uptime":                              # in uint32 arithmetic: wraps as mod 2^32
        at = field.astype(np.uint32) if field.ndim == 1 else uint_values(field).astype(np.uint32)
        ago = np.subtract(per_set.records("uptime_ms", np.uint32), at)
        if not time_secs:
            ago //= 1000
        value = np.subtract(per_set.records("export_secs", np.uint32), ago).astype(np.int64)
        value *= 1_000_000
        return value
    if kind == "sysinit":
        init = uint_values(wire[source[2]]).astype(np.int64)
        return (init // 1000 + uint_values(field).astype(np.int64) // 1000) * 1_000_000
    if kind == "ms":
        return uint_values(field).astype(np.int64) * 1000
    if kind == "s":
        return uint_values(field).astype(np.int64) * 1_000_000
    if kind == "delta_us":
        return per_set.records("export_secs") * 1_000_000 - uint_values(field).astype(np.int64)
    v = uint_values(field)                            # NTP seconds since 1900 . fraction
    secs = (v >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_OFFSET
    frac = (v & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return secs * 1_000_000 + ((frac * 1_000_000) >> 32)
