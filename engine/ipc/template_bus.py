"""The template bus: every shard learns the NetFlow v9/IPFIX templates that any shard learns.

The kernel's SO_REUSEPORT hash may give an exporter's template to one shard and
its data to another, so shards publish what they learn (opaque key -> payload
items; a newer payload for a key replaces the older) and apply what the others
publish.  A (re)starting shard takes a snapshot of the whole state.

The bus runs as a thread in the supervisor.  Its sockets (ZeroMQ):

    publish    PULL    <- shards' PUSH:  [sender_id, key, payload, key, payload, ...]
    subscribe  XPUB    -> shards' SUB:   [b"U", sender_id, key, payload, ...]   changed items only
                                         [b"W" + nonce]   welcome, once a client's subscription arrived
    snapshot   ROUTER  <- shards' DEALER: [b"SNAP", request_id]
                       -> reply:          [request_id, key, payload, key, payload, ...]

Race-free start for a shard: the client subscribes to b"U" and to its own
welcome topic b"W" + nonce on one connection, so when the bus sees the welcome
subscription the update subscription is already active; the client waits for
the welcome, then asks for the snapshot.  Every update the bus applies after
the snapshot reaches the client, and applying the snapshot then the queued
updates in order leaves the latest payload per key (updates are idempotent).

Everything received is treated as bytes: nothing is unpickled or evaluated.
Malformed messages are counted and skipped.

Security: on ipc:// the sockets live in the supervisor's private 0700 runtime
folder.  Over tcp:// the bus is always authenticated and encrypted with
ZeroMQ CURVE: the bus generates a server key pair and a client key pair per
run (in memory, never written to disk); BusEndpoints carries the keys to the
shards, and a ZAP handler admits only the client public key.  A tcp bus
without CURVE cannot be made (ValueError when libzmq lacks CURVE).

Persistence (nfacctd_templates_file): one JSON object per line,
    {"key": "<hex>", "payload": "<hex>"}
sorted by key.  Loaded at start (a missing file is fine; a corrupt file is
logged and ignored whole), rewritten atomically (write "<path>.tmp", fsync,
rename) when the state changed, at most once a second, and at stop.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Optional

import zmq

log = logging.getLogger(__name__)

UPDATE = b"U"
WELCOME = b"W"
SNAPSHOT_REQUEST = b"SNAP"
HIGH_WATER_MARK = 100_000        # queued messages per socket before zmq refuses (templates are few)
SAVE_INTERVAL_S = 1.0
POLL_MS = 1000                   # the thread's longest sleep: it wakes for messages, stop() and due saves anyway
DRAIN_LIMIT = 1000               # publish messages handled per poll round, so snapshots are not starved
IPC_FILES = ("tbus-publish.sock", "tbus-subscribe.sock", "tbus-snapshot.sock")
_MAX_IPC_PATH = 107              # sizeof(sockaddr_un.sun_path) - 1 on Linux


@dataclass(frozen=True)
class CurveKeys:
    """The CURVE keys a client needs (Z85 bytes): the server's public key and its own pair."""
    server_public: bytes
    client_public: bytes
    client_secret: bytes

    def __repr__(self) -> str:              # never print a secret into a log
        return f"CurveKeys(server_public={self.server_public!r}, client_public={self.client_public!r}, ...)"


@dataclass(frozen=True)
class BusEndpoints:
    """Where a shard connects; picklable, handed to shard processes."""
    publish: str                 # where shards send what they learn
    subscribe: str               # where shards receive what others learnt
    snapshot: str                # request/reply for the full current state
    curve: Optional[CurveKeys] = None   # tcp:// only: the client's CURVE keys


def _curve_client(sock: zmq.Socket, keys: Optional[CurveKeys]) -> None:
    if keys is not None:
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = keys.client_public
        sock.curve_secretkey = keys.client_secret


def _pairs(frames: list[bytes]) -> Optional[list[tuple[bytes, bytes]]]:
    """[k1, p1, k2, p2, ...] -> [(k1, p1), ...]; None when the frame count is odd."""
    if len(frames) % 2:
        return None
    return list(zip(frames[0::2], frames[1::2]))


def load_state(path: Optional[str]) -> dict[bytes, bytes]:
    """Read a persisted state file; {} when absent or corrupt (logged)."""
    if not path:
        return {}
    state: dict[bytes, bytes] = {}
    try:
        with open(path, "r", encoding="ascii") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    state[bytes.fromhex(obj["key"])] = bytes.fromhex(obj["payload"])
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("templates file %s: line %d is corrupt (%s); ignoring the file", path, lineno, exc)
                    return {}
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("templates file %s unreadable (%s); ignoring it", path, exc)
        return {}
    return state


def save_state(path: str, state: dict[bytes, bytes]) -> None:
    """Write the state atomically: a temporary file beside path, fsynced, then renamed over it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        for key in sorted(state):
            f.write(json.dumps({"key": key.hex(), "payload": state[key].hex()}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TemplateBus:
    """The supervisor's bus thread: collects, re-publishes, snapshots and persists template items."""

    def __init__(self, runtime_dir: str, persist_path: str | None = None, endpoint: str = "ipc"):
        """endpoint: "ipc" (sockets in runtime_dir), "tcp" (127.0.0.1, ephemeral ports known after start())
        or "tcp://HOST:PORT" (PORT, PORT+1, PORT+2 on HOST)."""
        self.runtime_dir = runtime_dir
        self.persist_path = persist_path
        self._binds = self._plan_binds(endpoint)
        self._server_secret: Optional[bytes] = None
        self._curve: Optional[CurveKeys] = None
        if not endpoint.startswith("ipc"):
            if not zmq.has("curve"):
                raise ValueError("a tcp template bus needs ZeroMQ CURVE authentication: this libzmq has none")
            server_public, self._server_secret = zmq.curve_keypair()
            self._curve = CurveKeys(server_public, *zmq.curve_keypair())
        self._auth = None
        self._endpoints: Optional[BusEndpoints] = None
        if self._binds is not None:
            self._endpoints = BusEndpoints(*self._binds, curve=self._curve)
        self._lock = threading.Lock()
        self._state: dict[bytes, bytes] = {}
        self._dirty = False
        self._save_failing = False
        self._stop = threading.Event()
        self._wake: Optional[tuple[int, int]] = None     # a pipe: stop() writes to it so the poll returns at once
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._start_error: Optional[BaseException] = None
        self._counters = dict.fromkeys(
            ("messages", "items", "updates", "unchanged", "malformed", "snapshots", "welcomes",
             "saves", "save_errors", "errors", "auth_refused"), 0)

    def _plan_binds(self, endpoint: str) -> Optional[tuple[str, str, str]]:
        if endpoint == "ipc":
            paths = [os.path.join(self.runtime_dir, f) for f in IPC_FILES]
            too_long = [p for p in paths if len(p) > _MAX_IPC_PATH]
            if too_long:
                raise ValueError(f"runtime_dir {self.runtime_dir!r} is too long for ipc sockets ({too_long[0]!r})")
            return tuple("ipc://" + p for p in paths)
        if endpoint == "tcp":
            return None
        if endpoint.startswith("tcp://"):
            host, _, port = endpoint[len("tcp://"):].rpartition(":")
            if not host or not port.isdigit() or host in ("*", "0.0.0.0") or not 0 < int(port) < 65534:
                raise ValueError(f"template bus endpoint {endpoint!r}: expected tcp://HOST:PORT with a concrete HOST")
            return tuple(f"tcp://{host}:{int(port) + i}" for i in range(3))
        raise ValueError(f"template bus endpoint {endpoint!r}: expected 'ipc', 'tcp' or 'tcp://HOST:PORT'")

    @property
    def endpoints(self) -> BusEndpoints:
        if self._endpoints is None:
            raise RuntimeError("the tcp template bus picks its ports at start(); read endpoints after it")
        return self._endpoints

    def start(self) -> None:
        """Load the persisted state, bind the sockets and start the bus thread; raises if binding fails."""
        if self._thread is not None:
            raise RuntimeError("template bus already started")
        if self._binds and self._binds[0].startswith("ipc://"):
            os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        if not self._state:                              # first start; a restart keeps what it has
            self._state = load_state(self.persist_path)
        if self._state:
            log.info("template bus: %d items loaded from %s", len(self._state), self.persist_path)
        self._stop.clear()
        self._start_error = None
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._run, name="template-bus", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            for fd in self._wake:
                os.close(fd)
            self._wake = None
            raise self._start_error

    def stop(self) -> None:
        """Stop the thread, close the sockets and persist the state if it changed."""
        if self._thread is None:
            return
        self._stop.set()
        assert self._wake is not None
        os.write(self._wake[1], b"!")
        self._thread.join()
        self._thread = None
        self._ready.clear()
        for fd in self._wake:
            os.close(fd)
        self._wake = None

    def state(self) -> dict[bytes, bytes]:
        """A copy of the current key -> payload state (thread-safe)."""
        with self._lock:
            return dict(self._state)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the bus thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        ctx, sockets = None, []
        try:
            ctx = zmq.Context()
            pull, pub, router = self._bind(ctx, sockets)
        except BaseException as exc:                     # reported to start()'s caller
            self._start_error = exc
            for s in sockets:
                s.close(linger=0)
            self._stop_auth()
            if ctx is not None:
                ctx.term()
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        for s in (pull, pub, router):
            poller.register(s, zmq.POLLIN)
        assert self._wake is not None
        poller.register(self._wake[0], zmq.POLLIN)
        last_save = 0.0
        try:
            while not self._stop.is_set():
                try:
                    wait_ms = POLL_MS
                    if self._dirty:                      # wake when the next save is due
                        wait_ms = max(0, min(POLL_MS, int((last_save + SAVE_INTERVAL_S - time.monotonic()) * 1000) + 1))
                    ready = dict(poller.poll(wait_ms))
                    if pull in ready:
                        self._drain_publishes(pull, pub)
                    if pub in ready:
                        self._answer_subscriptions(pub)
                    if router in ready:
                        self._answer_snapshots(router)
                    if self._dirty and time.monotonic() - last_save >= SAVE_INTERVAL_S:
                        self._save()
                        last_save = time.monotonic()
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.ETERM:
                        break
                    self._count("errors")
                    log.exception("template bus: socket error")
                except Exception:                        # keep serving: one bad round must not kill the bus
                    self._count("errors")
                    log.exception("template bus: unexpected error")
                    time.sleep(0.05)
        finally:
            if self._dirty:
                self._save()
            for s in sockets:
                s.close(linger=0)
            self._stop_auth()
            ctx.term()
            if self._binds and self._binds[0].startswith("ipc://"):
                for f in IPC_FILES:
                    try:
                        os.unlink(os.path.join(self.runtime_dir, f))
                    except OSError:
                        pass

    def _bind(self, ctx: zmq.Context, sockets: list) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        pull, pub, router = ctx.socket(zmq.PULL), ctx.socket(zmq.XPUB), ctx.socket(zmq.ROUTER)
        sockets += [pull, pub, router]
        pull.rcvhwm = HIGH_WATER_MARK
        pub.sndhwm = HIGH_WATER_MARK
        router.sndhwm = HIGH_WATER_MARK
        if self._curve is not None:
            self._start_auth(ctx)
            for s in (pull, pub, router):
                s.curve_server = True
                s.curve_secretkey = self._server_secret
                s.curve_publickey = self._curve.server_public
        if self._binds is None:
            ports = [s.bind_to_random_port("tcp://127.0.0.1") for s in (pull, pub, router)]
            self._endpoints = BusEndpoints(*(f"tcp://127.0.0.1:{p}" for p in ports), curve=self._curve)
        else:
            for s, addr in zip((pull, pub, router), self._binds):
                s.bind(addr)
        return pull, pub, router

    def _start_auth(self, ctx: zmq.Context) -> None:
        """A ZAP handler on ctx that admits the run's client key only (and counts refusals)."""
        from zmq.auth.thread import ThreadAuthenticator
        allowed = self._curve.client_public
        bus = self

        class OnlyOurShards:
            def callback(self, _domain: str, key: bytes) -> bool:
                if key == allowed:
                    return True
                bus._count("auth_refused")
                return False

        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".auth"))
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=OnlyOurShards())

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _drain_publishes(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        for _ in range(DRAIN_LIMIT):
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            items = _pairs(frames[1:]) if frames else None
            if items is None:
                self._count("malformed")
                continue
            changed = []
            with self._lock:
                self._counters["messages"] += 1
                self._counters["items"] += len(items)
                for key, payload in items:
                    if self._state.get(key) != payload:
                        self._state[key] = payload
                        changed += (key, payload)
                self._counters["updates"] += len(changed) // 2
                self._counters["unchanged"] += len(items) - len(changed) // 2
                self._dirty = self._dirty or bool(changed)
            if changed:
                pub.send_multipart([UPDATE, frames[0], *changed], zmq.NOBLOCK)

    def _answer_subscriptions(self, pub: zmq.Socket) -> None:
        while True:
            try:
                event = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            topic = event[1:]
            if event[:1] == b"\x01" and topic.startswith(WELCOME) and len(topic) > len(WELCOME):
                pub.send(topic, zmq.NOBLOCK)
                self._count("welcomes")

    def _answer_snapshots(self, router: zmq.Socket) -> None:
        while True:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or frames[1] != SNAPSHOT_REQUEST:
                self._count("malformed")
                continue
            identity, request_id = frames[0], frames[2]
            with self._lock:
                flat = [part for item in self._state.items() for part in item]
                self._counters["snapshots"] += 1
            try:
                router.send_multipart([identity, request_id, *flat], zmq.NOBLOCK)
            except zmq.Again:
                self._count("errors")

    def _save(self) -> None:
        if not self.persist_path:
            self._dirty = False
            return
        with self._lock:
            snapshot = dict(self._state)
            self._dirty = False
        try:
            save_state(self.persist_path, snapshot)
            self._count("saves")
            self._save_failing = False
        except OSError as exc:
            self._dirty = True                           # retried at the next interval
            self._count("save_errors")
            if not self._save_failing:                   # logged once per run of failures
                log.warning("template bus: cannot write %s: %s (retrying every %.0f s)",
                            self.persist_path, exc, SAVE_INTERVAL_S)
            self._save_failing = True


class BusClient:
    """A shard's connection to the bus; create it in the shard process, after the process started."""

    def __init__(self, endpoints: BusEndpoints, sender_id: bytes):
        self.sender_id = bytes(sender_id)
        self._ctx = zmq.Context()
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.sndhwm = HIGH_WATER_MARK
        self._push.linger = 1000                         # deliver what was published before close()
        _curve_client(self._push, endpoints.curve)
        self._push.connect(endpoints.publish)
        self._welcome = WELCOME + os.urandom(16)
        self.socket = self._ctx.socket(zmq.SUB)          # register with zmq.Poller beside the UDP socket
        self.socket.rcvhwm = HIGH_WATER_MARK
        self.socket.linger = 0
        self.socket.setsockopt(zmq.SUBSCRIBE, UPDATE)
        self.socket.setsockopt(zmq.SUBSCRIBE, self._welcome)   # after UPDATE: same connection, same order
        _curve_client(self.socket, endpoints.curve)
        self.socket.connect(endpoints.subscribe)
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._dealer.linger = 0
        _curve_client(self._dealer, endpoints.curve)
        self._dealer.connect(endpoints.snapshot)
        self._welcomed = False
        self._backlog: list[tuple[bytes, bytes]] = []
        self._request_seq = 0
        self._counters = dict.fromkeys(("published", "publish_dropped", "received", "malformed"), 0)

    def publish(self, items: list[tuple[bytes, bytes]]) -> None:
        """Send items to every other shard (non-blocking; counted in publish_dropped if the queue is full)."""
        if not items:
            return
        frames = [self.sender_id]
        for key, payload in items:
            frames += (key, payload)
        try:
            self._push.send_multipart(frames, zmq.NOBLOCK)
            self._counters["published"] += len(items)
        except zmq.Again:
            self._counters["publish_dropped"] += len(items)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def receive(self) -> list[tuple[bytes, bytes]]:
        """Everything other shards published since the last call (non-blocking), in bus order."""
        self._drain()
        items, self._backlog = self._backlog, []
        return items

    def _drain(self) -> None:
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frames[0] == UPDATE and len(frames) >= 2:
                items = _pairs(frames[2:])
                if items is None:
                    self._counters["malformed"] += 1
                elif frames[1] != self.sender_id:
                    self._backlog += items
                    self._counters["received"] += len(items)
            elif frames[0] == self._welcome:
                self._welcomed = True
            else:
                self._counters["malformed"] += 1

    def snapshot(self, timeout_ms: int = 2000) -> list[tuple[bytes, bytes]]:
        """The bus's full state; [] on timeout (the caller logs it).

        Waits until this client's subscription is active first, so no update can
        fall between the snapshot and the subscription.
        """
        deadline = time.monotonic() + timeout_ms / 1000
        while not self._welcomed:
            left = deadline - time.monotonic()
            if left <= 0 or not self.socket.poll(max(1, int(left * 1000))):
                return []
            self._drain()
        self._request_seq += 1
        request_id = self._request_seq.to_bytes(8, "big")
        try:
            self._dealer.send_multipart([SNAPSHOT_REQUEST, request_id], zmq.NOBLOCK)
        except zmq.Again:
            return []
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._dealer.poll(max(1, int(left * 1000))):
                return []
            frames = self._dealer.recv_multipart()
            if frames[0] != request_id:                 # a late reply to an earlier, timed-out request
                continue
            items = _pairs(frames[1:])
            if items is None:
                self._counters["malformed"] += 1
                return []
            return items

    def close(self) -> None:
        """Close the sockets (published items get up to 1 s to leave) and the context."""
        if self._ctx.closed:
            return
        self._push.close()
        self.socket.close()
        self._dealer.close()
        self._ctx.term()
