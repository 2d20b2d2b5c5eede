"""Looking into a running pmengine from a test: its runtime folder, children, stats files, shm segments."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from engine.ipc.heartbeat import heartbeat_name
from engine.ipc.ring import ring_name
from engine.supervisor import OWNER_FILE, SHM_PREFIX, runtime_dirs


def runtime_dir(supervisor_pid: int, timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in runtime_dirs():
            try:
                if int(Path(folder, OWNER_FILE).read_text().split()[0]) == supervisor_pid:
                    return Path(folder)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no runtime folder for supervisor {supervisor_pid}")


def children(folder: Path) -> dict[str, dict]:
    """name -> {pid, restarts, ...} from children.json."""
    for _ in range(50):
        try:
            return {c["name"]: c for c in json.loads((folder / "children.json").read_text())["children"]}
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError(f"no children.json in {folder}")


def stats(folder: Path, name: str) -> dict:
    try:
        return json.loads((folder / "stats" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(condition: Callable[[], object], timeout: float, what: str, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def shm_segments(run_id: str) -> set[str]:
    """The segments of one run in /dev/shm: its rings and its heartbeat segment."""
    ring_prefix = ring_name(f"{SHM_PREFIX}{run_id}", 0, "x").rsplit("_", 2)[0] + "_"
    return {n for n in os.listdir("/dev/shm")
            if n.startswith(ring_prefix) or n == heartbeat_name(SHM_PREFIX, run_id)}


def run_id_of(folder: Path) -> str:
    return folder.name.split("-")[1]
