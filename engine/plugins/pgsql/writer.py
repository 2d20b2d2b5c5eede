"""The pgsql plugin's writer: each purge goes to PostgreSQL from a writer thread, never blocking the loop.

write() splits a purge by target table (sql_table may hold strftime variables,
taken from each row's bin with sql_history, else from the purge time, and
$peer_src_ip / $ref / $hst / $tzone), puts the parts in a bounded buffer
(sql_max_writers - 1 purges, MAX_BUFFER_ROWS rows) and returns.  A thread takes them in order and writes each
(COPY + one statement, see sql.py) in its own transaction; psycopg2 releases
the GIL during I/O.  When the server is stopped or unreachable (connect
timeout 3 s), parts stay buffered and are retried on the next purge or after
a short delay; rows that do not fit the bound are dropped, counted and
logged.  A part the server refuses (missing table or column, bad type) is
logged, counted (rows_failed) and dropped: retrying cannot fix it.  close()
waits for the final flush while it progresses (a write in flight or one done
in the last CLOSE_TIMEOUT seconds, CLOSE_MAX at most), then counts the rest.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional


from ...config.keys_sql import SqlOptions
from ...config.tree import CoreConfig, PluginConfig
from ..aggregate import AggregatedRows
from ..destinations import expand_name, split_by_name
from .columns import copy_text, default_table, plan_columns, staged_columns
from .sql import table_exists, unique_key, write_batch

CONNECT_TIMEOUT = 3         # seconds
CLOSE_TIMEOUT = 10.0        # seconds close() waits for the final flush without progress
CLOSE_MAX = 90.0            # seconds close() waits at most (the supervisor kills a plugin after 120 s)
MAX_RETRY_DELAY = 10.0      # seconds between reconnection attempts (a purge retries at once)
MAX_BUFFER_ROWS = 20_000_000   # rows kept at most, whatever sql_max_writers
LOG_EVERY = 10.0            # seconds between repeated warnings of one kind


@dataclass
class Part:
    """Rows of one purge bound for one table."""
    table: str
    rows: AggregatedRows
    purge_time: int
    when: int                   # the time its table name was expanded with
    peer: Optional[str]         # its $peer_src_ip text
    purge: object = None        # the purge it comes from (parts of one purge count once in sql_max_writers)
    tried: bool = False         # a write of it failed before


class PgsqlWriter:
    """Writes purges to PostgreSQL through a bounded buffer and a writer thread."""

    def __init__(self, plugin: PluginConfig, core: CoreConfig, log: Optional[logging.Logger] = None) -> None:
        self.plugin = plugin
        self.opts: SqlOptions = plugin.options if isinstance(plugin.options, SqlOptions) else SqlOptions()
        self.log = log or logging.getLogger(f"pmengine.plugin.{plugin.name}")
        history = bool(plugin.history_secs or plugin.history)
        self.columns = plan_columns(tuple(plugin.aggregate), self.opts.optimize_clauses, self.opts.table_version,
                                    history)
        self.table = self.opts.table or default_table(self.opts.table_version)
        self.mode = "insert" if self.opts.dont_try_update else "upsert"
        self.retry_delay = max(1.0, min(float(plugin.refresh_time), MAX_RETRY_DELAY))
        self.rows_written = 0
        self.write_errors = 0
        self.rows_failed = 0            # refused by the server (schema problems), dropped
        self.rows_dropped = 0           # did not fit sql_buffer_rows while the server was away
        self.rows_lost_at_exit = 0
        self.batches_written = 0
        self.connects = 0
        self.connect_failures = 0
        self.retries = 0                # parts written again after a failure
        self.tables_created = 0
        self.write_seconds = 0.0        # time spent in successful writes (render + COPY + statement + commit)
        self._buffer: deque[Part] = deque()
        self._buffered_rows = 0
        self._cond = threading.Condition()
        self._stop = False
        self._wake = False
        self._thread: Optional[threading.Thread] = None
        self._busy = False              # the thread is writing a part to a live connection
        self._conn = None
        self._tables: dict[str, Optional[list[str]]] = {}     # table -> unique key columns (None: none)
        self._server_up: Optional[bool] = None
        self._last_log: dict[str, float] = {}

    # -- the plugin loop's side (must not block) -------------------------------------------
    def write(self, rows: AggregatedRows) -> int:
        """Queue one purge; returns the rows accepted into the buffer."""
        if len(rows) == 0:
            return 0
        accepted = 0
        with self._cond:
            queued = len({id(p.purge) for p in self._buffer})
            if queued >= self.opts.max_writers - 1:
                self.rows_dropped += len(rows)
                self._log_limited("overflow", logging.ERROR, "%d purges waiting for the server (sql_max_writers %d): "
                                  "%d rows dropped (%d so far)", queued, self.opts.max_writers, len(rows),
                                  self.rows_dropped)
                return 0
            for table, idx, when, peer in self.targets(rows):
                part_rows = rows if len(idx) == len(rows) else rows.take(idx)
                room = MAX_BUFFER_ROWS - self._buffered_rows
                if room < len(part_rows):
                    lost = len(part_rows) - max(room, 0)
                    self.rows_dropped += lost
                    self._log_limited("overflow", logging.ERROR, "buffer full (%d rows pending, at most %d): %d rows "
                                      "dropped (%d so far)", self._buffered_rows, MAX_BUFFER_ROWS, lost,
                                      self.rows_dropped)
                    if room <= 0:
                        continue
                    part_rows = part_rows.take(slice(0, room))
                self._buffer.append(Part(table, part_rows, int(rows.stamp_updated), when, peer, rows))
                self._buffered_rows += len(part_rows)
                accepted += len(part_rows)
            self._wake = True
            self._cond.notify_all()
        self._ensure_thread()
        return accepted

    def poll(self) -> None:
        """Nothing to do between purges: the thread retries on its own (kept for the loop's contract)."""
        if self._thread is not None and not self._thread.is_alive() and self._buffer and not self._stop:
            self.log.error("pgsql writer thread died: restarting it")
            self._thread = None
            self._ensure_thread()

    def counters(self) -> dict:
        with self._cond:
            pending = self._buffered_rows
        return {"rows_written": self.rows_written, "rows_buffered": pending, "rows_dropped": self.rows_dropped,
                "rows_failed": self.rows_failed, "rows_lost_at_exit": self.rows_lost_at_exit,
                "write_errors": self.write_errors, "batches_written": self.batches_written,
                "connects": self.connects, "connect_failures": self.connect_failures, "retries": self.retries,
                "tables_created": self.tables_created,
                "write_seconds": round(self.write_seconds, 3), "server_up": bool(self._server_up)}

    def close(self) -> None:
        """Final flush with a bounded wait; what is left is counted and logged as lost."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            started = time.monotonic()
            seen, progress_at = self.rows_written, started
            while self._thread.is_alive() and time.monotonic() - started < CLOSE_MAX:
                self._thread.join(0.2)
                now = time.monotonic()
                if self.rows_written != seen or self._busy:
                    seen, progress_at = self.rows_written, now
                elif now - progress_at > CLOSE_TIMEOUT:
                    break
        with self._cond:
            left = self._buffered_rows
            self._buffer.clear()
            self._buffered_rows = 0
        if left:
            self.rows_lost_at_exit += left
            self.log.error("pgsql: %d rows not written at exit (server unreachable)", left)
        if self._thread is None or not self._thread.is_alive():
            self._disconnect()
        self.log.info("pgsql writer closed: %s", json.dumps(self.counters(), sort_keys=True))

    # -- table names ------------------------------------------------------------------------
    def expand(self, template: str, when_s: int, peer: Optional[str]) -> str:
        """sql_table variables: strftime (local time, or UTC with timestamps_utc), $peer_src_ip, $ref, $hst."""
        return expand_name(template, when_s, peer, self.plugin)

    def targets(self, rows: AggregatedRows):
        """(table, row indices, expansion time, $peer_src_ip text) per target table of a purge."""
        return split_by_name(self.table, rows, self.plugin)

    # -- the writer thread --------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"pgsql-{self.plugin.name}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._stop:
                    self._cond.wait(1.0)
                if not self._buffer:
                    return
                part = self._buffer[0]
            ok = self._write_part(part)
            if ok is None:                  # server away: keep the part, wait for a purge or the retry delay
                if self._stop:
                    return
                with self._cond:
                    self._wake = False
                    self._cond.wait_for(lambda: self._wake or self._stop, self.retry_delay)
                continue
            with self._cond:
                self._buffer.popleft()
                self._buffered_rows -= len(part.rows)

    def _write_part(self, part: Part) -> Optional[bool]:
        """True: written; False: refused by the server (dropped); None: server unreachable (kept)."""
        import psycopg2
        conn = self._connect()
        if conn is None:
            return None
        self._busy = True
        started = time.monotonic()
        try:
            text = copy_text(part.rows, staged_columns(self.columns))
            with conn.cursor() as cur:
                conflict = self._prepare_table(cur, part)
                write_batch(cur, part.table, self.columns, text, part.purge_time, self.mode, conflict)
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            self.write_errors += 1
            part.tried = True
            self._log_limited("lost", logging.ERROR, "pgsql: connection lost while writing %d rows to %s: %s "
                              "(kept, %d rows buffered)", len(part.rows), part.table, str(e).strip(),
                              self._buffered_rows)
            self._disconnect()
            self._server_up = False
            return None
        except Exception as e:          # refused by the server, or an unreadable sql_table_schema: retrying won't help
            self.write_errors += 1
            self.rows_failed += len(part.rows)
            self._tables.pop(part.table, None)
            self.log.error("pgsql: %d rows refused by table %s, dropped: %s", len(part.rows), part.table,
                           str(e).strip())
            try:
                conn.rollback()
            except psycopg2.Error:
                self._disconnect()
            return False
        finally:
            self._busy = False
        self.write_seconds += time.monotonic() - started
        self.rows_written += len(part.rows)
        self.batches_written += 1
        if part.tried:
            self.retries += 1
        return True

    def _prepare_table(self, cur, part: Part) -> Optional[list[str]]:
        """The table's unique key (cached); creates a missing table from sql_table_schema."""
        table = part.table
        if table in self._tables:
            return self._tables[table]
        if self.opts.table_schema:
            # plugin_workers: another worker may be creating this table right now; the lock (held to the end
            # of this transaction) lets one create it and the others then find it
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
        if not table_exists(cur, table) and self.opts.table_schema:
            with open(self.opts.table_schema) as f:
                schema = f.read()
            cur.execute(self.expand(schema, part.when, part.peer))
            self.tables_created += 1
            self.log.info("pgsql: created table %s from %s", table, self.opts.table_schema)
        key = None if self.mode == "insert" else unique_key(cur, table, self.columns)
        self._tables[table] = key
        return key

    def _connect(self):
        if self._conn is not None:
            return self._conn
        import psycopg2
        o = self.opts
        try:
            conn = psycopg2.connect(host=o.host, port=o.port, dbname=o.db, user=o.user, password=o.passwd,
                                    connect_timeout=CONNECT_TIMEOUT, application_name="pmengine",
                                    keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        except psycopg2.Error as e:
            self.connect_failures += 1
            self._server_up = False
            self._log_limited("connect", logging.ERROR, "pgsql: cannot connect to %s:%d/%s: %s (%d rows buffered)",
                              o.host, o.port, o.db, str(e).strip(), self._buffered_rows)
            return None
        self.connects += 1
        if self._server_up is False:
            self.log.info("pgsql: connected again to %s:%d/%s, %d rows buffered", o.host, o.port, o.db,
                          self._buffered_rows)
        self._server_up = True
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._tables.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:           # closing a broken connection
                pass

    def _log_limited(self, kind: str, level: int, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last_log.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self._last_log[kind] = now
            self.log.log(level, msg, *args)
