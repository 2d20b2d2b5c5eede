"""The stats model in the Prometheus text exposition format (0.0.4), served by a supervisor thread.

    GET /metrics  ->  text/plain; version=0.0.4

Counters end in _total; levels (pending sets, in-flight records, buffered rows) are gauges.  Labels:
exporter (address text), shard (number), ring, plugin, type, counter (a sink's own counter name).
The server is a stdlib ThreadingHTTPServer on a daemon thread; every scrape re-reads the stats files.
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from .stats_model import EXPORTER_COUNTERS, SINK_GAUGES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EXPORTER_HELP = {
    "packets": "export datagrams received", "bytes": "export datagram bytes received",
    "flows": "flow records decoded", "seq_gaps": "sequence number discontinuities",
    "decode_errors": "malformed datagrams, sets or records skipped",
    "no_template_sets": "data sets that arrived before their template",
    "pending_sets": "data sets kept to be decoded when their template arrives",
    "pending_expired_sets": "data sets dropped unresolved (no template in time, or buffer full)",
}
SHARD_HELP = {
    "packets": ("counter", "datagrams received by the shard"),
    "kernel_drops": ("counter", "datagrams the kernel dropped on the shard's socket (receive buffer full)"),
    "records_decoded": ("counter", "records decoded by the shard"),
    "records_from_bus": ("counter", "records released by templates learnt from the template bus"),
    "records_offered": ("counter", "records offered to each of the shard's rings"),
    "pending_sets_now": ("gauge", "data sets waiting for their template"),
    "starts": ("gauge", "incarnations of the shard (1 + restarts)"),
}
RING_HELP = {
    "written_records": ("counter", "records written into the ring"),
    "dropped_records": ("counter", "records dropped because the ring was full"),
    "folded_records": ("counter", "records the shard folded into others before writing (pre-aggregation)"),
    "read_records": ("counter", "records read from the ring by its plugin"),
    "in_flight": ("gauge", "records written and not yet read"),
}
PLUGIN_HELP = {
    "records_read": ("counter", "records the plugin read from its rings"),
    "ring_dropped_records": ("counter", "records dropped by the plugin's full rings"),
    "purges": ("counter", "cache purges"), "rows_written": ("counter", "rows written to the sink"),
    "write_errors": ("counter", "sink write errors"), "purge_errors": ("counter", "purges that failed"),
    "sink_lost_rows": ("counter", "rows that will never reach the sink (dropped, refused, lost)"),
    "groups_pending": ("gauge", "aggregates waiting for the next purge"),
    "records_lost_in_restart": ("counter", "records read but not purged by a plugin process that died"),
}


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Family:
    def __init__(self, out: list[str], name: str, kind: str, helptext: str) -> None:
        self.out, self.name = out, name
        out.append(f"# HELP {name} {helptext}")
        out.append(f"# TYPE {name} {kind}")

    def sample(self, labels: dict, value) -> None:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self.out.append(f"{self.name}{{{text}}} {int(value) if float(value).is_integer() else float(value)}")


def _name(base: str, kind: str) -> str:
    return f"pmengine_{base}_total" if kind == "counter" else f"pmengine_{base}"


def render_metrics(model: dict) -> str:
    out: list[str] = []
    for k in EXPORTER_COUNTERS:
        rows = [(name, e[k]) for name, e in sorted(model["exporters"].items())]
        if not rows or (k not in EXPORTER_HELP and not any(v for _, v in rows)):
            continue
        fam = _Family(out, _name(f"exporter_{k}", "counter"), "counter",
                      f"per exporter, summed over shards: {EXPORTER_HELP.get(k, k.replace('_', ' '))}")
        for name, v in rows:
            fam.sample({"exporter": name}, v)
    for table, key, helps, labels in (
            ("shards", "shard", SHARD_HELP, lambda n, d: {"shard": n}),
            ("rings", "ring", RING_HELP, lambda n, d: {"ring": n, "shard": d.get("shard"), "plugin": d.get("plugin")}),
            ("plugins", "plugin", PLUGIN_HELP, lambda n, d: {"plugin": n, "type": d.get("type")})):
        items = sorted(model[table].items())
        if not items:
            continue
        for k, (kind, helptext) in helps.items():
            fam = _Family(out, _name(f"{key}_{k}", kind), kind, helptext)
            for n, d in items:
                fam.sample({lk: lv for lk, lv in labels(n, d).items() if lv is not None}, d.get(k, 0))
    sinks = [(n, p) for n, p in sorted(model["plugins"].items()) if p["sink"]]
    for kind in ("counter", "gauge"):
        rows = [(n, p, k, v) for n, p in sinks for k, v in sorted(p["sink"].items())
                if (k in SINK_GAUGES) == (kind == "gauge")]
        if rows:
            fam = _Family(out, _name("sink", kind), kind, f"the sink's own {kind}s, by plugin and counter name")
            for n, p, k, v in rows:
                fam.sample({"plugin": n, "type": p.get("type"), "counter": k}, v)
    fam = _Family(out, "pmengine_balance_ok", "gauge", "1 when every flow decoded is accounted for (see stats)")
    fam.sample({}, 1 if model["balance"]["ok"] else 0)
    return "\n".join(out) + "\n"


class PrometheusServer:
    """GET /metrics on a loopback address, from a daemon thread; model() is called at every scrape."""

    def __init__(self, host: str, port: int, model: Callable[[], dict],
                 log: Optional[logging.Logger] = None) -> None:
        self.log = log or logging.getLogger("pmengine.core")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:       # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = render_metrics(model()).encode()
                except Exception as e:       # a scrape must never take the supervisor down
                    owner.log.error("prometheus scrape failed: %s", e)
                    self.send_error(500, "stats unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:
                pass                          # one line per scrape would flood the log

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.httpd = Server((host, port), Handler)
        self.address = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="prometheus", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def start(self) -> "PrometheusServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
