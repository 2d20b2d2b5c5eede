"""Single-producer single-consumer record ring in POSIX shared memory.

One ring per (shard, plugin): the shard writes decoded record batches, the
plugin drains them.  The supervisor creates and unlinks every segment; shards
and plugins only attach and close.  A full ring never blocks the writer: the
batch is dropped and counted in the shared header.

Byte layout of a segment (all header words are native-endian uint64):

    offset  field
    ------  -----------------------------------------------------------------
         0  magic  b"PMRING\\x00\\x01"
         8  layout version (2)
        16  header size in bytes (512): where record slot 0 starts
        24  capacity, in records
        32  record size, in bytes
        40  dtype fingerprint (blake2b-64 of the dtype description)
        48  creator pid
        56  creator start time (Linux clock ticks after boot; 0: unknown)
       128  write index: records ever committed (writer-owned)
       136  written batches                          (writer-owned)
       144  dropped records                          (writer-owned)
       152  dropped batches                          (writer-owned)
       160  folded records: offered records the writer merged into others
            before writing (shard pre-aggregation)   (writer-owned)
       256  read index: records ever consumed        (reader-owned)
       264  resyncs: impossible index pairs the reader skipped over (reader-owned)
       512  record slots: capacity x record size bytes

The writer and reader words sit on separate 128-byte blocks to avoid false
sharing.  Indices are monotonic; a record's slot is index % capacity, and a
batch that crosses the end of the slots is copied in two pieces.

Ordering: the writer copies the records first and stores the write index last
(one aligned 8-byte store); the reader loads the write index, copies, then
stores the read index.  Each word has one writing process, so no atomic
read-modify-write is needed.  This relies on x86-64's total store order; a
weakly ordered CPU would need a fence between the copy and the index store.

Segments are opened with shm_open/mmap directly, bypassing
multiprocessing.shared_memory, so Python's resource_tracker never sees them:
an attaching child can neither unlink a segment at exit nor warn about it as
"leaked".  Recovery after a SIGKILLed supervisor is explicit: cleanup_stale().
"""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import shutil

import _posixshmem
import numpy as np

from engine.schema import RECORD_DTYPE

MAGIC = int.from_bytes(b"PMRING\x00\x01", "little")
LAYOUT_VERSION = 2
HEADER_BYTES = 512
RING_PREFIX = "pme_"            # every ring_name() starts with this; pass it to cleanup_stale()
SHM_DIR = "/dev/shm"            # where Linux exposes POSIX shared memory

# Header word indices (offset // 8).
_MAGIC, _VERSION, _HEADER, _CAPACITY, _RECSIZE, _FINGERPRINT, _PID, _START = range(8)
_WRITE, _W_BATCHES, _DROP_RECORDS, _DROP_BATCHES, _FOLDED = 16, 17, 18, 19, 20
_READ, _RESYNCS = 32, 33

MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)     # Linux
_MAX_NAME = 30                  # with the leading "/" this stays under 31 characters (macOS PSHMNAMLEN)
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9]{1,8}")


def dtype_fingerprint(dtype: np.dtype) -> int:
    """A 64-bit fingerprint of a record dtype, so a reader cannot attach with a different layout."""
    digest = hashlib.blake2b(repr(np.dtype(dtype).descr).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def ring_name(run_id: str, shard: int, plugin: str) -> str:
    """A short POSIX shm name, unique per (run, shard, plugin): "pme_<run>_<shard>_<plugin hash>".

    run_id is used as-is when it is 1-8 ASCII letters/digits, hashed otherwise;
    the plugin name (any characters) is always hashed.
    """
    if not 0 <= shard <= 9999:
        raise ValueError(f"shard index {shard} out of range 0..9999")
    run = run_id if _SAFE_RUN_ID.fullmatch(run_id) else _short_hash(run_id)
    name = f"{RING_PREFIX}{run}_{shard}_{_short_hash(plugin)}"
    assert len(name) <= _MAX_NAME
    return name


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


def _shm_path(name: str) -> str:
    return "/" + name.lstrip("/")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc/<pid>/stat, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()   # fields 3.. (comm may hold spaces and parens)
    try:
        return rest[0], int(rest[19])
    except (IndexError, ValueError):
        return None


def _process_alive(pid: int, start_time: int) -> bool:
    """True while pid runs and is the same process (same start time) that created a segment."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True                             # no /proc: trust kill(0)
    state, started = stat
    if state in ("Z", "X"):
        return False                            # killed, not yet reaped
    return not (start_time and started != start_time)


class RingSpaceError(OSError):
    """The shared memory for a ring could not be allocated (/dev/shm too small)."""


def _allocate(fd: int, name: str, size: int) -> None:
    """Allocate the segment's memory now: a /dev/shm too small for the rings fails here, at start, with a
    clear error -- not later with a SIGBUS in the shard that first writes past what tmpfs could give -- and
    a writer's first touch of a page only maps it (~1 us) instead of allocating and zeroing it (~4 us).  The
    pages count in a process's RSS once it touches them, as before."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            free = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
            raise RingSpaceError(e.errno, f"cannot allocate {size >> 20} MiB of shared memory for ring {name!r} "
                                 f"({free >> 20} MiB free in /dev/shm): lower plugin_pipe_size or grow /dev/shm") from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):     # a filesystem without fallocate: pages on demand
            raise


class Ring:
    """An SPSC ring of fixed-size records in shared memory (see the module docstring for the layout)."""

    def __init__(self, name: str, mm: mmap.mmap, dtype: np.dtype, owner: bool):
        """Use Ring.create() or Ring.attach()."""
        self.name = name.lstrip("/")
        self.dtype = np.dtype(dtype)
        self._mm = mm
        self._owner = owner
        self._hdr = memoryview(mm)[:HEADER_BYTES].cast("Q")
        self.capacity = self._hdr[_CAPACITY]
        self._size = self.dtype.itemsize
        # Raw bytes of the slots: byte copies are memcpy, while structured-dtype copies go field by field.
        self._slots = np.frombuffer(mm, dtype=np.uint8, count=self.capacity * self._size, offset=HEADER_BYTES)
        self._records = self._slots.view(self.dtype)
        self._rows = self._slots.view(np.dtype((np.void, self._size)))     # opaque rows: the cheapest take
        self._empty = np.frombuffer(np.empty(0, np.uint8), self.dtype)

    @classmethod
    def create(cls, name: str, capacity: int, dtype=RECORD_DTYPE) -> "Ring":
        """Create a new segment (supervisor only); capacity is in records. FileExistsError if it exists."""
        dtype = np.dtype(dtype)
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1 record, got {capacity}")
        if dtype.itemsize < 1 or dtype.hasobject:
            raise ValueError(f"ring records need a fixed-size, object-free dtype, got {dtype}")
        size = HEADER_BYTES + capacity * dtype.itemsize
        fd = _posixshmem.shm_open(_shm_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, size)
            _allocate(fd, name, size)
            mm = mmap.mmap(fd, size)
        except BaseException:
            _posixshmem.shm_unlink(_shm_path(name))
            raise
        finally:
            os.close(fd)
        hdr = memoryview(mm)[:HEADER_BYTES].cast("Q")
        stat = _proc_stat(os.getpid())
        hdr[_VERSION] = LAYOUT_VERSION
        hdr[_HEADER] = HEADER_BYTES
        hdr[_CAPACITY] = capacity
        hdr[_RECSIZE] = dtype.itemsize
        hdr[_FINGERPRINT] = dtype_fingerprint(dtype)
        hdr[_PID] = os.getpid()
        hdr[_START] = stat[1] if stat else 0
        hdr[_MAGIC] = MAGIC                     # last: a segment with a magic is complete
        hdr.release()
        return cls(name, mm, dtype, owner=True)

    @classmethod
    def attach(cls, name: str, dtype=RECORD_DTYPE) -> "Ring":
        """Attach to an existing segment (writer or reader, after its process started)."""
        dtype = np.dtype(dtype)
        fd = _posixshmem.shm_open(_shm_path(name), os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                raise ValueError(f"shm segment {name!r} is too small to be a ring ({size} bytes)")
            # page tables filled now (the pages exist since create()'s fallocate): the writer and reader do not
            # take a page fault per 4 KiB of slots on their first pass round the ring (~4 us each here)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | MAP_POPULATE)
        finally:
            os.close(fd)
        hdr = memoryview(mm)[:HEADER_BYTES].cast("Q")
        try:
            problem = None
            if hdr[_MAGIC] != MAGIC or hdr[_VERSION] != LAYOUT_VERSION:
                problem = "is not a pmengine ring (bad magic or layout version)"
            elif hdr[_RECSIZE] != dtype.itemsize or hdr[_FINGERPRINT] != dtype_fingerprint(dtype):
                problem = f"holds records of another dtype (record size {hdr[_RECSIZE]})"
            elif HEADER_BYTES + hdr[_CAPACITY] * dtype.itemsize > size:
                problem = "is shorter than its header says"
        finally:
            hdr.release()
        if problem:
            mm.close()
            raise ValueError(f"shm segment {name!r} {problem}")
        return cls(name, mm, dtype, owner=False)

    def __reduce__(self):
        raise TypeError("a Ring is not picklable: pass its name and Ring.attach() in the child process")

    def write(self, records: np.ndarray, offered: int | None = None) -> bool:
        """Append a whole batch, or nothing: False (batch dropped and counted) when it does not fit now.

        offered: how many records the writer was given for this batch before folding some into others (>= the
        batch's length): a written batch adds the difference to the folded count, a dropped one counts all of
        them as dropped, so that offered = written + folded + dropped always holds."""
        n = len(records)
        w = self._reserve(records, n, offered)
        if w is None:
            return n == 0
        src = np.frombuffer(np.ascontiguousarray(records), np.uint8)
        size, cap = self._size, self.capacity
        pos = (w % cap) * size
        first = min(n * size, cap * size - pos)
        self._slots[pos:pos + first] = src[:first]
        if first < n * size:
            self._slots[:n * size - first] = src[first:]
        self._commit(w, n)
        return True

    def write_rows(self, records: np.ndarray, rows: np.ndarray, offered: int | None = None) -> bool:
        """write(records[rows], offered) without the intermediate copy: the rows are gathered straight into
        the slots (a plugin worker's share of a batch, engine/shards/partition.py)."""
        n = len(rows)
        w = self._reserve(records, n, offered)
        if w is None:
            return n == 0
        start = w % self.capacity
        first = min(n, self.capacity - start)
        # mode="clip": numpy buffers `out` in the default mode "raise" (~15x slower); rows are in range anyway.
        # Opaque rows of the record's size: a plain copy per row instead of the structured dtype's (~15% less)
        src = np.ascontiguousarray(records).view(self._rows.dtype)
        np.take(src, rows[:first], out=self._rows[start:start + first], mode="clip")
        if first < n:
            np.take(src, rows[first:], out=self._rows[:n - first], mode="clip")
        self._commit(w, n)
        return True

    def _reserve(self, records: np.ndarray, n: int, offered: int | None) -> int | None:
        """The write index for n records, or None: nothing to write (n == 0), or no room (the batch is dropped:
        its offered records counted).  Counts the records folded away (offered - n) of a batch that fits."""
        if records.dtype != self.dtype:
            raise TypeError(f"ring {self.name} carries {self.dtype}, got records of {records.dtype}")
        if n == 0:
            return None
        offered = n if offered is None else offered
        hdr = self._hdr
        w = hdr[_WRITE]
        if n > self.capacity - (w - hdr[_READ]):
            hdr[_DROP_RECORDS] += offered
            hdr[_DROP_BATCHES] += 1
            return None
        if offered != n:
            hdr[_FOLDED] += offered - n
        return w

    def _commit(self, w: int, n: int) -> None:
        self._hdr[_W_BATCHES] += 1
        self._hdr[_WRITE] = w + n               # commit: the reader sees the batch from here on

    def _readable(self, max_records: int | None) -> tuple[int, int]:
        """(read index, records to take): the pending records, up to max_records.  An impossible index pair
        (corrupted header) is counted and skipped: the reader jumps to the writer and takes nothing."""
        hdr = self._hdr
        w, r = hdr[_WRITE], hdr[_READ]
        n = w - r
        if n < 0 or n > self.capacity:
            hdr[_RESYNCS] += 1
            hdr[_READ] = w
            return w, 0
        if max_records is not None:
            n = min(n, max(0, max_records))
        return r, n

    def read(self, max_records: int | None = None) -> np.ndarray:
        """A copy of up to max_records pending records (possibly empty); advances the read index."""
        r, n = self._readable(max_records)
        if n == 0:
            return self._empty
        cap, size = self.capacity, self._size
        dst = np.empty(n * size, np.uint8)
        pos = (r % cap) * size
        first = min(n * size, cap * size - pos)
        dst[:first] = self._slots[pos:pos + first]
        if first < n * size:
            dst[first:] = self._slots[:n * size - first]
        self._hdr[_READ] = r + n                # release the slots to the writer
        return np.frombuffer(dst, self.dtype)

    def read_view(self, max_records: int | None = None) -> np.ndarray:
        """Up to max_records pending records as a view of the ring itself (no copy; never across the end of the
        slots, so possibly fewer than pending): valid until release(), which gives the slots back to the writer.
        The plugin loop's read: copying each batch out cost more (fresh pages every time) than using it."""
        r, n = self._readable(max_records)
        pos = r % self.capacity
        n = min(n, self.capacity - pos)
        if n == 0:
            return self._empty
        return self._records[pos:pos + n]

    def release(self, n: int) -> None:
        """Give back the n records of the last read_view() (their slots may be overwritten from now on)."""
        self._hdr[_READ] = self._hdr[_READ] + n

    def pending(self) -> int:
        """Records written and not yet read."""
        return self._hdr[_WRITE] - self._hdr[_READ]

    def counters(self) -> dict[str, int]:
        """The shared counters: what the writer committed and dropped, what the reader consumed."""
        h = self._hdr
        return {
            "written_records": h[_WRITE],
            "written_batches": h[_W_BATCHES],
            "dropped_records": h[_DROP_RECORDS],
            "dropped_batches": h[_DROP_BATCHES],
            "folded_records": h[_FOLDED],
            "read_records": h[_READ],
            "resyncs": h[_RESYNCS],
        }

    def creator_pid(self) -> int:
        return self._hdr[_PID]

    def close(self) -> None:
        """Detach from the segment (every process); the ring object is unusable afterwards."""
        if self._mm is None:
            return
        self._hdr.release()
        self._slots = self._records = self._rows = None
        self._mm.close()
        self._mm = None

    def unlink(self) -> None:
        """Remove the segment name (supervisor only); attached processes keep their mapping until they close."""
        try:
            _posixshmem.shm_unlink(_shm_path(self.name))
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cleanup_stale(prefix: str = RING_PREFIX) -> list[str]:
    """Unlink rings under /dev/shm named prefix* whose creator process is gone; returns their names.

    Segments that are not pmengine rings (no magic) or whose creator still runs are left alone.
    """
    return unlink_dead_segments(prefix, MAGIC, _MAGIC, _PID, _START)


def unlink_dead_segments(prefix: str, magic: int, magic_word: int, pid_word: int, start_word: int) -> list[str]:
    """Unlink /dev/shm segments named prefix* whose header (uint64 words) has `magic` at magic_word and names,
    at pid_word / start_word, a creator process that is gone; returns their names.  Shared by rings and
    heartbeat segments."""
    header = 8 * (max(magic_word, pid_word, start_word) + 1)
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        try:
            with open(os.path.join(SHM_DIR, entry), "rb") as f:
                raw = f.read(header)
        except OSError:
            continue
        if len(raw) < header:
            continue
        words = np.frombuffer(raw, dtype=np.uint64)
        if int(words[magic_word]) != magic or _process_alive(int(words[pid_word]), int(words[start_word])):
            continue
        try:
            _posixshmem.shm_unlink(_shm_path(entry))
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed
