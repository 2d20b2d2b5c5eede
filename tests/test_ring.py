"""The shared-memory SPSC ring: exactness over wrap-around, drop accounting, real writer/reader processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import _posixshmem
import numpy as np
import pytest

from engine.ipc.ring import HEADER_BYTES, RING_PREFIX, Ring, cleanup_stale, ring_name
from engine.schema import RECORD_DTYPE

from conftest import smaps_mapping

SPAWN = mp.get_context("spawn")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def name():
    """A unique segment name for one test, unlinked afterwards whatever happened."""
    seg = f"pmt{os.getpid()}_{uuid.uuid4().hex[:10]}"
    yield seg
    try:
        _posixshmem.shm_unlink("/" + seg)
    except FileNotFoundError:
        pass


def numbered(start: int, n: int) -> np.ndarray:
    """n records whose `flows` is the sequence start..start+n-1 and `bytes` is 3 * that."""
    rec = np.zeros(n, RECORD_DTYPE)
    rec["flows"] = np.arange(start, start + n, dtype=np.uint64)
    rec["bytes"] = rec["flows"] * 3
    return rec


def shm_exists(seg: str) -> bool:
    return os.path.exists(f"/dev/shm/{seg}")


# --- single process ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_wraparound_exact_over_random_batches(name, seed):
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(50, 1500))
    ring = Ring.create(name, capacity)
    writer, reader = Ring.attach(name), Ring.attach(name)
    next_seq, got, n_read, dropped = 0, [], 0, 0
    for _ in range(2000):
        n = int(rng.integers(0, capacity // 2 + 2))
        room = capacity - (next_seq - n_read)
        ok = writer.write(numbered(next_seq, n))
        assert ok == (n <= room)
        if ok:
            next_seq += n
        else:
            dropped += n
        if rng.random() < 0.6:
            limit = None if rng.random() < 0.5 else int(rng.integers(0, capacity))
            got.append(reader.read(limit))
            assert limit is None or len(got[-1]) <= limit
            n_read += len(got[-1])
    got.append(reader.read())
    seq = np.concatenate(got)["flows"]
    assert np.array_equal(seq, np.arange(next_seq, dtype=np.uint64))
    assert int(np.concatenate(got)["bytes"].sum()) == 3 * next_seq * (next_seq - 1) // 2
    c = ring.counters()
    assert c["written_records"] == c["read_records"] == next_seq
    assert c["dropped_records"] == dropped
    assert ring.pending() == 0
    for r in (writer, reader, ring):
        r.close()
    ring.unlink()


def test_full_ring_drops_and_counts(name):
    ring = Ring.create(name, 100)
    assert ring.write(numbered(0, 60))
    assert not ring.write(numbered(60, 41))        # 40 free: the whole batch is dropped
    assert ring.write(numbered(60, 40))            # exactly fills
    assert not ring.write(numbered(100, 1))
    assert not ring.write(numbered(100, 101))      # larger than the ring: never fits
    assert ring.pending() == 100
    assert ring.counters() == {"written_records": 100, "written_batches": 2, "dropped_records": 143,
                               "dropped_batches": 3, "folded_records": 0, "read_records": 0, "resyncs": 0}
    assert np.array_equal(ring.read()["flows"], np.arange(100))
    empty = ring.read()
    assert len(empty) == 0 and empty.dtype == RECORD_DTYPE
    ring.close()
    ring.unlink()
    assert not shm_exists(name)


def test_batch_larger_than_capacity_on_empty_ring(name):
    ring = Ring.create(name, 10)
    assert not ring.write(numbered(0, 11))
    assert ring.counters()["dropped_batches"] == 1 and ring.pending() == 0
    assert ring.write(numbered(0, 10))
    ring.close()
    ring.unlink()


def test_read_returns_independent_writable_copy(name):
    ring = Ring.create(name, 8)
    ring.write(numbered(0, 5))
    out = ring.read(3)
    ring.write(numbered(5, 6))                     # overwrites slots 0..2 after wrapping
    out["flows"] += 100                            # writable, and does not touch the ring
    assert list(out["flows"]) == [100, 101, 102]
    assert list(ring.read()["flows"]) == list(range(3, 11))
    ring.close()
    ring.unlink()


def test_non_contiguous_input_and_wrong_dtype(name):
    ring = Ring.create(name, 16)
    assert ring.write(numbered(0, 10)[::2])
    assert list(ring.read()["flows"]) == [0, 2, 4, 6, 8]
    with pytest.raises(TypeError):
        ring.write(np.zeros(3, np.uint64))
    with pytest.raises(ValueError):
        Ring.attach(name, dtype=np.dtype([("a", "u8")]))
    ring.close()
    ring.unlink()


def test_custom_dtype_ring(name):
    dt = np.dtype([("k", "u4"), ("v", "f8")])
    ring = Ring.create(name, 7, dtype=dt)
    other = Ring.attach(name, dtype=dt)
    for start in range(0, 50, 3):
        batch = np.zeros(3, dt)
        batch["k"] = np.arange(start, start + 3)
        assert other.write(batch)
        assert list(ring.read()["k"]) == [start, start + 1, start + 2]
    other.close()
    ring.close()
    ring.unlink()


def test_attach_rejects_foreign_segment(name):
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    os.ftruncate(fd, 4096)
    os.close(fd)
    with pytest.raises(ValueError):
        Ring.attach(name)
    with pytest.raises(FileNotFoundError):
        Ring.attach(name + "nope")


def test_create_refuses_existing_name(name):
    ring = Ring.create(name, 4)
    with pytest.raises(FileExistsError):
        Ring.create(name, 4)
    ring.close()
    ring.unlink()


def test_reader_restart_continues_from_header(name):
    ring = Ring.create(name, 50)
    ring.write(numbered(0, 30))
    first = Ring.attach(name)
    assert list(first.read(10)["flows"]) == list(range(10))
    first.close()
    second = Ring.attach(name)                     # a restarted reader
    assert list(second.read()["flows"]) == list(range(10, 30))
    second.close()
    ring.close()
    ring.unlink()


def test_corrupt_indices_resync(name):
    ring = Ring.create(name, 10)
    ring.write(numbered(0, 4))
    with open(f"/dev/shm/{name}", "rb") as f:
        hdr = np.frombuffer(f.read(HEADER_BYTES), np.uint64)
    assert int(hdr[16]) == 4                       # the documented write-index word
    with open(f"/dev/shm/{name}", "r+b") as f:     # a reader index beyond the writer: impossible pair
        f.seek(256)
        f.write(int(99).to_bytes(8, sys.byteorder))
    assert len(ring.read()) == 0
    assert ring.counters()["resyncs"] == 1
    ring.write(numbered(4, 2))
    assert list(ring.read()["flows"]) == [4, 5]
    ring.close()
    ring.unlink()


def test_ring_is_not_picklable(name):
    import pickle
    ring = Ring.create(name, 4)
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    ring.close()
    ring.unlink()


def test_ring_name_short_valid_unique():
    names = set()
    for run in ("r1", "a-very-long-run-id-with-odd/chars", "12345678"):
        for shard in (0, 7, 9999):
            for plugin in ("default", "print[a]", "weird name/ü\x00*", "x" * 500):
                n = ring_name(run, shard, plugin)
                assert len(n) + 1 < 31 and n.startswith(RING_PREFIX)
                assert re.fullmatch(r"[A-Za-z0-9_]+", n)
                assert ring_name(run, shard, plugin) == n
                names.add(n)
    assert len(names) == 3 * 3 * 4
    with pytest.raises(ValueError):
        ring_name("r", 10000, "p")


# --- real processes ----------------------------------------------------------------------------------

def writer_proc(seg: str, total: int, seed: int) -> None:
    """Write `total` numbered records in random batch sizes, retrying when the ring is full."""
    rng = np.random.default_rng(seed)
    ring = Ring.attach(seg)
    start = ring.counters()["written_records"]
    done = 0
    while done < total:
        n = min(int(rng.integers(1, 700)), total - done)
        batch = numbered(start + done, n)
        while not ring.write(batch):
            time.sleep(0.0001)
        done += n
    ring.close()


def reader_proc(seg: str, total: int, result) -> None:
    """Read until `total` records came; report (count, sum of bytes, whether the sequence was contiguous)."""
    ring = Ring.attach(seg)
    count, byte_sum, contiguous = 0, 0, True
    deadline = time.monotonic() + 60
    while count < total and time.monotonic() < deadline:
        got = ring.read()
        if len(got) == 0:
            time.sleep(0.0001)
            continue
        contiguous &= bool(np.array_equal(got["flows"], np.arange(count, count + len(got), dtype=np.uint64)))
        byte_sum += int(got["bytes"].sum())
        count += len(got)
    ring.close()
    result.put((count, byte_sum, contiguous))


def endless_writer_proc(seg: str, ready) -> None:
    """Write numbered batches forever (continuing from the header), until killed."""
    ring = Ring.attach(seg)
    ready.set()
    while True:
        start = ring.counters()["written_records"]
        if not ring.write(numbered(start, 97)):
            time.sleep(0.0001)


def creator_proc(seg: str, ready) -> None:
    """Create a ring and wait to be killed (a supervisor that dies without cleaning up)."""
    Ring.create(seg, 1000)
    ready.set()
    time.sleep(60)


def test_writer_and_reader_processes_exchange_1m_records(name):
    total = 1_000_000
    ring = Ring.create(name, 20_000)
    result = SPAWN.Queue()
    reader = SPAWN.Process(target=reader_proc, args=(name, total, result))
    writer = SPAWN.Process(target=writer_proc, args=(name, total, 1))
    reader.start()
    writer.start()
    count, byte_sum, contiguous = result.get(timeout=90)
    writer.join(30)
    reader.join(30)
    assert writer.exitcode == 0 and reader.exitcode == 0
    assert count == total and contiguous
    assert byte_sum == 3 * total * (total - 1) // 2
    c = ring.counters()
    assert c["written_records"] == c["read_records"] == total
    assert c["written_batches"] > 1000
    ring.close()
    ring.unlink()


def test_writer_killed_then_restarted_continues(name):
    ring = Ring.create(name, 5_000)
    ready = SPAWN.Event()
    first = SPAWN.Process(target=endless_writer_proc, args=(name, ready))
    first.start()
    assert ready.wait(30)
    got, n_read = [], 0
    while n_read < 20_000:                         # drain while it writes, then kill it mid-stream
        batch = ring.read()
        got.append(batch)
        n_read += len(batch)
        if not len(batch):
            time.sleep(0.0001)
    os.kill(first.pid, signal.SIGKILL)
    first.join(10)
    assert first.exitcode == -signal.SIGKILL
    second = SPAWN.Process(target=writer_proc, args=(name, 30_000, 2))   # a restarted writer
    second.start()
    deadline = time.monotonic() + 60
    while second.is_alive() or ring.pending():
        batch = ring.read()
        got.append(batch)
        if not len(batch):
            time.sleep(0.0001)
        assert time.monotonic() < deadline
    second.join(10)
    assert second.exitcode == 0
    flows = np.concatenate(got)["flows"]
    written = ring.counters()["written_records"]
    assert len(flows) == written >= 50_000
    assert np.array_equal(flows, np.arange(written, dtype=np.uint64))
    ring.close()
    ring.unlink()


def test_cleanup_stale_removes_segment_of_killed_creator():
    prefix = f"pmt{os.getpid()}s_"
    dead, live, foreign = prefix + "dead", prefix + "live", prefix + "foreign"
    ready = SPAWN.Event()
    creator = SPAWN.Process(target=creator_proc, args=(dead, ready))
    creator.start()
    try:
        assert ready.wait(30)
        live_ring = Ring.create(live, 10)
        fd = _posixshmem.shm_open("/" + foreign, os.O_CREAT | os.O_RDWR, mode=0o600)
        os.ftruncate(fd, 4096)
        os.close(fd)
        assert cleanup_stale(prefix) == []          # creator still alive: nothing to remove
        os.kill(creator.pid, signal.SIGKILL)
        creator.join(10)
        assert shm_exists(dead)
        assert cleanup_stale(prefix) == [dead]
        assert not shm_exists(dead)
        assert shm_exists(live) and shm_exists(foreign)
        live_ring.close()
        live_ring.unlink()
    finally:
        if creator.is_alive():
            os.kill(creator.pid, signal.SIGKILL)
            creator.join(10)
        for seg in (dead, live, foreign):
            try:
                _posixshmem.shm_unlink("/" + seg)
            except FileNotFoundError:
                pass


CHILD_ATTACH_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    import numpy as np
    from engine.ipc.ring import Ring
    from engine.schema import RECORD_DTYPE

    def attach_and_exit(seg, close):
        ring = Ring.attach(seg)
        ring.write(np.zeros(3, RECORD_DTYPE))
        if close:
            ring.close()
        else:
            os._exit(0)                 # dies without any cleanup, still attached

    if __name__ == "__main__":
        seg = sys.argv[1]
        ring = Ring.create(seg, 10)
        ctx = mp.get_context("spawn")
        for close in (True, False):
            p = ctx.Process(target=attach_and_exit, args=(seg, close))
            p.start()
            p.join(30)
            assert p.exitcode == 0, p.exitcode
            assert os.path.exists("/dev/shm/" + seg), "a child removed the segment"
        print("pending", ring.pending())
        ring.close()
        ring.unlink()
        print("unlinked", not os.path.exists("/dev/shm/" + seg))
""")


def test_attaching_child_neither_unlinks_nor_warns(name, tmp_path):
    script = tmp_path / "child_attach.py"
    script.write_text(CHILD_ATTACH_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script), name], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pending 6" in proc.stdout and "unlinked True" in proc.stdout
    assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr


def test_offered_records_are_written_folded_or_dropped(name):
    """A writer that folded records before writing says how many it was offered: written + folded + dropped
    = offered, whether the batch fits or not."""
    ring = Ring.create(name, 100)
    assert ring.write(numbered(0, 10), offered=25)          # 25 offered, folded into 10
    assert not ring.write(numbered(10, 95), offered=300)    # does not fit: all 300 offered count as dropped
    assert ring.write(numbered(10, 5))
    c = ring.counters()
    assert (c["written_records"], c["folded_records"], c["dropped_records"]) == (15, 15, 300)
    assert c["written_records"] + c["folded_records"] + c["dropped_records"] == 25 + 300 + 5
    ring.close()
    ring.unlink()


def test_read_view_is_the_ring_itself_until_released(name):
    ring = Ring.create(name, 100)
    assert ring.write(numbered(0, 70))
    view = ring.read_view(50)
    assert np.array_equal(view["flows"], np.arange(50))
    assert not ring.write(numbered(70, 40))         # not released yet: only 30 free
    ring.release(len(view))
    del view
    assert ring.write(numbered(70, 40))             # crosses the end of the slots
    first = ring.read_view()                        # a view never crosses the end: up to slot 99
    assert np.array_equal(first["flows"], np.arange(50, 100))
    ring.release(len(first))
    del first
    rest = ring.read_view()
    assert np.array_equal(rest["flows"], np.arange(100, 110))
    ring.release(len(rest))
    del rest
    assert ring.pending() == 0 and len(ring.read_view()) == 0
    assert ring.counters()["read_records"] == 110
    ring.close()
    ring.unlink()


@pytest.mark.parametrize("seed", range(3))
def test_write_rows_gathers_exactly_across_the_wrap(name, seed):
    """write_rows(records, rows) is write(records[rows]): over random batches and the ring's wrap."""
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(50, 500))
    ring = Ring.create(name, capacity)
    expected, got, dropped = [], [], 0
    for _ in range(500):
        source = numbered(int(rng.integers(0, 10**9)), int(rng.integers(1, capacity)))
        rows = np.flatnonzero(rng.random(len(source)) < 0.5)
        room = capacity - ring.pending()
        ok = ring.write_rows(source, rows, offered=len(rows) + 3)
        assert ok == (len(rows) <= room)
        if ok:
            expected.append(source[rows]["flows"])
        else:
            dropped += len(rows) + 3 if len(rows) else 0
        if rng.random() < 0.5:
            got.append(ring.read()["flows"])
    got.append(ring.read()["flows"])
    assert np.array_equal(np.concatenate(got), np.concatenate(expected))
    c = ring.counters()
    assert c["dropped_records"] == dropped
    written = sum(len(e) for e in expected)
    assert c["written_records"] == written and c["folded_records"] == 3 * sum(1 for e in expected if len(e))
    with pytest.raises(TypeError):
        ring.write_rows(np.zeros(3, np.dtype([("x", "u8")])), np.arange(3))
    ring.close()
    ring.unlink()


def _resident_kib(address: int) -> int:
    return int(smaps_mapping(address)["Rss"].split()[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MAP_POPULATE and smaps are Linux's")
def test_attached_ring_is_mapped_whole_at_once(name):
    """Writer and reader attach with their page tables filled: no page fault per 4 KiB on the first pass round
    the ring.  The creator (the supervisor, which reads only the header) maps pages on demand."""
    creator = Ring.create(name, 4096)
    attached = Ring.attach(name)
    try:
        size_kib = (HEADER_BYTES + 4096 * RECORD_DTYPE.itemsize) // 1024
        assert _resident_kib(attached._slots.ctypes.data) >= size_kib - 4
        assert _resident_kib(creator._slots.ctypes.data + 4096 * RECORD_DTYPE.itemsize // 2) < size_kib // 2
    finally:
        attached.close()
        creator.close()
        creator.unlink()
