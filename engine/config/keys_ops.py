"""Key table section: operations (pmengine's own keys, no pmacct counterpart): the Prometheus endpoint and
plugin_workers.

`plugin_workers: N` (global or `plugin_workers[name]`, 1-64, default 1) runs a plugin as N aggregating
processes: shards send each record to the worker numbered by a hash of its aggregation key
(engine/shards/partition.py), so every key is aggregated by one worker and their purges together are the
plugin's; print output files are shared through engine/plugins/purge_rounds.py.  For high-cardinality
aggregations (a 5-tuple) fed by several shards, where one plugin process would be the bottleneck.  Not for
the memory plugin (its query server holds one table).

`prometheus_listen: 127.0.0.1:9108` (or `[::1]:9108`) makes the supervisor serve its counters in
the Prometheus text exposition format (0.0.4) at http://ADDRESS/metrics, from a thread.  Off by
default.  The endpoint has no authentication, so only loopback addresses are accepted (a
non-loopback address is a configuration error naming the key and the line); port 0 lets the
kernel pick one (tests): the bound address is logged and written to <runtime dir>/prometheus.addr.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from engine.config.values import GLOBAL, PLUGIN, Key, int_range


@dataclass(frozen=True)
class ListenAddress:
    """A loopback TCP address to listen on."""
    host: str                       # canonical IP text
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_ADDRESS = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})")


def parse_loopback_listen(text: str) -> ListenAddress:
    """`IPv4:port` or `[IPv6]:port`, the address a loopback one (127.0.0.0/8, ::1)."""
    m = _ADDRESS.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad listen address {text!r} (expected 127.0.0.1:PORT or [::1]:PORT)")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad IP address {host!r} in {text!r}") from None
    if not addr.is_loopback:
        raise ValueError(f"{addr} is not a loopback address: the endpoint has no authentication "
                         "(use 127.0.0.1 or ::1, and a proxy to publish it)")
    if int(port) > 65535:
        raise ValueError(f"bad port {port!r}: must be in the range 0-65535")
    return ListenAddress(str(addr), int(port))


def format_listen(value: Optional[ListenAddress]) -> str:
    return "" if value is None else str(value)


OPS_KEYS: tuple[Key, ...] = (
    Key("prometheus_listen", parse_loopback_listen, GLOBAL, None, ("core.prometheus_listen",),
        format=format_listen,
        doc="serve counters for Prometheus at http://ADDRESS/metrics (loopback only; off when unset)"),
    Key("plugin_workers", int_range(1, 64), PLUGIN, 1, ("plugin.workers",),
        doc="processes aggregating one plugin, each owning a hash share of its keys (not memory)"),
)
