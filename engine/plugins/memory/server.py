"""The memory plugin's query server on the imt_path UNIX socket (protocol: engine/client/protocol.py).

Collection never waits for a client: the main loop only accepts connections
(non-blocking) and, once per loop turn, answers what a connection thread asks
of the table: a snapshot (the table's arrays are never modified in place, so
a snapshot is references, no copy), an erase, or a reset of matched rows.
Matching, packing and sending (possibly hundreds of MB to a slow reader) run
in the connection's own thread while the main loop keeps draining the rings.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import stat
import threading
import time
from typing import Optional

import numpy as np

from ...client.protocol import MAX_REQUEST, ProtocolError, recv_json, send_json
from ...client.query import QueryError, match, parse_primitives
from .table import MemoryTable, Snapshot, snapshot_rows

REQUEST_TIMEOUT = 10.0      # seconds a client may take to send its request
SEND_TIMEOUT = 300.0        # seconds a reply may take to drain to a slow client
MAX_CLIENTS = 32            # connections served at once; more are refused with an error


class _Pending:
    """A request waiting for the main loop's turn on the table."""

    def __init__(self, request: dict) -> None:
        self.request = request
        self.done = threading.Event()
        self.snapshot: Optional[Snapshot] = None
        self.masks: Optional[list] = None
        self.error: Optional[str] = None


class QueryServer:
    def __init__(self, path: str, mode: int, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        self.queries = 0
        self.query_errors = 0
        self.cleared_at: Optional[float] = None
        self._pending: "queue.Queue[_Pending]" = queue.Queue()
        self._threads: set[threading.Thread] = set()
        self._remove_stale(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~mode)       # no window in which the socket is wider open than mode
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        self.sock.listen(64)
        self.sock.setblocking(False)

    @staticmethod
    def _remove_stale(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"imt_path {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)                 # left behind by a process that is gone
            return
        finally:
            probe.close()
        raise OSError(f"imt_path {path} is in use by another process")

    # ------------------------------------------------------------------ main-loop side

    def poll(self, table: MemoryTable) -> int:
        """Accept new connections and serve pending table requests; requests handled."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.log.warning("query socket accept: %s", e)
                break
            self._threads = {t for t in self._threads if t.is_alive()}
            if len(self._threads) >= MAX_CLIENTS:
                self._refuse(conn, "too many concurrent queries")
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True, name="imt-query")
            self._threads.add(t)
            t.start()
        handled = 0
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                return handled
            try:
                self._on_table(item, table)
            except QueryError as e:
                item.error = str(e)
            except Exception as e:          # a bad request must not hurt the collector
                item.error = f"internal error: {e}"
                self.log.error("query failed: %s", e, exc_info=True)
            item.done.set()
            handled += 1

    def _on_table(self, item: _Pending, table: MemoryTable) -> None:
        op = item.request.get("op")
        if op == "erase":
            table.clear()
            self.cleared_at = time.time()
            return
        if op in ("since", "status"):
            item.snapshot = Snapshot(table.aggregate, table.keys[:0], table.counts[:, :0])
            item.masks = [len(table)]
            return
        item.snapshot = table.snapshot()
        if item.request.get("reset"):       # pmacct -r: matched rows are zeroed, i.e. leave the table
            item.masks = self._masks(item.snapshot, item.request)
            if item.masks:
                table.remove(np.logical_or.reduce(item.masks))

    @staticmethod
    def _masks(snap: Snapshot, request: dict) -> list:
        rows = snapshot_rows(snap)
        queries = request.get("queries") or []
        primitives = request.get("primitives") or []
        if not primitives:                  # -s: everything, once
            return [np.ones(len(rows), dtype=bool)] * len(queries)
        primitives = parse_primitives(",".join(primitives))
        return [match(rows, snap.aggregate, primitives, q) for q in queries]

    # ------------------------------------------------------------------ connection threads

    def _refuse(self, conn: socket.socket, message: str) -> None:
        try:
            conn.settimeout(1.0)
            send_json(conn, {"ok": False, "error": message})
        except OSError:
            pass
        finally:
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            request, _ = recv_json(conn, MAX_REQUEST)
            conn.settimeout(SEND_TIMEOUT)
            self._answer(conn, request)
            self.queries += 1
        except (QueryError, ProtocolError) as e:
            self.query_errors += 1
            self._refuse(conn, str(e))
        except OSError as e:
            self.query_errors += 1
            self.log.warning("query connection: %s", e)
        except Exception as e:              # never let a query kill the thread silently
            self.query_errors += 1
            self.log.error("query failed: %s", e, exc_info=True)
            self._refuse(conn, f"internal error: {e}")
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, request: dict) -> None:
        op = request.get("op")
        if op not in ("query", "erase", "since", "status"):
            raise QueryError(f"unknown request {op!r}")
        if op == "query" and request.get("primitives"):
            parse_primitives(",".join(request["primitives"]))   # refuse unknown primitives early
        item = _Pending(request)
        self._pending.put(item)
        while not item.done.wait(1.0):
            pass
        if item.error:
            raise QueryError(item.error)
        if op == "erase":
            send_json(conn, {"ok": True})
            return
        if op == "since":
            since = None if self.cleared_at is None else int(time.time() - self.cleared_at)
            send_json(conn, {"ok": True, "since": since})
            return
        if op == "status":
            send_json(conn, {"ok": True, "rows": item.masks[0]})
            return
        snap = item.snapshot
        masks = item.masks if item.masks is not None else self._masks(snap, request)
        header = {"ok": True, "aggregate": list(snap.aggregate), "itemsize": snap.keys.dtype.itemsize,
                  "counters": int(snap.counts.shape[0])}
        if request.get("counters_only"):
            sums = []
            with_flows = "flows" in snap.aggregate      # pmacct counts flows only with `aggregate: flows`
            for m in masks:
                packets, nbytes, flows = (int(x) for x in snap.counts[:3, m].sum(axis=1, dtype=np.uint64))
                sums.append([packets, nbytes, flows if with_flows else 0, int(m.sum())])
            send_json(conn, {**header, "rows": 0, "sums": sums, "payload": 0})
            return
        if len(masks) == 1:
            index = np.flatnonzero(masks[0])
            full = len(index) == len(snap.keys)
        else:
            index = np.concatenate([np.flatnonzero(m) for m in masks]) if masks else np.zeros(0, np.intp)
            full = False
        keys = snap.keys if full else snap.keys.take(index)
        counts = snap.counts if full else snap.counts.take(index, axis=1)
        per_query = [int(m.sum()) for m in masks]
        parts = [memoryview(np.ascontiguousarray(keys).view(np.uint8)),
                 memoryview(np.ascontiguousarray(counts).reshape(-1).view(np.uint8))]
        send_json(conn, {**header, "rows": len(keys), "per_query": per_query,
                         "payload": sum(len(p) for p in parts)}, parts)

    # ------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
