"""KafkaWriter: each purge's rows as JSON messages into Kafka, every row delivered or counted as lost.

Accounting (counters(), saved in the plugin's stats and logged at close):
- produced / produced_rows: messages (rows) accepted into librdkafka's queue;
- failed / failed_rows: messages whose delivery report is an error (broker
  gone longer than message.timeout.ms, unknown topic, ..., and at close what
  could not be delivered within CLOSE_FLUSH_S: purged from the queue);
- dropped / dropped_rows: messages never queued because the bounded queue
  stayed full (a broker outage): after QUEUE_STALL_S without the queue
  shrinking, the rest of that purge is dropped and counted, and write()
  returns, so the engine keeps collecting;
- delivered = produced - failed - still queued (librdkafka reports failures
  only: no Python call per delivered message).
lost_rows = failed_rows + dropped_rows.  Failures are logged (rate-limited).

plugin_workers: the workers of one plugin produce to the same topics.  Several producers auto-creating one
topic at once make the broker refuse all but one ("Invalid topic"), and the others' client then takes the
topic for absent: their messages fail.  So a coordinated writer (coordinate()) meets each topic name first
under the plugin's lock (purge_rounds.PurgeRounds): it asks the broker for the topic's metadata (which
auto-creates it where the broker allows) and waits up to TOPIC_WAIT_S for its partitions; the next worker
finds it there.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from itertools import repeat
from typing import Optional

from ...config import ConfigError
from ...config.tree import CoreConfig, PluginConfig
from ..aggregate import AggregatedRows
from ..print_plugin import LineFormat
from . import messages as msgs
from .settings import producer_config

CHUNK_ROWS = 65536          # rows rendered at a time
QUEUE_STALL_S = 5.0         # a full queue that does not shrink for this long: the broker is away, drop
CLOSE_FLUSH_S = 10.0        # bounded flush at exit; what is left is purged and counted as lost
LOG_EVERY_S = 10.0          # at most one failure summary per this many seconds
TOPIC_WAIT_S = 5.0          # plugin_workers: how long a worker waits for a topic it asked the broker to create


class _LibrdkafkaLog:
    """librdkafka's log lines into the plugin's logger, at most one per LOG_EVERY_S (a broker that is away
    makes librdkafka log every reconnect attempt); how many were left out is said with the next one."""

    def __init__(self, target: logging.Logger) -> None:
        self.target = target
        self.last = 0.0
        self.skipped = 0

    def log(self, level: int, fmt: str, *args) -> None:
        """What confluent_kafka calls (logging.Logger.log's signature)."""
        now = time.monotonic()
        if now - self.last < LOG_EVERY_S:
            self.skipped += 1
            return
        self.last = now
        if self.skipped:
            fmt += f" ({self.skipped} librdkafka log lines left out)"
            self.skipped = 0
        self.target.log(min(level, logging.WARNING), "librdkafka: " + fmt, *args)


class KafkaWriter:
    """The kafka plugin's sink: write() at each purge, poll() every loop turn, close() at exit."""

    def __init__(self, plugin: PluginConfig, core: CoreConfig, log: Optional[logging.Logger] = None) -> None:
        from confluent_kafka import KafkaException, Producer
        self.plugin = plugin
        self.options = plugin.options
        self.log = log or logging.getLogger(f"pmengine.plugin.{plugin.name}")
        self.fmt = LineFormat(dataclasses.replace(plugin, output="json"))
        self.writer_id = f"{plugin.name}/{os.getpid()}"
        self.rows_written = 0
        self.write_errors = 0
        self.produced = self.produced_rows = 0
        self.failed = self.failed_rows = 0
        self.dropped = self.dropped_rows = 0
        self.markers_sent = 0
        self.oversize = 0               # multi-value messages holding one object bigger than kafka_multi_values
        self.broker_errors = 0
        self.last_error = ""
        self._logged_at = 0.0           # last "rows lost" error
        self._warned_at = 0.0           # last broker error warning
        self._logged_lost = 0
        self.rounds = None              # plugin_workers: the plugin's shared lock (coordinate())
        self._topics_met: set[str] = set()
        try:
            conf = producer_config(self.options)
        except ValueError as e:
            raise ConfigError(f"plugin '{plugin.name}': {e}", "kafka_config_file") from None
        conf.update({"on_delivery": self._on_delivery, "error_cb": self._on_error,
                     "logger": _LibrdkafkaLog(self.log)})
        try:
            self.producer = Producer(conf)
        except (KafkaException, ValueError, TypeError) as e:
            raise ConfigError(f"plugin '{plugin.name}': librdkafka refuses the configuration: {e}",
                              "kafka_config_file") from None
        self.log.info("kafka plugin %s: brokers %s, topic %s%s", plugin.name, conf["bootstrap.servers"],
                      self.options.topic, f", multi_values {self.options.multi_values}"
                      if self.options.multi_values else "")

    # -- librdkafka callbacks (run inside poll/flush) ------------------------------------
    def _on_delivery(self, err, msg) -> None:
        if err is None:                 # only when delivery.report.only.error was turned off
            return
        self.failed += 1
        self.failed_rows += msgs.rows_in_message(msg.value())
        self.write_errors += 1
        self.last_error = str(err)

    def _on_error(self, err) -> None:
        self.broker_errors += 1
        self.last_error = str(err)
        now = time.monotonic()
        if now - self._warned_at >= LOG_EVERY_S:
            self._warned_at = now
            self.log.warning("kafka plugin %s: %s", self.plugin.name, err)

    def coordinate(self, rounds) -> None:
        """Share topic creation with the other workers of this plugin (module docstring)."""
        self.rounds = rounds

    def _meet_topics(self, topics) -> None:
        """Each topic name not met yet: under the plugin's lock, have it exist before producing to it."""
        from confluent_kafka import KafkaException
        new = set(topics) - self._topics_met
        if not new:
            return
        with self.rounds.locked():
            for topic in sorted(new):
                deadline = time.monotonic() + TOPIC_WAIT_S
                while time.monotonic() < deadline:
                    try:
                        meta = self.producer.list_topics(topic, timeout=TOPIC_WAIT_S).topics.get(topic)
                    except KafkaException as e:
                        self.last_error = str(e)
                        break           # the broker is away: produce() will queue and count as usual
                    if meta is not None and meta.error is None and meta.partitions:
                        break
                    time.sleep(0.1)
                self._topics_met.add(topic)

    # -- the writer contract ------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self.producer)

    @property
    def lost_rows(self) -> int:
        return self.failed_rows + self.dropped_rows

    def write(self, rows: AggregatedRows) -> int:
        """Queue one purge; returns the rows queued.  Blocks at most ~QUEUE_STALL_S on a broker that is away."""
        started = time.time()
        marker_topic = msgs.static_topic(self.options.topic)
        if self.rounds is not None and self.options.markers:
            self._meet_topics([marker_topic])
        if self.options.markers:
            self._produce_markers(marker_topic, msgs.marker_init(self.writer_id))
        queued = 0
        stalled = False
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows.take(slice(start, start + CHUNK_ROWS)) if len(rows) > CHUNK_ROWS else rows
            groups = msgs.plan(chunk, self.fmt, self.writer_id, self.options.topic, self.options.partition_key,
                               self.options.multi_values)
            for group in groups:
                if stalled:
                    self._drop(group, 0)
                    continue
                sent = self._produce_group(group)
                queued += sent
                stalled = sent < group.row_count
        self.rows_written += queued
        if self.options.markers:
            self._produce_markers(marker_topic, msgs.marker_close(self.writer_id, queued, len(rows),
                                                                  int(time.time() - started)))
        self.producer.poll(0)
        self._log_failures()
        return queued

    def _produce_group(self, group: msgs.MessageGroup) -> int:
        """Queue a group's messages; returns rows queued (fewer when the queue stalled: the rest is dropped)."""
        produce = self.producer.produce
        partition = self.options.partition
        if self.rounds is not None:
            self._meet_topics(group.topic if isinstance(group.topic, list) else [group.topic])
        topics = group.topic if isinstance(group.topic, list) else repeat(group.topic)
        keys = group.key if isinstance(group.key, list) else repeat(group.key)
        rows_each = group.rows
        n = 0
        for topic, value, key in zip(topics, group.values, keys):
            try:
                produce(topic, value, key, partition)
            except BufferError:
                if not self._wait_for_room(topic, value, key, partition):
                    self._drop(group, n)
                    return self._rows_of(rows_each, n)
            n += 1
        self.produced += n
        rows = self._rows_of(rows_each, n)
        self.produced_rows += rows
        if rows_each is not None:
            self.oversize += sum(1 for c, v in zip(rows_each, group.values) if c == 1
                                 and len(v) >= self.options.multi_values)
        return rows

    @staticmethod
    def _rows_of(rows_each: Optional[list], n: int) -> int:
        return n if rows_each is None else sum(rows_each[:n])

    def _wait_for_room(self, topic, value, key, partition) -> bool:
        """Queue full: serve delivery reports until the message fits; False if the queue stops shrinking."""
        last = len(self.producer)
        since = time.monotonic()
        while time.monotonic() - since < QUEUE_STALL_S:
            self.producer.poll(0.05)
            try:
                self.producer.produce(topic, value, key, partition)
                return True
            except BufferError:
                now_queued = len(self.producer)
                if now_queued < last:
                    last, since = now_queued, time.monotonic()
        return False

    def _drop(self, group: msgs.MessageGroup, first: int) -> None:
        """Count messages [first:] of a group as dropped (never queued)."""
        count = len(group.values) - first
        rows = count if group.rows is None else sum(group.rows[first:])
        self.dropped += count
        self.dropped_rows += rows
        self.write_errors += count
        self.produced += first          # the ones before `first` were queued
        self.produced_rows += self._rows_of(group.rows, first)
        if count:
            self.last_error = "local queue full (broker unreachable?)"

    def _produce_markers(self, topic: str, value: str) -> None:
        try:
            self.producer.produce(topic, value, None, self.options.partition)
            self.markers_sent += 1
        except BufferError:
            self.dropped += 1
            self.write_errors += 1

    def _log_failures(self) -> None:
        lost = self.lost_rows
        now = time.monotonic()
        if lost > self._logged_lost and now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            self._logged_lost = lost
            self.log.error("kafka plugin %s: %d rows lost so far (%d messages failed, %d dropped on a full "
                           "queue; %d queued): %s", self.plugin.name, lost, self.failed, self.dropped, self.queued,
                           self.last_error)

    def poll(self) -> None:
        """Serve delivery reports and errors; never blocks."""
        self.producer.poll(0)
        self._log_failures()

    def counters(self) -> dict:
        queued = self.queued
        return {
            "produced": self.produced, "produced_rows": self.produced_rows, "queued": queued,
            "delivered": self.produced + self.markers_sent - self.failed - queued,
            "failed": self.failed, "failed_rows": self.failed_rows,
            "dropped_queue_full": self.dropped, "dropped_rows": self.dropped_rows,
            "lost_rows": self.lost_rows, "markers": self.markers_sent, "oversize": self.oversize,
            "broker_errors": self.broker_errors, "last_error": self.last_error,
        }

    def close(self) -> None:
        """Flush for at most CLOSE_FLUSH_S; purge what is left (counted lost by its delivery reports)."""
        left = self.producer.flush(CLOSE_FLUSH_S)
        if left:
            self.log.warning("kafka plugin %s: %d messages not delivered within %.0f s: dropping them",
                             self.plugin.name, left, CLOSE_FLUSH_S)
            self.producer.purge()
            self.producer.flush(1.0)
        c = self.counters()
        level = logging.ERROR if c["lost_rows"] else logging.INFO
        self.log.log(level, "kafka plugin %s closed: produced=%d produced_rows=%d delivered=%d failed=%d "
                     "failed_rows=%d dropped_queue_full=%d dropped_rows=%d lost_rows=%d queued=%d%s",
                     self.plugin.name, c["produced"], c["produced_rows"], c["delivered"], c["failed"],
                     c["failed_rows"], c["dropped_queue_full"], c["dropped_rows"], c["lost_rows"], c["queued"],
                     f" (last error: {self.last_error})" if c["lost_rows"] and self.last_error else "")
