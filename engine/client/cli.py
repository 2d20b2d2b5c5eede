"""`pmengine client` / `pmacct`: query a memory plugin with pmacct 1.7.7's client switches.

Errors print "ERROR: ..." on stdout and exit 1, as pmacct's client does; a
missing or refused socket is "ERROR: Unable to connect to 'PATH'".
"""
from __future__ import annotations

import getopt
import socket
import sys
from typing import Optional

import numpy as np

from ..plugins.memory.table import Snapshot, snapshot_rows
from .output import OutputOptions, counter_line, render_table
from .protocol import ProtocolError, recv_exact, recv_json, send_json
from .query import QueryError, parse_primitives, parse_query, split_queries

DEFAULT_PATH = "/tmp/collect.pipe"
VERSION = "pmengine client (pmacct 1.7.7 compatible)"
COUNTERS = ("bytes", "packets", "flows")
OUTPUTS = ("formatted", "csv", "json")

USAGE = """\
pmengine memory plugin client (pmacct 1.7.7 compatible)
Usage: pmacct [query]

Queries:
  -h\tShow this page
  -s\tShow statistics
  -N\t<matching data>[';'<matching data>] | 'file:'<filename>
\tMatch primitives; print counters only (requires -c)
  -M\t<matching data>[';'<matching data>] | 'file:'<filename>
\tMatch primitives; print formatted table (requires -c)
  -n\t<bytes | packets | flows | all>
\tSelect the counters to print (applies to -N)
  -S\tSum counters instead of returning a single counter for each request (applies to -N)
  -a\tDisplay all table fields (even those currently unused)
  -c\t<primitive>[,<primitive>...]
\tSelect primitives to match (required by -N and -M)
  -T\t<bytes | packets | flows>,[<# how many>]
\tOutput top N statistics (applies to -M and -s)
  -e\tClear statistics
  -i\tShow time (in seconds) since statistics were last cleared (ie. pmacct -e)
  -r\tReset counters (applies to -N and -M)
  -l\tPerform locking of the table (accepted: every query reads a consistent snapshot)
  -t\tShow memory table status
  -p\t<file>
\tSocket for client-server communication (DEFAULT: /tmp/collect.pipe)
  -O\tSet output < formatted | csv | json > (applies to -M and -s)
  -E\tSet sparator for CSV format
  -I\tSet timestamps in 'since Epoch' format
  -u\tLeave IP protocols in numerical format
  -0\tAlways set timestamps to UTC (even if the timezone configured on the system is different)
  -V\tPrint version and exit
"""


class ClientError(Exception):
    pass


def request(path: str, req: dict) -> tuple[dict, bytes]:
    """Send one request to the plugin at path; (header, payload)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError:
            raise ClientError(f"Unable to connect to '{path}'\n") from None
        try:
            send_json(sock, req)
            header, rest = recv_json(sock)
            payload = recv_exact(sock, int(header.get("payload", 0)), rest)
        except (OSError, ProtocolError) as e:
            raise ClientError(f"query to '{path}' failed: {e}") from None
    finally:
        sock.close()
    if not header.get("ok"):
        raise ClientError(str(header.get("error", "query refused")))
    return header, bytes(payload) if not isinstance(payload, bytearray) else payload


def decode_rows(header: dict, payload: bytearray) -> Snapshot:
    """The rows of a query reply as a Snapshot of the plugin's table layout."""
    from ..plugins.aggregate import KeySpec
    aggregate = tuple(header["aggregate"])
    spec = KeySpec.create(aggregate, False)
    n, c = int(header["rows"]), int(header["counters"])
    if spec.dtype.itemsize != header["itemsize"]:
        raise ClientError("the plugin's table layout differs from this client's (different pmengine versions?)")
    cut = n * spec.dtype.itemsize
    keys = np.frombuffer(payload, dtype=spec.dtype, count=n)
    counts = np.frombuffer(payload, dtype=np.uint64, count=c * n, offset=cut).reshape(c, n)
    return Snapshot(aggregate, keys, counts)


def top(rows, spec: Optional[tuple[str, Optional[int]]]):
    """-T counter[,N]: rows sorted by the counter, largest first (stable), the first N."""
    if spec is None:
        return rows
    counter, count = spec
    order = np.argsort(-getattr(rows, counter).astype(np.float64), kind="stable")
    if count is not None:
        order = order[:count]
    return rows.take(order)


def parse_top(text: str, out) -> Optional[tuple[str, Optional[int]]]:
    name, _, count = text.partition(",")
    if name not in COUNTERS:
        print(f"WARN: -T, ignoring unknown counter type: {name}.", file=out)
        return None
    if count:
        if not count.isdigit():
            raise ClientError(f"-T: invalid number of entries: '{count}'")
        return name, int(count)
    return name, None


def main(argv: Optional[list[str]] = None) -> int:
    """`pmengine client ARGS` / the `pmacct` console script (argv: the switches, without the program name)."""
    argv = sys.argv[1:] if argv is None else argv
    out = sys.stdout
    try:
        return run(argv, out)
    except (ClientError, QueryError) as e:
        print(f"ERROR: {e}", file=out)
        return 1
    except BrokenPipeError:
        return 0


def run(argv: list[str], out) -> int:
    try:
        opts, extra = getopt.getopt(argv, "hsN:M:n:Sac:T:eirltCUp:O:E:Iu0V")
    except getopt.GetoptError as e:
        raise ClientError(str(e)) from None
    flags = dict(opts)
    if "-h" in flags or not opts:
        out.write(USAGE)
        return 0 if "-h" in flags else 1
    if "-V" in flags:
        print(VERSION, file=out)
        return 0
    path = flags.get("-p", DEFAULT_PATH)
    if "-e" in flags:
        request(path, {"op": "erase"})
        print("OK: Clearing stats.", file=out)
        return 0
    if "-i" in flags:
        header, _ = request(path, {"op": "since"})
        print("never" if header.get("since") is None else header["since"], file=out)
        return 0
    if "-t" in flags:
        header, _ = request(path, {"op": "status"})
        print(f"ROWS\t{header['rows']}", file=out)
        return 0
    if "-C" in flags or "-U" in flags:
        raise ClientError("classifiers and custom primitives are not supported by pmengine")
    kind = flags.get("-O", "formatted").lower()
    if kind not in OUTPUTS:
        print(f"WARN: -O, ignoring unknown output value: '{flags['-O']}'.", file=out)
        kind = "formatted"
    output = OutputOptions(kind=kind, separator=flags.get("-E", ","), since_epoch="-I" in flags,
                           num_protos="-u" in flags, utc="-0" in flags, all_fields="-a" in flags)
    which = flags.get("-n", "bytes")
    if which not in COUNTERS + ("all",):
        print(f"WARN: -n, ignoring unknown counter type: {which}.", file=out)
        which = "bytes"
    top_spec = parse_top(flags["-T"], out) if "-T" in flags else None
    matching = flags.get("-N", flags.get("-M"))
    if matching is not None:
        if "-c" not in flags:
            raise ClientError("-N or -M selected but -c has not been specified or is invalid.\n  Exiting...\n")
        primitives = parse_primitives(flags["-c"])
        queries = split_queries(matching)
        for q in queries:               # refuse bad values before touching the table
            parse_query(primitives, q)
        if not queries:
            return 0
    elif "-s" in flags:
        primitives, queries = [], [""]
    else:
        raise ClientError("no query given (-s, -M or -N); see -h")
    counters_only = "-N" in flags
    req = {"op": "query", "primitives": primitives, "queries": queries, "counters_only": counters_only,
           "reset": "-r" in flags}
    header, payload = request(path, req)
    if counters_only:
        sums = header["sums"]
        if "-S" in flags:
            sums = [[sum(col) for col in zip(*sums)]] if sums else [[0, 0, 0, 0]]
        out.write("".join(counter_line(s, which) + "\n" for s in sums))
        return 0
    rows = top(snapshot_rows(decode_rows(header, payload)), top_spec)
    out.write(render_table(rows, output))
    return 0


if __name__ == "__main__":          # python -m engine.client.cli
    sys.exit(main(sys.argv[1:]))
