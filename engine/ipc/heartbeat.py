"""Heartbeats: one shared-memory slot per child process, beaten every loop turn, watched by the supervisor.

Byte layout of the segment (native-endian uint64 words):

    offset  field
    ------  ---------------------------------------------------------------
         0  magic  b"PMBEAT\\x00\\x01"
         8  slots
        16  creator pid
        24  creator start time (clock ticks after boot; 0: unknown)
        64  slot 0: pid, last beat, busy until, beats       (4 words = 32 bytes)
        96  slot 1 ...

Times are CLOCK_MONOTONIC nanoseconds (time.monotonic_ns(), one clock for every
process of the machine).  Each slot has one writer at a time: the supervisor
arms it when it starts the child (pid, a start-up grace as "busy until"), then
only the child writes it.  A slot is hung when now > max(last beat + timeout,
busy until): a child about to do a long bounded job (a purge, a map reload)
declares busy(seconds) first.  Torn reads are harmless (aligned 8-byte stores).

Like the rings, the segment is opened with shm_open/mmap directly (no
resource tracker); the supervisor creates and unlinks it; cleanup_stale()
removes segments of a dead supervisor.
"""
from __future__ import annotations

import mmap
import os
import time

import _posixshmem
import numpy as np

from .ring import _proc_stat, _shm_path, unlink_dead_segments

MAGIC = int.from_bytes(b"PMBEAT\x00\x01", "little")
HEADER_WORDS = 8
SLOT_WORDS = 6
_MAGIC, _SLOTS, _PID, _START = range(4)
# TAKEN / DONE: datagrams a shard took from its socket / finished (decoded, written to the rings); what a
# shard that dies had taken but not finished is lost with it, and the supervisor counts it (in_flight)
PID, BEAT, BUSY, BEATS, TAKEN, DONE = range(SLOT_WORDS)


def heartbeat_name(prefix: str, run_id: str) -> str:
    return f"{prefix}_hb_{run_id}"


class Heartbeats:
    """The segment: a (slots, SLOT_WORDS) uint64 array; create() in the supervisor, attach() in a child."""

    def __init__(self, name: str, mm: mmap.mmap) -> None:
        self.name = name
        self._mm = mm
        self._words = np.frombuffer(mm, dtype=np.uint64)
        self.slots = int(self._words[_SLOTS])
        self.table = self._words[HEADER_WORDS:HEADER_WORDS + self.slots * SLOT_WORDS].reshape(self.slots, SLOT_WORDS)

    @classmethod
    def create(cls, name: str, slots: int) -> "Heartbeats":
        size = (HEADER_WORDS + max(1, slots) * SLOT_WORDS) * 8
        fd = _posixshmem.shm_open(_shm_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except BaseException:
            _posixshmem.shm_unlink(_shm_path(name))
            raise
        finally:
            os.close(fd)
        words = np.frombuffer(mm, dtype=np.uint64)
        stat = _proc_stat(os.getpid())
        words[_SLOTS] = max(1, slots)
        words[_PID] = os.getpid()
        words[_START] = stat[1] if stat else 0
        words[_MAGIC] = MAGIC                   # last: a segment with a magic is complete
        del words
        return cls(name, mm)

    @classmethod
    def attach(cls, name: str) -> "Heartbeats":
        fd = _posixshmem.shm_open(_shm_path(name), os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if size < HEADER_WORDS * 8 or int(np.frombuffer(mm, np.uint64, 1)[0]) != MAGIC:
            mm.close()
            raise ValueError(f"shm segment {name!r} is not a pmengine heartbeat segment")
        return cls(name, mm)

    # -- supervisor side ------------------------------------------------------
    def arm(self, slot: int, pid: int, grace_s: float) -> None:
        """A child was just started: nothing counts as hung before grace_s (its start-up)."""
        now = time.monotonic_ns()
        row = self.table[slot]
        row[BEATS] = 0
        row[TAKEN] = row[DONE] = 0
        row[BEAT] = now
        row[BUSY] = now + int(grace_s * 1e9)
        row[PID] = pid

    def disarm(self, slot: int) -> None:
        self.table[slot, PID] = 0

    def silent_for(self, slot: int, now_ns: int) -> float:
        """Seconds since the slot's deadline passed (beat + 0 or busy until), <= 0 while it is fine."""
        row = self.table[slot]
        return (now_ns - max(int(row[BEAT]), int(row[BUSY]))) / 1e9

    def beats(self, slot: int) -> int:
        return int(self.table[slot, BEATS])

    def in_flight(self, slot: int) -> int:
        """Datagrams the slot's (dead) child had taken but not finished."""
        row = self.table[slot]
        return max(0, int(row[TAKEN]) - int(row[DONE]))

    # -- child side -------------------------------------------------------------
    def beat(self, slot: int) -> None:
        row = self.table[slot]
        row[BEAT] = time.monotonic_ns()
        row[BEATS] += 1

    def took(self, slot: int, datagrams: int) -> None:
        self.table[slot, TAKEN] += datagrams

    def finished(self, slot: int, datagrams: int) -> None:
        self.table[slot, DONE] += datagrams

    def busy(self, slot: int, seconds: float) -> None:
        now = time.monotonic_ns()
        self.table[slot, BUSY] = now + int(seconds * 1e9)
        self.table[slot, BEAT] = now

    def close(self) -> None:
        self.table = None
        self._words = None
        try:
            self._mm.close()
        except BufferError:             # a view still exported: the mapping goes with the process
            pass

    def unlink(self) -> None:
        try:
            _posixshmem.shm_unlink(_shm_path(self.name))
        except FileNotFoundError:
            pass


def cleanup_stale(prefix: str) -> list[str]:
    """Unlink heartbeat segments named prefix* whose creator process is gone; returns their names."""
    return unlink_dead_segments(prefix, MAGIC, _MAGIC, _PID, _START)
