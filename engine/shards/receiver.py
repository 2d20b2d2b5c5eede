"""The shard process: receive export packets in batches, decode, write records into rings.

One shard = one process = one SO_REUSEPORT socket (or, offline, one pcap file).
It never blocks on a plugin: a full ring drops the batch and the ring counts it.
Templates learnt here go out on the template bus; templates learnt elsewhere
come in from it and may release data that was waiting for them.
"""
from __future__ import annotations

import logging
import signal
import socket
import time
from typing import Iterator, Optional

import numpy as np
import zmq

from ..config.tree import CoreConfig, Listener
from ..decoders import DECODERS, BusMessage, DecoderState
from ..decoders.batch import PacketBatch
from ..enrich import ShardStage
from ..ipc.ring import Ring
from ..ipc.template_bus import BusClient, BusEndpoints
from ..maps import MapError
from ..maps.sampling import apply_sampling_map, load_sampling_map, renormalize
from ..pcap import PcapStats, iter_udp
from ..proc import SignalWakeup, beat, busy, done, handlers_installed, took
from .counter_file import CounterFileWriter
from .gather import GatherClock
from .mmsg import MmsgReceiver, available as mmsg_available
from .partition import PartitionSpec, partitioners_for
from .preaggregate import FoldSpec, folders_for
from .sockets import AddressCache, kernel_drops, open_udp, queued_bytes
from .stats import ShardStats

log = logging.getLogger("pmengine.shard")

MAX_PACKETS = 1024              # packets per receive batch (gather.TARGET_PACKETS: batches below saturation)
BUF_BYTES = 16 << 20            # without recvmmsg, the receive buffer: room for MAX_PACKETS 9000-byte datagrams
RING_CHUNK = 8192               # records per ring write
STATS_EVERY_S = 1.0


class UdpBatcher:
    """Drain a non-blocking UDP socket into PacketBatches: one recvmmsg per batch (engine/shards/mmsg.py), or
    where that is missing one recvfrom_into per datagram."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.arrival = np.zeros(MAX_PACKETS, dtype=np.int64)
        self.mmsg = MmsgReceiver(sock, MAX_PACKETS) if mmsg_available() else None
        if self.mmsg is None:
            self.buf = np.zeros(BUF_BYTES, dtype=np.uint8)
            self.view = memoryview(self.buf)
            self.offsets = np.zeros(MAX_PACKETS, dtype=np.int64)
            self.lengths = np.zeros(MAX_PACKETS, dtype=np.int64)
            self.exporters = np.zeros((MAX_PACKETS, 16), dtype=np.uint8)
            self.addr = AddressCache()

    def receive(self) -> Optional[PacketBatch]:
        """Everything queued on the socket, up to MAX_PACKETS; None when nothing was waiting."""
        if self.mmsg is not None:
            m = self.mmsg
            n = m.receive()
            if n == 0:
                return None
            self.arrival[:n] = time.time_ns() // 1000
            return PacketBatch(m.buf, m.slot_offsets[:n], m.lengths(n), m.exporters[:n], self.arrival[:n])
        return self._receive_one_by_one()

    def _receive_one_by_one(self) -> Optional[PacketBatch]:
        n, off = 0, 0
        recv = self.sock.recvfrom_into
        exporters: list[bytes] = []
        while n < MAX_PACKETS and off + 65536 <= BUF_BYTES:
            try:
                size, peer = recv(self.view[off:off + 65536])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:      # e.g. ICMP errors surfaced on the socket: skip
                log.debug("recv error: %s", e)
                continue
            self.offsets[n] = off
            self.lengths[n] = size
            exporters.append(self.addr(peer[0]))
            off += (size + 7) & ~7
            n += 1
        if n == 0:
            return None
        self.exporters[:n] = np.frombuffer(b"".join(exporters), dtype=np.uint8).reshape(n, 16)
        self.arrival[:n] = time.time_ns() // 1000
        return PacketBatch(self.buf, self.offsets[:n], self.lengths[:n], self.exporters[:n], self.arrival[:n])


def pcap_batches(path: str, stats: PcapStats, port: Optional[int],
                 capture_time: bool = False) -> Iterator[PacketBatch]:
    """The UDP datagrams of a pcap, in file order, a few at a time.

    Arrival time is the wall clock at reading, as nfacctd does with pcap_savefile
    (it matters for timestamp_arrival, nfacctd_time_new and flows without a start time);
    with capture_time, the frame's capture time (sFlow: sfacctd bins samples by it).
    """
    pending: list[tuple[bytes, bytes, int]] = []
    for p in iter_udp(path, stats):
        if port and p.dport != port:
            continue
        pending.append((p.payload, p.src, p.ts_us if capture_time else time.time_ns() // 1000))
        if len(pending) >= MAX_PACKETS:
            yield PacketBatch.from_packets(pending)
            pending = []
    if pending:
        yield PacketBatch.from_packets(pending)


class Shard:
    def __init__(self, shard_id: int, core: CoreConfig, ring_names: list,
                 bus_endpoints: Optional[BusEndpoints], stats_path: Optional[str],
                 listener: Optional[Listener] = None, wanted: Optional[frozenset] = None,
                 folds: Optional[list[Optional[FoldSpec]]] = None,
                 partitions: Optional[list[Optional[PartitionSpec]]] = None) -> None:
        """ring_names: per plugin, its ring's name, or the names of its workers' rings (plugin_workers)."""
        self.shard_id = shard_id
        self.core = core
        self.listener = listener or Listener()
        self.decode = DECODERS.get(self.listener.protocol, DECODERS["netflow"])
        self.sampling_rules = load_sampling_map(core.sampling_map) if core.sampling_map else []
        self.counter_file = (CounterFileWriter(core.counter_file)
                             if core.counter_file and self.listener.protocol == "sflow" else None)
        self.stage = ShardStage(core, self.listener, log)
        self.ring_groups = [[Ring.attach(n)] if isinstance(n, str) else [Ring.attach(m) for m in n]
                            for n in ring_names]                 # per plugin: its rings, one per worker
        self.rings = [r for group in self.ring_groups for r in group]
        self.folders = folders_for(folds, len(self.ring_groups))    # per plugin: pre-aggregation, or None
        self.splitters = partitioners_for(partitions, len(self.ring_groups))   # per plugin: worker split, or None
        self.state = DecoderState(time_secs=core.time_secs)
        self.state.wanted = wanted          # config.fields_needed: fields no consumer reads stay zero
        self.stats = ShardStats(shard_id, stats_path)
        self.bus = BusClient(bus_endpoints, f"shard-{shard_id}".encode()) if bus_endpoints else None
        self.stopping = False
        self.blocking_writes = False        # offline (pcap): back-pressure instead of drops

    # -- bus ----------------------------------------------------------------
    def bus_snapshot(self) -> None:
        if self.bus is None:
            return
        busy(10.0)                  # the snapshot waits up to 2 s for the bus
        items = self.bus.snapshot()
        busy(0.0)
        self.deliver(self.state.apply([BusMessage(k, p) for k, p in items]), from_bus=True)
        log.info("shard %d: %d templates/sampling entries from the bus snapshot", self.shard_id, len(items))

    def bus_receive(self) -> None:
        if self.bus is None:
            return
        items = self.bus.receive()
        if items:
            self.deliver(self.state.apply([BusMessage(k, p) for k, p in items]), from_bus=True)

    # -- data path ------------------------------------------------------------
    def handle(self, batch: PacketBatch) -> None:
        batch = self.stage.admit(batch)
        res = self.decode(batch, self.state)
        self.stats.add_decode(res.counters, len(batch))
        if res.learnt and self.bus is not None:
            self.bus.publish([(m.key, m.payload) for m in res.learnt])
        if res.counter_events and self.counter_file is not None:
            self.counter_file.write(res.counter_events)
        self.deliver(res.records)

    def reload_maps(self) -> None:
        """SIGUSR2 (forwarded by the supervisor): reload the maps; a bad map keeps the old one."""
        busy(60.0)
        self.stage.reload()
        busy(0.0)
        if not (self.core.maps_refresh and self.core.sampling_map):
            return
        try:
            self.sampling_rules = load_sampling_map(self.core.sampling_map)
            log.info("shard %d: sampling_map reloaded (%d rules)", self.shard_id, len(self.sampling_rules))
        except MapError as exc:
            log.error("shard %d: sampling_map not reloaded, keeping the old one: %s", self.shard_id, exc)

    def deliver(self, records: np.ndarray, from_bus: bool = False) -> None:
        if len(records) == 0:
            return
        self.stats.records_decoded += len(records)
        if from_bus:                # pending data released by a template from the bus: not in exporter flows
            self.stats.records_from_bus += len(records)
        # before the rings: every plugin sees the same rates and renormalised counters, as pmacct
        apply_sampling_map(records, self.sampling_rules)
        if self.listener.renormalize:
            renormalize(records)
        records = self.stage.apply(records)
        if len(records) == 0:
            return
        self.stats.records_offered += len(records)
        for group, folder, splitter in zip(self.ring_groups, self.folders, self.splitters):
            batch = folder.fold(records) if folder is not None else records
            folded = len(records) - len(batch)      # carried by the first chunk: offered = written + folded + dropped
            if splitter is None:
                for start in range(0, len(batch), RING_CHUNK):
                    chunk = batch[start:start + RING_CHUNK]
                    self._write(group[0], chunk, len(chunk) + folded)
                    folded = 0
                continue
            for ring, rows in zip(group, splitter.split(batch)):      # plugin_workers: each its share
                for start in range(0, len(rows), RING_CHUNK):
                    chunk = rows[start:start + RING_CHUNK]
                    self._write(ring, chunk, len(chunk) + folded, batch)
                    folded = 0

    def _write(self, ring: Ring, chunk: np.ndarray, offered: int, source: Optional[np.ndarray] = None) -> None:
        """Write a chunk of records or, with source, the records source[chunk] (chunk: row numbers); a full ring
        drops and counts the chunk."""
        if self.blocking_writes:
            self._wait_for_room(ring, len(chunk))
        if source is None:
            ring.write(chunk, offered)
        else:
            ring.write_rows(source, chunk, offered)

    def _wait_for_room(self, ring: Ring, n: int) -> None:
        """Offline or shutting down: wait (bounded) until the ring has room for n records: counters stay exact."""
        deadline = time.monotonic() + (3600 if not self.stopping else 5.0)
        while ring.capacity - ring.pending() < n:
            if time.monotonic() > deadline:
                break               # still no room: the write drops and counts it
            beat()
            time.sleep(0.002)

    def housekeeping(self, now: float, sock: Optional[socket.socket]) -> None:
        self.stats.add_expired(self.state.expire_pending(int(now * 1e6)))
        self.stats.kernel_drops = kernel_drops(sock) if sock is not None else 0
        self.stats.pending_sets_now, self.stats.pending_bytes_now = len(self.state.pending), self.state.pending_bytes
        self.save_rings()
        self.stats.enrich = dict(self.stage.counters)
        self.stats.save()

    def save_rings(self) -> None:
        self.stats.rings = {r.name: r.counters() for r in self.rings}
        self.stats.ring_groups = [[r.name for r in group] for group in self.ring_groups]

    def close(self) -> None:
        self.save_rings()
        self.stats.enrich = dict(self.stage.counters)
        self.stats.save()
        self.stats.log_summary(log, final=True)
        for r in self.rings:
            r.close()
        if self.bus is not None:
            self.bus.close()
        if self.counter_file is not None:
            self.counter_file.close()


def run_udp(shard: Shard, listener: Listener, sock: Optional[socket.socket] = None) -> None:
    """Receive on `sock` (the supervisor's, shared with it) or on a socket of our own."""
    sock = sock if sock is not None else open_udp(listener)
    log.info("shard %d listening on [%s]:%d", shard.shard_id, listener.ip, listener.port)
    batcher = UdpBatcher(sock)
    wakeup = SignalWakeup()     # a signal ends a poll or a gather wait (up to gather.LONGEST_S) at once
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(wakeup.fd, zmq.POLLIN)
    if shard.bus is not None:
        poller.register(shard.bus.socket, zmq.POLLIN)
    next_stats = time.monotonic() + STATS_EVERY_S
    gather = GatherClock(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))    # below saturation: batches
    bus_socket = shard.bus.socket if shard.bus is not None else None
    try:
        shard.bus_receive()     # what arrived while the snapshot was taken
        while not shard.stopping:
            # asleep until a datagram, a template, a signal or the next housekeeping: an idle shard wakes
            # once a second, not at every hang-watch period (a wakeup costs ~0.25 ms of CPU on a VM)
            timeout = min(STATS_EVERY_S, max(0.0, next_stats - time.monotonic()))
            busy(timeout)
            ready = dict(poller.poll(int(timeout * 1000) + 1))
            busy(0.0)
            beat()
            if wakeup.fd in ready:
                wakeup.clear()
            if bus_socket in ready:
                shard.bus_receive()
            if sock.fileno() in ready:                   # zmq reports plain sockets by fd
                wait = gather.wait(time.monotonic())
                queued = 0 if wait > 0 else queued_bytes(sock)     # what the gathered datagrams cost the buffer
                while wait > 0:
                    busy(wait)                  # the hang watch counts from the end of the wait
                    wakeup.sleep(wait)
                    queued = queued_bytes(sock)
                    wait = 0.0 if shard.stopping else gather.more(time.monotonic(), queued)
                while not shard.stopping:
                    started = time.monotonic()
                    batch = batcher.receive()
                    if batch is None:
                        gather.drained(started)
                        break
                    if queued and len(batch) < MAX_PACKETS:     # one receive took them all
                        gather.charged(queued, len(batch))
                    queued = 0
                    took(len(batch))
                    shard.handle(batch)
                    done(len(batch))
                    beat()
                    shard.bus_receive()
                    gather.received(len(batch), int(batch.lengths.sum()))
                    if len(batch) < MAX_PACKETS:          # the socket is drained: gather before the next one
                        gather.drained(started)
                        break
                    if time.monotonic() >= next_stats:
                        break
            now = time.monotonic()
            if now >= next_stats:
                shard.housekeeping(time.time(), sock)
                next_stats = now + STATS_EVERY_S
        # SIGTERM: take what the kernel already queued for us, then stop.
        shard.blocking_writes = True
        time.sleep(0.05)
        shard.bus_receive()
        while (batch := batcher.receive()) is not None:
            shard.handle(batch)
        shard.housekeeping(time.time(), sock)
    finally:
        sock.close()


def run_pcap(shard: Shard, path: str, port: Optional[int]) -> None:
    shard.blocking_writes = True
    pstats = PcapStats()
    for batch in pcap_batches(path, pstats, port, capture_time=shard.listener.protocol == "sflow"):
        if shard.stopping:
            break
        shard.handle(batch)
        beat()
    log.info("shard %d: pcap %s read: %d frames, %d UDP datagrams, skipped %s",
             shard.shard_id, path, pstats.frames, pstats.udp, pstats.skipped or "none")
    shard.housekeeping(time.time(), None)


def shard_main(shard_id: int, core: CoreConfig, listener: Optional[Listener], ring_names: list[str],
               bus_endpoints: Optional[BusEndpoints], stats_path: Optional[str],
               wanted: Optional[frozenset] = None, sock: Optional[socket.socket] = None,
               folds: Optional[list[Optional[FoldSpec]]] = None,
               partitions: Optional[list[Optional[PartitionSpec]]] = None) -> None:
    """Process entry point (see engine.supervisor)."""
    shard = Shard(shard_id, core, ring_names, bus_endpoints, stats_path, listener, wanted, folds, partitions)

    def on_term(_signum, _frame):
        shard.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, lambda *_: shard.stats.log_summary(log))
    signal.signal(signal.SIGUSR2, lambda *_: shard.reload_maps())
    handlers_installed()
    try:
        shard.bus_snapshot()
        if core.pcap_savefile:
            # with NetFlow and sFlow listeners both, each listener's shard takes the datagrams sent to its port
            port = listener.port if listener is not None and len(core.listeners) > 1 else None
            run_pcap(shard, core.pcap_savefile, port)
        else:
            assert listener is not None
            run_udp(shard, listener, sock)
    finally:
        shard.close()
