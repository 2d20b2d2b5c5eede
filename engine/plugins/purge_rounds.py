"""Which worker of a multi-worker plugin (plugin_workers > 1) writes first to a path in a purge round.

The N workers of one plugin aggregate disjoint key sets and purge at the same wall-clock refresh boundaries;
their output must look like one plugin wrote it.  They agree through one file in a state directory,
``<plugin>.purge.json``, which is both

- the lock: fcntl.flock(LOCK_EX) on it around each claim, held while the caller writes, so two workers never
  write one destination at the same moment;
- the state: ``{"paths": {absolute path: last round that wrote it}, "stdout_titled": bool}``, rewritten in
  place under the lock (no rename: the file others have open and locked stays the same file).  An empty or
  corrupt file (a worker killed mid-rewrite) means nothing written yet.  Paths are kept only for the
  KEEP_ROUNDS newest rounds, so the file stays small.  A claim costs ~20 µs; one that records ~35 µs
  (~0.3 ms with 200 files a round).

A round is the refresh boundary (epoch seconds) the purge belongs to: every worker passes the same number.
Path "" is stdout: first is True only until some worker has printed the title, in any round.
The file is opened lazily in the process that claims (a forked child reopens it: flock locks belong to the
open file, which a fork would share).  The state survives worker restarts; the supervisor should reset()
it (or use a fresh state_dir) when the plugin starts afresh.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from typing import Iterator, Optional

KEEP_ROUNDS = 4             # rounds whose paths are remembered (a late worker of an older round appends)
STDOUT = ""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


class PurgeRounds:
    """Claims of (path, round) shared by the workers of one plugin through a file in state_dir."""

    def __init__(self, state_dir: str, plugin_name: str) -> None:
        self.state_dir = state_dir
        self.state_path = os.path.join(state_dir, _safe_name(plugin_name) + ".purge.json")
        self._fd: Optional[int] = None
        self._fd_pid = 0

    # -- the lock ----------------------------------------------------------------------
    def _lock_fd(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            self._fd = os.open(self.state_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    @contextmanager
    def locked(self) -> Iterator[int]:
        """The plugin's lock, held for the block; yields the state file's descriptor."""
        fd = self._lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    # -- the state ---------------------------------------------------------------------
    def _load(self, fd: int) -> dict:
        """The state; empty (nothing written yet) where the file is empty or not what we write."""
        try:
            state = json.loads(os.pread(fd, os.fstat(fd).st_size, 0))
        except (OSError, ValueError, RecursionError):
            return {"paths": {}, "stdout_titled": False}
        paths = state.get("paths") if isinstance(state, dict) else None
        if not isinstance(paths, dict):
            paths = {}
        paths = {p: r for p, r in paths.items() if isinstance(r, int) and not isinstance(r, bool)}
        titled = state.get("stdout_titled") is True if isinstance(state, dict) else False
        return {"paths": paths, "stdout_titled": titled}

    def _save(self, fd: int, state: dict) -> None:
        paths = state["paths"]
        recent = sorted(set(paths.values()))[-KEEP_ROUNDS:]
        if recent:
            oldest = recent[0]
            state["paths"] = {p: r for p, r in paths.items() if r >= oldest}
        data = json.dumps(state, separators=(",", ":")).encode()
        os.ftruncate(fd, len(data))
        os.pwrite(fd, data, 0)

    # -- the API ------------------------------------------------------------------------
    @contextmanager
    def claim(self, path: str, round_id: int) -> Iterator[bool]:
        """Hold the lock; yield True when no worker wrote `path` in round `round_id` (or a later one) yet.

        On a normal exit of the block this worker is recorded as having written `path` in `round_id` (for
        stdout "": as having printed the title); a block that raises records nothing.
        """
        key = os.path.abspath(path) if path else STDOUT
        round_id = int(round_id)
        with self.locked() as fd:
            state = self._load(fd)
            if key == STDOUT:
                first = not state["stdout_titled"]
            else:
                last = state["paths"].get(key)
                first = last is None or last < round_id
            yield first
            if first:
                if key == STDOUT:
                    state["stdout_titled"] = True
                else:
                    state["paths"][key] = round_id
                self._save(fd, state)

    def reset(self) -> None:
        """Forget every claim (a plugin starting afresh)."""
        with self.locked() as fd:
            os.ftruncate(fd, 0)

    def close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = None
