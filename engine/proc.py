"""Process plumbing shared by the supervisor and its children: logging set-up, the child entry point,
the child's heartbeat (beat() every loop turn, busy() before a long bounded job) and its tie to the supervisor.

A child dies with its supervisor: PR_SET_PDEATHSIG asks the kernel for a SIGTERM when the parent goes
(the forkserver, which itself exits when the supervisor does), and beat() also notices a changed parent pid.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import logging.handlers
import mmap
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Optional

# A child that exits with this code found a configuration problem: the supervisor halts instead of respawning.
EXIT_CONFIG = 78

LOG_FORMAT = "%(asctime)s %(levelname)s ( %(name)s ): %(message)s"


@dataclass(frozen=True)
class LogSetup:
    logfile: Optional[str] = None
    debug: bool = False


def setup_logging(setup: LogSetup) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if setup.logfile:
        # WatchedFileHandler reopens the file after logrotate moves it
        handler: logging.Handler = logging.handlers.WatchedFileHandler(setup.logfile)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if setup.debug else logging.INFO)


def reopen_logs() -> int:
    """SIGHUP: close and reopen every log file handler (after logrotate or a manual move); how many."""
    n = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
                if isinstance(handler, logging.handlers.WatchedFileHandler):
                    handler._statstream()
            finally:
                handler.release()
            n += 1
    return n


READY_DIR_ENV = "PMENGINE_READY_DIR"


@dataclass(frozen=True)
class ChildEnv:
    """What the supervisor hands every child besides its own arguments (picklable)."""
    ready_dir: Optional[str] = None         # where handlers_installed() leaves a file named by the pid
    heartbeat: Optional[str] = None         # shm name of the heartbeat segment
    slot: int = -1                          # this child's slot in it
    supervisor: int = 0                     # the supervisor's pid


PR_SET_PDEATHSIG = 1
PARENT_CHECK_S = 0.5


class _Child:
    """This process's heartbeat slot and parent watch (module state: one per child process)."""
    beats = None
    slot = -1
    ready_dir: Optional[str] = None
    parent = 0
    supervisor = 0
    next_parent_check = 0.0
    orphaned = False
    reopen_requested = False


def beat() -> None:
    """One loop turn of a child: stamp the heartbeat; reopen logs after SIGHUP; stop if the parent is gone."""
    me = _Child
    if me.beats is not None:
        me.beats.beat(me.slot)
    if me.reopen_requested:
        me.reopen_requested = False
        reopen_logs()
        logging.getLogger("pmengine.core").info("SIGHUP: log file reopened (pid %d)", os.getpid())
    now = time.monotonic()
    if now >= me.next_parent_check and me.parent:
        me.next_parent_check = now + PARENT_CHECK_S
        if (os.getppid() != me.parent or not _alive(me.supervisor)) and not me.orphaned:
            me.orphaned = True
            logging.getLogger("pmengine.core").error("the supervisor is gone: stopping (pid %d)", os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)


def _alive(pid: int) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def busy(seconds: float) -> None:
    """Declare a long bounded job (a purge, a map reload): not hung for `seconds` from now."""
    if _Child.beats is not None:
        _Child.beats.busy(_Child.slot, seconds)


def took(datagrams: int) -> None:
    """A shard took datagrams off its socket (see heartbeat TAKEN/DONE: lost with us if we die before done())."""
    if _Child.beats is not None:
        _Child.beats.took(_Child.slot, datagrams)


def done(datagrams: int) -> None:
    """The datagrams taken are decoded and their records are in the rings."""
    if _Child.beats is not None:
        _Child.beats.finished(_Child.slot, datagrams)


class SignalWakeup:
    """A pipe the interpreter writes a byte to on every signal (signal.set_wakeup_fd; main thread, one per
    process): a process that sleeps in select/poll on `fd` wakes at once for a signal instead of sleeping out
    its timeout (time.sleep resumes after the handler)."""

    def __init__(self) -> None:
        self.fd, wake = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(wake, False)
        signal.set_wakeup_fd(wake, warn_on_full_buffer=False)

    def clear(self) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass

    def sleep(self, seconds: float) -> None:
        """Up to `seconds`, less when a signal arrives."""
        if select.select([self.fd], [], [], seconds)[0]:
            self.clear()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3         # glibc mallopt parameters
MALLOC_MMAP_THRESHOLD = 64 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning it to the kernel at every free.

    A shard or plugin allocates and frees the same few MB of numpy temporaries at every batch; by default glibc
    serves blocks past its (adaptive) mmap threshold with fresh mmaps and trims the heap top, so every batch
    pays thousands of page faults (~30% of an sFlow batch's decode).  The price: a process keeps up to the
    high-water mark of its temporaries (tens of MB)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    except (OSError, AttributeError):           # not glibc: nothing to tune
        pass


MAP_NORESERVE = 0x4000                  # Linux: reserve address space, not swap (pages come when written)


def anonymous_map(size: int, huge_pages: bool = True) -> mmap.mmap:
    """`size` bytes of private anonymous memory: address space only until written (freed when the mmap
    object goes).  huge_pages=False turns transparent huge pages off for it: a sparsely written buffer (one
    datagram per 64 KiB receive slot) then costs the 4 KiB pages written, not every 2 MiB page touched."""
    mm = mmap.mmap(-1, max(size, mmap.PAGESIZE), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
    if not huge_pages:
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    return mm


def _die_with_parent(supervisor: int) -> None:
    """SIGTERM when our parent (the forkserver, or the supervisor under spawn) dies.

    A forkserver exits when every holder of its "alive" pipe is gone; multiprocessing hands that pipe to
    each child it forks, so we close our copy: the supervisor alone keeps its forkserver alive."""
    try:
        from multiprocessing import forkserver
        fd = forkserver._forkserver._forkserver_alive_fd
        if fd is not None:
            os.close(fd)
            forkserver._forkserver._forkserver_alive_fd = None
    except (ImportError, AttributeError, OSError):
        pass
    _Child.parent, _Child.supervisor = os.getppid(), supervisor
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):       # not Linux: beat() still checks the parent pid
        pass
    if os.getppid() != _Child.parent or _Child.parent == 1:     # the parent died before prctl
        os._exit(1)


def handlers_installed() -> None:
    """Called by a child once its SIGTERM/SIGUSR1 handlers are in place: signals held back until now
    arrive, the supervisor learns (a file named by our pid) that a SIGTERM is now safe to send, and the
    start-up grace of the heartbeat ends."""
    busy(0.0)                               # start-up is over: the supervisor's hang watch begins
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    folder = _Child.ready_dir or os.environ.get(READY_DIR_ENV)
    if folder:
        try:
            open(os.path.join(folder, str(os.getpid())), "w").close()
        except OSError:
            pass


HELD_SIGNALS = {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}


def _on_hup(_sig, _frame) -> None:
    _Child.reopen_requested = True


def child_entry(role: str, target: str, log_setup: LogSetup, args: tuple, env: Optional[ChildEnv] = None) -> None:
    """What every shard and plugin process runs first: signals, logging, then `target` ("module:function").

    SIGTERM and SIGUSR1/2 are held (blocked) until the target calls handlers_installed(): a stop
    request that arrives while the child is still importing is delivered, not fatal.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the whole group; the supervisor coordinates
    signal.signal(signal.SIGHUP, _on_hup)             # reopen the log file at the next beat()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})   # held by the forkserver we come from
    env = env or ChildEnv()
    keep_freed_memory()
    if env.heartbeat is not None:
        _die_with_parent(env.supervisor)
    setup_logging(log_setup)
    log = logging.getLogger(f"pmengine.{role}")
    try:
        _Child.ready_dir = env.ready_dir
        if env.heartbeat is not None:
            from .ipc.heartbeat import Heartbeats
            _Child.beats, _Child.slot = Heartbeats.attach(env.heartbeat), env.slot
            beat()
        module, func = target.split(":")
        getattr(importlib.import_module(module), func)(*args)
    except Exception as e:                              # report, then let the supervisor decide
        from .config import ConfigError
        if isinstance(e, ConfigError):
            log.error("%s", e)
            os._exit(EXIT_CONFIG)
        log.error("%s crashed: %s\n%s", role, e, traceback.format_exc())
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
