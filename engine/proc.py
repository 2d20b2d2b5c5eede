"""Process plumbing shared by the supervisor and its children: logging set-up and the child entry point."""
from __future__ import annotations

import importlib
import logging
import logging.handlers
import os
import signal
import sys
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


READY_DIR_ENV = "PMENGINE_READY_DIR"


def handlers_installed() -> None:
    """Called by a child once its SIGTERM/SIGUSR1 handlers are in place: signals held back until now
    arrive, and the supervisor learns (a file named by our pid) that a SIGTERM is now safe to send."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    folder = os.environ.get(READY_DIR_ENV)
    if folder:
        try:
            open(os.path.join(folder, str(os.getpid())), "w").close()
        except OSError:
            pass


HELD_SIGNALS = {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}


def child_entry(role: str, target: str, log_setup: LogSetup, args: tuple) -> None:
    """What every shard and plugin process runs first: signals, logging, then `target` ("module:function").

    SIGTERM and SIGUSR1/2 are held (blocked) until the target calls handlers_installed(): a stop
    request that arrives while the child is still importing is delivered, not fatal.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the whole group; the supervisor coordinates
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    setup_logging(log_setup)
    log = logging.getLogger(f"pmengine.{role}")
    try:
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
