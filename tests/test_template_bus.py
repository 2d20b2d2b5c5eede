"""The ZeroMQ template bus: fan-out between shard processes, snapshots, persistence, malformed input."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import time

import pytest
import zmq

from engine.ipc.template_bus import BusClient, BusEndpoints, TemplateBus, load_state

SPAWN = mp.get_context("spawn")


@pytest.fixture
def bus_factory(tmp_path):
    """Make started buses with ipc sockets in a private 0700 dir; all stopped at the end."""
    buses = []

    def make(persist: str | None = None, endpoint: str = "ipc") -> TemplateBus:
        bus = TemplateBus(str(tmp_path / "run"), persist_path=persist, endpoint=endpoint)
        bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.stop()


def wait_for(predicate, timeout: float = 5.0):
    """Poll predicate until it returns something truthy; return that (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.002)


def receive_until(client: BusClient, count: int, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        if client.socket.poll(50):
            got += client.receive()
    return got


# --- shard processes ---------------------------------------------------------------------------------

def shard_proc(endpoints: BusEndpoints, sender: bytes, commands, reports) -> None:
    """A shard's bus loop: snapshot at start, publish on command, report what arrives and when."""
    client = BusClient(endpoints, sender)
    reports.put((sender, "snapshot", client.snapshot(5000), time.monotonic()))
    poller = zmq.Poller()
    poller.register(client.socket, zmq.POLLIN)
    while True:
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            cmd = None
        if cmd == "stop":
            break
        if cmd is not None:
            reports.put((sender, "published", cmd, time.monotonic()))
            client.publish([cmd])
        if poller.poll(2):
            for item in client.receive():
                reports.put((sender, "received", item, time.monotonic()))
    client.close()
    reports.put((sender, "stopped", None, time.monotonic()))


def test_three_shards_learn_what_one_learns(bus_factory):
    bus = bus_factory()
    reports = SPAWN.Queue()
    senders = [b"shard-0", b"shard-1", b"shard-2"]
    commands = {s: SPAWN.Queue() for s in senders}
    procs = [SPAWN.Process(target=shard_proc, args=(bus.endpoints, s, commands[s], reports)) for s in senders]
    for p in procs:
        p.start()
    try:
        started = {reports.get(timeout=30)[0] for _ in senders}   # each took its (empty) snapshot
        assert started == set(senders)
        events, everything = [], []

        def collect(n: int) -> None:
            for _ in range(n):
                events.append(reports.get(timeout=5))
            everything.extend(events[-n:])

        template = (b"192.0.2.1|0|256", b"\x01\x00template-v1")
        commands[b"shard-0"].put(template)
        collect(3)                                  # published + received by the other two
        published = [e for e in events if e[1] == "published"]
        received = [e for e in events if e[1] == "received"]
        assert len(published) == 1 and {e[0] for e in received} == {b"shard-1", b"shard-2"}
        for e in received:
            assert e[2] == template
            assert e[3] - published[0][3] < 0.100, f"latency {e[3] - published[0][3]:.4f}s"

        newer = (b"192.0.2.1|0|256", b"\x01\x00template-v2")
        commands[b"shard-2"].put(newer)
        events.clear()
        collect(3)
        assert sorted(e[0] for e in events if e[1] == "received") == [b"shard-0", b"shard-1"]
        assert wait_for(lambda: bus.state() == {newer[0]: newer[1]})

        # A shard starting later gets everything through its snapshot.
        late = BusClient(bus.endpoints, b"shard-3")
        assert late.snapshot(5000) == [newer]
        late.close()
    finally:
        for s in senders:
            commands[s].put("stop")
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    while True:
        try:
            everything.append(reports.get(timeout=0.5))
        except queue.Empty:
            break
    assert sum(e[1] == "stopped" for e in everything) == 3
    own = {(e[0], e[2]) for e in everything if e[1] == "published"}
    assert len(own) == 2
    assert not [e for e in everything if e[1] == "received" and (e[0], e[2]) in own]
    assert len([e for e in everything if e[1] == "received"]) == 4


def test_own_items_are_filtered_and_latest_payload_wins(bus_factory):
    bus = bus_factory()
    a, b = BusClient(bus.endpoints, b"a"), BusClient(bus.endpoints, b"b")
    assert a.snapshot() == [] and b.snapshot() == []
    a.publish([(b"k", b"1"), (b"j", b"x")])
    a.publish([(b"k", b"2")])
    a.publish([(b"k", b"2")])                       # unchanged: not re-published
    assert receive_until(b, 3) == [(b"k", b"1"), (b"j", b"x"), (b"k", b"2")]
    assert receive_until(b, 1, timeout=0.3) == []
    assert a.receive() == []
    assert bus.state() == {b"k": b"2", b"j": b"x"}
    assert sorted(b.snapshot()) == [(b"j", b"x"), (b"k", b"2")]
    c = bus.counters()
    assert c["updates"] == 3 and c["unchanged"] == 1
    a.close()
    b.close()


def test_ten_thousand_messages_all_delivered(bus_factory):
    bus = bus_factory()
    pub, sub = BusClient(bus.endpoints, b"p"), BusClient(bus.endpoints, b"s")
    assert sub.snapshot() == []
    n = 10_000
    expected = [(b"exporter-%05d" % i, os.urandom(8) + b"%d" % i) for i in range(n)]
    for item in expected:
        pub.publish([item])
    got = receive_until(sub, n, timeout=30)
    assert got == expected
    assert pub.counters()["publish_dropped"] == 0
    assert len(bus.state()) == n
    assert sorted(sub.snapshot(5000)) == sorted(expected)
    pub.close()
    sub.close()


def test_snapshot_times_out_without_bus(tmp_path):
    ipc = f"ipc://{tmp_path}/nobody"
    client = BusClient(BusEndpoints(ipc + "-pub", ipc + "-sub", ipc + "-snap"), b"x")
    t0 = time.monotonic()
    assert client.snapshot(timeout_ms=200) == []
    assert 0.15 < time.monotonic() - t0 < 2
    client.publish([(b"k", b"v")])                  # queued, never blocks
    client.close()


def test_persistence_across_restart(bus_factory, tmp_path):
    persist = str(tmp_path / "templates.json")
    bus = bus_factory(persist)
    client = BusClient(bus.endpoints, b"a")
    client.publish([(b"\x00key-1", b"\xffpayload-1"), (b"key-2", b"")])
    # Saved while running (changes reach the file within about a second).
    assert wait_for(lambda: load_state(persist) == {b"\x00key-1": b"\xffpayload-1", b"key-2": b""}, 5)
    client.publish([(b"key-2", b"replaced")])
    client.close()
    assert wait_for(lambda: bus.state().get(b"key-2") == b"replaced")
    bus.stop()                                      # the final state is written at stop
    with open(persist) as f:
        lines = f.read().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"key": b"\x00key-1".hex(), "payload": b"\xffpayload-1".hex()},
        {"key": b"key-2".hex(), "payload": b"replaced".hex()},
    ]
    assert not os.path.exists(persist + ".tmp")
    assert not os.listdir(tmp_path / "run")         # ipc socket files removed

    again = bus_factory(persist)
    assert again.state() == {b"\x00key-1": b"\xffpayload-1", b"key-2": b"replaced"}
    late = BusClient(again.endpoints, b"late")
    assert sorted(late.snapshot()) == [(b"\x00key-1", b"\xffpayload-1"), (b"key-2", b"replaced")]
    late.close()


def test_saves_at_most_once_a_second(bus_factory, tmp_path):
    bus = bus_factory(str(tmp_path / "t.json"))
    client = BusClient(bus.endpoints, b"a")
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.5:
        client.publish([(b"k", b"%d" % i)])
        i += 1
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    assert wait_for(lambda: bus.state() == {b"k": b"%d" % (i - 1)})
    saves = bus.counters()["saves"]
    assert 2 <= saves <= elapsed + 1.5
    client.close()


@pytest.mark.parametrize("content", [
    "this is not json\n",
    '{"key": "zz", "payload": "00"}\n',
    '{"key": "00"}\n',
    '{"key": "00", "payload": "11"}\n[1, 2]\n',
    "\x00\xff garbage",
])
def test_corrupt_persist_file_is_logged_and_ignored(bus_factory, tmp_path, caplog, content):
    persist = tmp_path / "templates.json"
    persist.write_text(content, encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="engine.ipc.template_bus"):
        bus = bus_factory(str(persist))
    assert bus.state() == {}
    assert any("ignoring" in r.getMessage() for r in caplog.records)
    client = BusClient(bus.endpoints, b"a")
    client.publish([(b"k", b"v")])
    client.close()
    assert wait_for(lambda: load_state(str(persist)) == {b"k": b"v"})   # rewritten in good form


def test_missing_persist_file_is_fine(bus_factory, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.ipc.template_bus"):
        bus = bus_factory(str(tmp_path / "absent.json"))
    assert bus.state() == {} and not caplog.records


def test_malformed_messages_are_counted_and_skipped(bus_factory):
    bus = bus_factory()
    ctx = zmq.Context()
    raw_push = ctx.socket(zmq.PUSH)
    raw_push.connect(bus.endpoints.publish)
    raw_push.send_multipart([b"sender", b"key-without-payload"])
    raw_dealer = ctx.socket(zmq.DEALER)
    raw_dealer.connect(bus.endpoints.snapshot)
    raw_dealer.send_multipart([b"NOT-A-REQUEST"])
    raw_dealer.send_multipart([b"SNAP", b"id", b"extra"])
    assert wait_for(lambda: bus.counters()["malformed"] == 3)
    good = BusClient(bus.endpoints, b"good")
    good.publish([(b"k", b"v")])
    assert wait_for(lambda: bus.state() == {b"k": b"v"})
    assert good.snapshot() == [(b"k", b"v")]
    assert bus.is_alive() and bus.counters()["errors"] == 0
    good.close()
    raw_push.close(0)
    raw_dealer.close(0)
    ctx.term()


def test_tcp_endpoint_on_loopback(bus_factory):
    bus = bus_factory(endpoint="tcp")
    assert all(e.startswith("tcp://127.0.0.1:") for e in (bus.endpoints.publish, bus.endpoints.subscribe,
                                                         bus.endpoints.snapshot))
    a, b = BusClient(bus.endpoints, b"a"), BusClient(bus.endpoints, b"b")
    assert b.snapshot() == []
    a.publish([(b"k", b"v")])
    assert receive_until(b, 1) == [(b"k", b"v")]
    a.close()
    b.close()


def test_endpoints_are_picklable_and_bad_specs_rejected(tmp_path):
    import pickle
    bus = TemplateBus(str(tmp_path / "run"))
    assert pickle.loads(pickle.dumps(bus.endpoints)) == bus.endpoints
    for spec in ("udp://x", "tcp://*:5000", "tcp://host", "ipcx"):
        with pytest.raises(ValueError):
            TemplateBus(str(tmp_path), endpoint=spec)
    with pytest.raises(ValueError):
        TemplateBus("/" + "d" * 120)


def busy_publisher_proc(endpoints: BusEndpoints, rounds: int, done) -> None:
    """Keep rewriting 50 keys with new payloads; the last round's payload is b"final"."""
    client = BusClient(endpoints, b"busy")
    for r in range(rounds):
        client.publish([(b"key-%02d" % k, b"final" if r == rounds - 1 else b"%d-%d" % (r, k)) for k in range(50)])
        time.sleep(0.0005)
    client.close()
    done.set()


def test_client_joining_during_updates_converges(bus_factory):
    """Snapshot + the updates that follow it always add up to the bus's final state."""
    bus = bus_factory()
    done = SPAWN.Event()
    proc = SPAWN.Process(target=busy_publisher_proc, args=(bus.endpoints, 1500, done))
    proc.start()
    try:
        assert wait_for(lambda: bus.counters()["messages"] > 100, 30)
        views = []
        for i in range(3):                          # join at three different moments of the stream
            client = BusClient(bus.endpoints, b"joiner-%d" % i)
            view = dict(client.snapshot(5000))
            views.append((client, view))
            time.sleep(0.05)
        assert done.wait(60)
        final = {b"key-%02d" % k: b"final" for k in range(50)}
        assert wait_for(lambda: bus.state() == final, 10)
        for client, view in views:
            deadline = time.monotonic() + 10
            while view != final and time.monotonic() < deadline:
                if client.socket.poll(50):
                    view.update(client.receive())
            assert view == final
            client.close()
    finally:
        proc.join(15)
    assert proc.exitcode == 0


def test_snapshot_waits_until_subscription_is_live(bus_factory, tmp_path):
    """No snapshot before the bus confirmed this client's subscription: otherwise updates could fall in between."""
    bus = bus_factory()
    seed = BusClient(bus.endpoints, b"seed")
    seed.publish([(b"k", b"v")])
    assert wait_for(lambda: bus.state() == {b"k": b"v"})
    seed.close()
    deaf = BusEndpoints(bus.endpoints.publish, f"ipc://{tmp_path}/no-subscription", bus.endpoints.snapshot)
    client = BusClient(deaf, b"deaf")
    assert client.snapshot(timeout_ms=300) == []    # the snapshot socket works, but the subscription never did
    assert bus.counters()["snapshots"] == 0
    client.close()
    live = BusClient(bus.endpoints, b"live")
    assert live.snapshot() == [(b"k", b"v")]
    assert bus.counters()["welcomes"] >= 1
    live.close()


def test_bind_failure_raises_from_start(tmp_path):
    first = TemplateBus(str(tmp_path / "a"), endpoint="tcp")
    first.start()
    try:
        port = int(first.endpoints.publish.rsplit(":", 1)[1])
        clash = TemplateBus(str(tmp_path / "b"), endpoint=f"tcp://127.0.0.1:{port}")
        with pytest.raises(zmq.ZMQError):
            clash.start()
        assert not clash.is_alive()
    finally:
        first.stop()


def test_unwritable_persist_path_logged_once_and_bus_keeps_serving(bus_factory, tmp_path, caplog):
    persist = str(tmp_path / "missing-dir" / "t.json")
    with caplog.at_level(logging.WARNING, logger="engine.ipc.template_bus"):
        bus = bus_factory(persist)
        client = BusClient(bus.endpoints, b"a")
        for i in range(2):
            client.publish([(b"k", b"%d" % i)])
            time.sleep(1.1)
        assert wait_for(lambda: bus.counters()["save_errors"] >= 2)
        assert client.snapshot() == [(b"k", b"1")]
        client.close()
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1


def test_same_bus_object_restarts_with_its_state(tmp_path):
    bus = TemplateBus(str(tmp_path / "run"))
    bus.start()
    client = BusClient(bus.endpoints, b"a")
    client.publish([(b"k", b"v")])
    assert wait_for(lambda: bus.state() == {b"k": b"v"})
    bus.stop()
    bus.start()                                     # the same ipc paths: the client reconnects by itself
    try:
        assert client.snapshot(5000) == [(b"k", b"v")]
        client.publish([(b"k", b"w")])
        assert wait_for(lambda: bus.state() == {b"k": b"w"})
    finally:
        client.close()
        bus.stop()
