"""NetFlow v5 / v9 / IPFIX and sFlow v5 decoders: a PacketBatch in, canonical numpy records out.

    state = DecoderState()
    res = decode_batch(batch, state)       # res.records, res.learnt (to publish), res.counters
    res = decode_sflow_batch(batch, state) # res.records, res.counter_events (sfacctd_counter_file), res.counters
    recs = state.apply(messages)           # templates / sampling learnt by another shard
    state.wanted = needed_fields(cfg)      # optional projection (engine.config.fields_needed): NetFlow
                                           # decoders leave fields nobody reads zero

Pure functions of (batch, state): no sockets, no logging; malformed input is
counted per exporter (ExporterCounters) and skipped, never raised.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..schema import RECORD_DTYPE
from .batch import PacketBatch
from .messages import BusMessage
from .netflow_v5 import decode_v5_packets
from .netflow_v9 import TemplatePacketDecoder
from .state import CounterBook, DecoderState, ExporterCounters

__all__ = ["decode_batch", "decode_sflow_batch", "DECODERS", "DecoderState", "DecodeResult", "BusMessage",
           "ExporterCounters", "PacketBatch"]


@dataclass
class DecodeResult:
    records: np.ndarray                                        # RECORD_DTYPE
    learnt: list[BusMessage] = field(default_factory=list)     # to publish on the template bus
    counters: dict[bytes, ExporterCounters] = field(default_factory=dict)   # this batch only
    counter_events: list = field(default_factory=list)         # sFlow counter records (sflow_counters.CounterEvent)


def decode_batch(batch: PacketBatch, state: DecoderState) -> DecodeResult:
    """Decode every packet of a batch (v1, v5, v9, IPFIX; anything else is a decode error)."""
    counters = CounterBook()
    learnt: list[BusMessage] = []
    n = len(batch)
    if n == 0:
        return DecodeResult(np.zeros(0, dtype=RECORD_DTYPE), learnt, {})
    offsets = np.asarray(batch.offsets, dtype=np.int64)
    lengths = np.asarray(batch.lengths, dtype=np.int64)
    exporters = np.asarray(batch.exporters, dtype=np.uint8).reshape(n, 16)
    arrival = np.asarray(batch.arrival_us, dtype=np.int64)
    buf = batch.buf
    if len(buf) >= 2 and int(offsets.min()) >= 0 and int(lengths.min()) >= 2 and \
            int((offsets + lengths).max()) <= len(buf):            # every packet in the buffer, with a version
        version = np.ndarray((len(buf) - 1,), _BE16, buf, 0, (1,))[offsets]
        v0 = int(version[0])
        if v0 in (1, 5, 9, 10) and (version == v0).all():     # the usual batch: one version, no selection
            if v0 in (1, 5):
                parts = [decode_v5_packets(buf, offsets, lengths, exporters, arrival, v0, state, counters)]
            else:
                parts = TemplatePacketDecoder(state, counters, learnt).decode(
                    buf, offsets, lengths, exporters, arrival, version.astype(np.int64), only=v0)
            return DecodeResult(_join(parts), learnt, dict(counters))
    inside = offsets + lengths <= len(buf)
    inside &= (offsets | lengths) >= 0
    if not inside.all():
        lengths = np.where(inside, lengths, 0)
        offsets = np.where(inside, offsets, 0)
    version = _versions(buf, offsets, lengths)
    parts = []
    for v in (5, 1):
        sel = np.flatnonzero(version == v)
        if len(sel):
            parts.append(decode_v5_packets(buf, offsets[sel], lengths[sel], exporters[sel], arrival[sel], v,
                                           state, counters))
    sel = np.flatnonzero((version == 9) | (version == 10))
    if len(sel):
        decoder = TemplatePacketDecoder(state, counters, learnt)
        parts.extend(decoder.decode(buf, offsets[sel], lengths[sel], exporters[sel], arrival[sel], version[sel]))
    known = (version == 1) | (version == 5) | (version == 9) | (version == 10)
    for i in np.flatnonzero(~known).tolist():
        c = counters[bytes(exporters[i])]
        c.packets += 1
        c.bytes += int(lengths[i])
        c.decode_errors += 1
    return DecodeResult(_join(parts), learnt, dict(counters))


_BE16 = np.dtype(">u2")


def _versions(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The first 16-bit word of every packet (0 for packets shorter than 2 bytes)."""
    version = np.zeros(len(offsets), dtype=np.int64)
    has_version = lengths >= 2
    version[has_version] = (buf[offsets[has_version]].astype(np.int64) << 8) | buf[offsets[has_version] + 1]
    return version


def _join(parts: list) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else np.zeros(0, RECORD_DTYPE))


def decode_sflow_batch(batch: PacketBatch, state: DecoderState) -> DecodeResult:
    """Decode every sFlow datagram of a batch (v5; v2 / v4 rewritten as v5; anything else is a decode error)."""
    from .sflow import decode_sflow
    counters = CounterBook()
    n = len(batch)
    if n == 0:
        return DecodeResult(np.zeros(0, dtype=RECORD_DTYPE), [], {})
    offsets = np.asarray(batch.offsets, dtype=np.int64)
    lengths = np.asarray(batch.lengths, dtype=np.int64)
    inside = (offsets >= 0) & (lengths >= 0) & (offsets + lengths <= len(batch.buf))
    lengths = np.where(inside, lengths, 0)
    offsets = np.where(inside, offsets, 0)
    exporters = np.asarray(batch.exporters, dtype=np.uint8).reshape(n, 16)
    arrival = np.asarray(batch.arrival_us, dtype=np.int64)
    buf = batch.buf
    if len(buf) < 8:                # the walk reads whole words: give a tiny buffer room (lengths stay as sent)
        buf = np.concatenate([np.asarray(buf, np.uint8), np.zeros(8, np.uint8)])
    head = lengths >= 4
    version = np.zeros(n, np.int64)
    version[head] = ((buf[offsets[head] + 2].astype(np.int64) << 8) | buf[offsets[head] + 3]) * (
        (buf[offsets[head]] == 0) & (buf[offsets[head] + 1] == 0))
    legacy = np.flatnonzero(head & ((version == 2) | (version == 4)))
    if len(legacy):
        buf, offsets, lengths = _legacy_as_v5(buf, offsets, lengths, legacy)
    records, events = decode_sflow(buf, offsets, lengths, exporters, arrival, state, counters)
    return DecodeResult(records, [], dict(counters), events)


def _legacy_as_v5(buf, offsets, lengths, legacy):
    """sFlow v2 / v4 datagrams (slow path, sflow_legacy) rewritten as v5, appended to a copy of the buffer."""
    from .sflow_legacy import legacy_to_v5
    offsets, lengths = offsets.copy(), lengths.copy()
    extra, at = [], len(buf)
    for i in legacy.tolist():
        v5 = legacy_to_v5(buf[offsets[i]:offsets[i] + lengths[i]].tobytes())
        if v5 is None:
            continue                # left as it is: counted as a decode error (not v5)
        offsets[i], lengths[i] = at, len(v5)
        extra.append(v5)
        at += len(v5)
    if not extra:
        return buf, offsets, lengths
    return np.concatenate([buf, np.frombuffer(b"".join(extra), np.uint8)]), offsets, lengths


# Listener.protocol -> the decoder its shards run
DECODERS = {"netflow": decode_batch, "sflow": decode_sflow_batch}
