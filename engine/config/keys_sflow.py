"""Key table section: the sFlow listener (sfacctd_*), renormalisation, sampling_map, the counter file.

A config that sets sfacctd_ip or sfacctd_port gets an sFlow listener (Listener protocol "sflow");
one that sets nfacctd_ip / nfacctd_port, or neither family, gets the NetFlow listener; both may run
side by side, each with its own shards.  Targets: "sflow_listener.x", "listener.x", "core.x".
"""
from __future__ import annotations

from engine.config.values import GLOBAL, Key, format_bool, parse_bool, parse_ip, parse_port, parse_text, socket_bytes


def parse_counter_output(text: str) -> str:
    if text.lower() != "json":
        raise ValueError(f"bad sfacctd_counter_output {text!r} (supported: json)")
    return "json"


SFLOW_KEYS: tuple[Key, ...] = (
    Key("sfacctd_ip", parse_ip, GLOBAL, "::", ("sflow_listener.ip",)),
    Key("sfacctd_port", parse_port, GLOBAL, 6343, ("sflow_listener.port",)),
    Key("sfacctd_ipv6_only", parse_bool, GLOBAL, False, ("sflow_listener.ipv6_only",), format=format_bool),
    Key("sfacctd_pipe_size", socket_bytes, GLOBAL, None, ("sflow_listener.rcvbuf",),
        doc="socket receive buffer, bytes"),
    Key("sfacctd_renormalize", parse_bool, GLOBAL, False, ("sflow_listener.renormalize",), format=format_bool,
        doc="packets and bytes × the sampling rate, before the plugins"),
    Key("nfacctd_renormalize", parse_bool, GLOBAL, False, ("listener.renormalize",), format=format_bool),
    Key("sfacctd_counter_file", parse_text, GLOBAL, None, ("core.counter_file",),
        doc="counter samples as JSON lines (sfacctd's format); one file shared by all shards"),
    Key("sfacctd_counter_output", parse_counter_output, GLOBAL, "json", ("core.counter_output",)),
    Key("sampling_map", parse_text, GLOBAL, None, ("core.sampling_map",),
        doc="per agent / interface sampling rates; reloaded on SIGUSR2 when maps_refresh is true"),
    Key("maps_refresh", parse_bool, GLOBAL, True, ("core.maps_refresh",), format=format_bool),
)

# keys whose presence in a config asks for the sFlow / NetFlow listener
SFLOW_LISTENER_KEYS = ("sfacctd_ip", "sfacctd_port")
NETFLOW_LISTENER_KEYS = ("nfacctd_ip", "nfacctd_port")
