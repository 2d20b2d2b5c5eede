"""`pmengine` command line: start (foreground or -D), --check, stop, status, stats, client (the pmacct query client)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Optional

from . import __version__

log = logging.getLogger("pmengine.core")

EXIT_USAGE = 2


def _start_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="run the collector")
    p.add_argument("-f", dest="config", metavar="FILE", help="configuration file (pmacct syntax)")
    p.add_argument("--shards", type=int, default=1, help="receiver processes sharing the UDP port (default 1)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("-D", dest="daemonize", action="store_true", help="daemonize (as `daemonize: true`)")
    p.add_argument("-l", dest="nfacctd_port", metavar="PORT", help="UDP port (nfacctd_port)")
    p.add_argument("-L", dest="nfacctd_ip", metavar="IP", help="listen address (nfacctd_ip)")
    p.add_argument("-P", dest="plugins", metavar="PLUGINS", help="plugins (as `plugins:`)")
    p.add_argument("-c", dest="aggregate", metavar="PRIMITIVES", help="aggregation primitives (as `aggregate:`)")
    p.add_argument("-r", dest="print_refresh_time", metavar="SECS", help="refresh time (print_refresh_time)")
    p.add_argument("-I", dest="pcap_savefile", metavar="PCAP", help="read a pcap/pcapng file instead of a socket")
    p.add_argument("-F", dest="pidfile", metavar="FILE", help="pidfile")
    p.add_argument("-W", dest="pcap_savefile_wait", action="store_true", help="keep running after the pcap is read")
    p.add_argument("-d", dest="debug", action="store_true", help="debug logging")


def _overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for key in ("nfacctd_port", "nfacctd_ip", "plugins", "aggregate", "print_refresh_time", "pcap_savefile", "pidfile"):
        value = getattr(args, key)
        if value is not None:
            out.append((key, value))
    for flag in ("daemonize", "pcap_savefile_wait", "debug"):
        if getattr(args, flag):
            out.append((flag, "true"))
    return out


def daemonize() -> None:
    """Classic double fork; stdio to /dev/null (log with `logfile`)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(fd, std)


def write_pidfile(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def read_pidfile(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def cmd_start(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .proc import LogSetup, setup_logging
    if args.shards < 1:
        print("pmengine: --shards must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(args.config, _overrides(args))
    except ConfigError as e:
        print(f"pmengine: configuration error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pmengine: cannot read configuration: {e}", file=sys.stderr)
        return 1
    if args.check:
        print(f"pmengine: configuration OK ({len(cfg.plugins)} plugin(s): "
              f"{', '.join(f'{p.type}[{p.name}]' for p in cfg.plugins)})")
        return 0
    core = cfg.core
    os.umask(core.files_umask)          # pmacct's files_umask: logs, pidfile, outputs, sockets (children inherit it)
    if core.daemonize:
        if not core.logfile:
            print("pmengine: warning: daemonize without logfile: logs are discarded", file=sys.stderr)
        daemonize()
    log_setup = LogSetup(core.logfile, core.debug)
    setup_logging(log_setup)
    if core.pidfile:
        write_pidfile(core.pidfile)
    from .supervisor import Supervisor
    log.info("pmengine %s starting: %d shard(s), plugins %s", __version__, args.shards,
             ", ".join(f"{p.type}[{p.name}]" for p in cfg.plugins))
    try:
        code = Supervisor(cfg, args.shards, log_setup).run()
    finally:
        if core.pidfile and read_pidfile(core.pidfile) == os.getpid():
            os.unlink(core.pidfile)
    # Everything is written and every child is gone: leave without tearing the interpreter down (with numpy and
    # zmq loaded that is ~0.1 s of CPU, at every stop, for nothing).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_stop(args: argparse.Namespace) -> int:
    pid = read_pidfile(args.pidfile)
    if pid is None:
        print(f"pmengine: no pid in {args.pidfile}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"pmengine: process {pid} is not running", file=sys.stderr)
        return 1
    from .ipc.ring import _process_alive       # False for a zombie too (exited, its parent not reaped it yet)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _process_alive(pid, 0):
            return 0
        time.sleep(0.1)
    print(f"pmengine: process {pid} still running after {args.timeout}s", file=sys.stderr)
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    pid = read_pidfile(args.pidfile)
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pid = None
    if pid is not None:
        from .supervisor import status_report
        text, healthy = status_report(pid)
        print(text)
        return 0 if healthy else 1
    print("pmengine not running")
    return 3


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["client"]:          # `pmengine client ...`: the pmacct query client, its own switches
        from .client.cli import main as client_main
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(prog="pmengine", description="pmacct-class NetFlow/IPFIX collector")
    parser.add_argument("--version", action="version", version=f"pmengine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _start_parser(sub)
    for name, helptext in (("stop", "stop a daemon by its pidfile"), ("status", "is the daemon running")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("-F", dest="pidfile", required=True, metavar="FILE")
        p.add_argument("--timeout", type=float, default=60.0)
    from .ops.cli_stats import add_stats_parser, cmd_stats
    add_stats_parser(sub)
    args = parser.parse_args(argv)
    return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "stats": cmd_stats}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
