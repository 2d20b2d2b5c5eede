"""`pmengine stats [-F pidfile | --pid PID] [--json]`: the running engine's merged counters.

Exit codes: 0 counters printed, 1 no engine found (or its counters unreadable), 4 printed but the
balance is not ok (some flow is not accounted for: see the `balance` lines).
"""
from __future__ import annotations

import argparse
import json
import sys

from .locate import find_runtime
from .stats_model import load_model
from .summary import summary_lines

EXIT_UNBALANCED = 4


def add_stats_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="counters of the running engine (loss accounting)")
    p.add_argument("-F", dest="pidfile", metavar="FILE", help="the engine's pidfile (default: the only one running)")
    p.add_argument("--pid", type=int, help="the supervisor's pid")
    p.add_argument("--json", action="store_true", help="the whole model as JSON")


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        pid, runtime_dir = find_runtime(args.pidfile, args.pid)
    except LookupError as e:
        print(f"pmengine: {e}", file=sys.stderr)
        return 1
    model = load_model(runtime_dir)
    model["pid"] = pid
    if args.json:
        json.dump(model, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        print(f"pmengine pid {pid}, runtime {runtime_dir}")
        for line in summary_lines(model):
            print(line)
    return 0 if model["balance"]["ok"] else EXIT_UNBALANCED
