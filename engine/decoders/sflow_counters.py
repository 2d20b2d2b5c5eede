"""sFlow counter samples → the events sfacctd writes to `sfacctd_counter_file` (slow path).

Counter samples are rare (one per interface every 20-30 s) and are logged, not
aggregated, so they are decoded here one record at a time.  One CounterEvent per
counter record, as sfacctd 1.7.7 writes one line per record: generic interface
(1), Ethernet (2) and VLAN (5) counters carry their values under `sf_cnt_type`;
any other record gives a line with the sample's identifiers only.  AgentSeen marks, in datagram order,
the first datagram of each (agent, sub-agent) of a batch (sfacctd writes `log_init` for every new one,
flow-only agents included).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

GENERIC = (("ifIndex", "I"), ("ifType", "I"), ("ifSpeed", "Q"), ("ifDirection", "I"), ("ifStatus", "I"),
           ("ifInOctets", "Q"), ("ifInUcastPkts", "I"), ("ifInMulticastPkts", "I"), ("ifInBroadcastPkts", "I"),
           ("ifInDiscards", "I"), ("ifInErrors", "I"), ("ifInUnknownProtos", "I"), ("ifOutOctets", "Q"),
           ("ifOutUcastPkts", "I"), ("ifOutMulticastPkts", "I"), ("ifOutBroadcastPkts", "I"),
           ("ifOutDiscards", "I"), ("ifOutErrors", "I"), ("ifPromiscuousMode", "I"))
ETHERNET = tuple((name, "I") for name in (
    "dot3StatsAlignmentErrors", "dot3StatsFCSErrors", "dot3StatsSingleCollisionFrames",
    "dot3StatsMultipleCollisionFrames", "dot3StatsSQETestErrors", "dot3StatsDeferredTransmissions",
    "dot3StatsLateCollisions", "dot3StatsExcessiveCollisions", "dot3StatsInternalMacTransmitErrors",
    "dot3StatsCarrierSenseErrors", "dot3StatsFrameTooLongs", "dot3StatsInternalMacReceiveErrors",
    "dot3StatsSymbolErrors"))
# VLAN: wire order is vlan_id first; sfacctd prints vlan last
VLAN_WIRE = (("vlan", "I"), ("octets", "Q"), ("ucastPkts", "I"), ("multicastPkts", "I"),
             ("broadcastPkts", "I"), ("discards", "I"))
VLAN_PRINTED = ("octets", "ucastPkts", "multicastPkts", "broadcastPkts", "discards", "vlan")


def _layout(fields: tuple) -> struct.Struct:
    return struct.Struct(">" + "".join(f for _, f in fields))


RECORD_LAYOUTS = {
    1: ("sflow_cnt_generic", GENERIC, _layout(GENERIC), None),
    2: ("sflow_cnt_ethernet", ETHERNET, _layout(ETHERNET), None),
    5: ("sflow_cnt_vlan", VLAN_WIRE, _layout(VLAN_WIRE), VLAN_PRINTED),
    # sFlow v2/v4 Ethernet counters (sflow_legacy.LEGACY_ETHERNET): generic and dot3 counters on one line
    (0xFFFFF << 12) | 2: ("sflow_cnt_ethernet", GENERIC + ETHERNET, _layout(GENERIC + ETHERNET), None),
}


def _print_order(fields: tuple, printed) -> tuple[tuple, tuple]:
    """(printed keys, their positions among the unpacked values)."""
    wire = [k for k, _ in fields]
    keys = tuple(printed or wire)
    return keys, tuple(wire.index(k) for k in keys)


_PRINT_ORDER = {rtype: _print_order(fields, printed)
                for rtype, (_, fields, _, printed) in RECORD_LAYOUTS.items()}


@dataclass
class AgentSeen:
    """A datagram from this (agent, sub-agent) was decoded: the counter file's `log_init` line the first time."""
    agent: bytes            # 16 bytes, IPv4-mapped for IPv4
    sub_agent: int


@dataclass
class CounterEvent:
    """One counter record of one counter sample (a counter-file line without seq / timestamp)."""
    agent: bytes            # 16 bytes, IPv4-mapped for IPv4
    sub_agent: int
    sflow_seq: int          # datagram sequence number
    sflow_cnt_seq: int      # counter sample sequence number
    source_id_index: int
    cnt_type: str | None    # "sflow_cnt_generic", ... or None for records sfacctd does not print
    values: tuple           # ((key, value), ...) in sfacctd's order


def decode_counter_sample(body: bytes, expanded: bool, agent: bytes, sub_agent: int, dgram_seq: int
                          ) -> tuple[list[CounterEvent], int, bool]:
    """(events, unknown records, broken) for one counter sample body."""
    if expanded:
        if len(body) < 16:
            return [], 0, True
        seq, _src_type, index, nrec = struct.unpack_from(">IIII", body, 0)
        pos = 16
    else:
        if len(body) < 12:
            return [], 0, True
        seq, source_id, nrec = struct.unpack_from(">III", body, 0)
        index, pos = source_id & 0xFFFFFF, 12
    events: list[CounterEvent] = []
    unknown = 0
    for _ in range(min(nrec, 4096)):
        if pos + 8 > len(body):
            return events, unknown, True
        rtype, rlen = struct.unpack_from(">II", body, pos)
        start, pos = pos + 8, pos + 8 + rlen
        if pos > len(body):
            return events, unknown, True
        layout = RECORD_LAYOUTS.get(rtype)
        if layout is None or rlen < layout[2].size:
            unknown += layout is None
            events.append(CounterEvent(agent, sub_agent, dgram_seq, seq, index, None, ()))
            continue
        name, _fields, st, _printed = layout
        keys, positions = _PRINT_ORDER[rtype]
        values = st.unpack_from(body, start)
        events.append(CounterEvent(agent, sub_agent, dgram_seq, seq, index, name,
                                   tuple(zip(keys, [values[i] for i in positions]))))
    return events, unknown, False
