"""From a running engine's pid (or pidfile) to its runtime dir, for `pmengine stats`.

The supervisor's runtime dir is a private (0700) `<runtime base>/pmengine-<run>-XXXX/` (/dev/shm: see
supervisor.runtime_base); in it the supervisor writes `supervisor.pid` ("<pid> <start time>", engine/supervisor.py write_owner_file).  When the configuration has a `pidfile`, the supervisor also writes
`<pidfile>.runtime` (mode 0600, created exclusively, never through a symlink) holding the runtime dir's
path, and removes it at exit.  `pmengine stats -F pidfile` reads both; without a `<pidfile>.runtime`
(or without -F) it scans `<runtime base>/pmengine-*/supervisor.pid` for live engines of the current user.
"""
from __future__ import annotations

import glob
import os
from typing import Optional

PID_NAME = "supervisor.pid"
RUNTIME_SUFFIX = ".runtime"


def _write_private(path: str, text: str) -> None:
    try:
        os.unlink(path)                      # a stale one (an engine that was SIGKILLed)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def publish(runtime_dir: str, pidfile: Optional[str]) -> None:
    """Write <pidfile>.runtime beside the pidfile (supervisor.pid is the supervisor's own)."""
    if pidfile:
        _write_private(pidfile + RUNTIME_SUFFIX, runtime_dir + "\n")


def unpublish(runtime_dir: str, pidfile: Optional[str]) -> None:
    if not pidfile:
        return
    path = pidfile + RUNTIME_SUFFIX
    try:
        with open(path) as f:
            mine = f.read().strip() == runtime_dir
        if mine:
            os.unlink(path)
    except OSError:
        pass


def _read_int(path: str) -> Optional[int]:
    """The first number in a file (a pidfile: "<pid>"; supervisor.pid: "<pid> <start time>")."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owns(runtime_dir: str, pid: int) -> bool:
    return _read_int(os.path.join(runtime_dir, PID_NAME)) == pid


def running_engines() -> list[tuple[int, str]]:
    """(supervisor pid, runtime dir) of every live engine of this user under the runtime base."""
    out = []
    from ..supervisor import runtime_base
    for path in sorted(glob.glob(os.path.join(runtime_base(), "pmengine-*", PID_NAME))):
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        pid = _read_int(path)
        if pid is not None and _alive(pid):
            out.append((pid, os.path.dirname(path)))
    return out


def find_runtime(pidfile: Optional[str] = None, pid: Optional[int] = None) -> tuple[int, str]:
    """(pid, runtime dir) of the engine a pidfile or pid names, or the only one running; LookupError if none."""
    if pidfile:
        pid = _read_int(pidfile)
        if pid is None:
            raise LookupError(f"no pid in {pidfile}")
        try:
            with open(pidfile + RUNTIME_SUFFIX) as f:
                runtime_dir = f.read().strip()
            if _owns(runtime_dir, pid):
                return pid, runtime_dir
        except OSError:
            pass
    if pid is not None and not _alive(pid):
        raise LookupError(f"process {pid} is not running")
    engines = [(p, d) for p, d in running_engines() if pid is None or p == pid]
    if not engines:
        raise LookupError(f"no running pmengine found{f' with pid {pid}' if pid else ''}")
    if len(engines) > 1:
        raise LookupError("several pmengine instances are running (pids "
                          f"{', '.join(str(p) for p, _ in engines)}): choose one with -F or --pid")
    return engines[0]
