"""Key table section: the kafka plugin (`kafka_*` keys) and its typed options.

kafka_refresh_time / kafka_history / kafka_history_roundoff / kafka_num_protos
fill the plugin-generic fields the print keys fill for print plugins; the rest
fill KafkaOptions.  Combinations nfacctd 1.7.7 refuses are refused here too
(a dynamic kafka_topic with kafka_multi_values).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from engine.config.values import (PLUGIN, Key, format_bool, int_range, output_parser, parse_bool, parse_history, parse_port,
                                  parse_roundoff, parse_text, positive_int)

_KAFKA = ("kafka",)

KAFKA_OUTPUTS = ("json",)
KAFKA_OUTPUTS_NOT_YET = ("avro", "avro_json")
TOPIC_VARIABLES = ("peer_src_ip", "tag2", "tag", "post_tag2", "post_tag")
KEY_VARIABLES = TOPIC_VARIABLES + ("src_host", "dst_host", "src_port", "dst_port", "proto", "in_iface")
_VARIABLE = re.compile(r"\$([a-z_0-9]+)")


parse_kafka_output = output_parser("kafka_output", KAFKA_OUTPUTS, KAFKA_OUTPUTS_NOT_YET)


def parse_broker_host(text: str) -> str:
    """One host, or a comma-separated list of host[:port] (IPv6 as [addr]:port)."""
    hosts = [h.strip() for h in text.split(",")]
    if not all(hosts):
        raise ValueError(f"bad broker list {text!r}: empty entry")
    return ",".join(hosts)


def parse_partition(text: str) -> int:
    """kafka_partition: -1 (the partitioner decides) or a partition id."""
    if text.strip() == "-1":
        return -1
    return int_range(0, 2**31 - 1)(text)


def _checked_variables(text: str, allowed: tuple[str, ...]) -> str:
    for name in _VARIABLE.findall(text):
        if not any(name.startswith(a) for a in allowed):
            raise ValueError(f"unknown variable ${name} in {text!r} (known: {', '.join('$' + a for a in allowed)})")
    return text


def parse_topic(text: str) -> str:
    """kafka_topic, with $peer_src_ip, $tag, $tag2, $post_tag, $post_tag2 expanded per row."""
    return _checked_variables(text, TOPIC_VARIABLES)


def parse_partition_key(text: str) -> str:
    return _checked_variables(text, KEY_VARIABLES)


def bootstrap_servers(host: str, port: int) -> str:
    """librdkafka bootstrap.servers of kafka_broker_host / kafka_broker_port, as pmacct builds it.

    A single host takes kafka_broker_port (an IPv6 address is wrapped in []); a list carries its own
    ports (9092 where none is given).
    """
    hosts = host.split(",")
    if len(hosts) == 1 and not host.startswith("["):
        try:
            if ipaddress.ip_address(host).version == 6:
                return f"[{host}]:{port}"
        except ValueError:
            pass
        if ":" not in host.split("//")[-1]:
            return f"{host}:{port}"
        return host
    return ",".join(h if re.search(r"(\]|^[^:\[]+):[0-9]+$", h.split("//")[-1]) else f"{h}:9092" for h in hosts)


@dataclass
class KafkaOptions:
    """PluginConfig.options of a kafka plugin."""
    broker_host: str = "127.0.0.1"         # kafka_broker_host
    broker_port: int = 9092                # kafka_broker_port
    topic: str = "pmacct.acct"             # kafka_topic ($peer_src_ip, $tag... expanded per row)
    output: str = "json"                   # kafka_output
    partition: int = -1                    # kafka_partition (-1: the partitioner decides)
    partition_key: Optional[str] = None    # kafka_partition_key ($peer_src_ip, $src_host... per row)
    config_file: Optional[str] = None      # kafka_config_file: `global|topic, key, value` lines for librdkafka
    multi_values: int = 0                  # kafka_multi_values: bytes of newline-separated JSON per message
    markers: bool = False                  # kafka_markers: purge_init / purge_close messages

    @property
    def dynamic_topic(self) -> bool:
        return "$" in self.topic

    def validate(self, plugin) -> Optional[tuple[str, str]]:
        if self.multi_values and self.dynamic_topic:
            return "kafka_multi_values", "a dynamic 'kafka_topic' is not compatible with 'kafka_multi_values'"
        if self.config_file:
            from engine.plugins.kafka.settings import read_config_file
            try:
                read_config_file(self.config_file)
            except ValueError as e:
                return "kafka_config_file", str(e)
        return None


KAFKA_KEYS: tuple[Key, ...] = (
    Key("kafka_refresh_time", positive_int, PLUGIN, 60, ("plugin.refresh_time",), _KAFKA),
    Key("kafka_history", parse_history, PLUGIN, (None, 0), ("plugin.history", "plugin.history_secs"), _KAFKA,
        format=lambda value: value[0]),
    Key("kafka_history_roundoff", parse_roundoff, PLUGIN, "", ("plugin.history_roundoff",), _KAFKA),
    Key("kafka_num_protos", parse_bool, PLUGIN, False, ("plugin.num_protos",), _KAFKA, format=format_bool),
    Key("kafka_broker_host", parse_broker_host, PLUGIN, "127.0.0.1", ("options.broker_host",), _KAFKA),
    Key("kafka_broker_port", parse_port, PLUGIN, 9092, ("options.broker_port",), _KAFKA),
    Key("kafka_topic", parse_topic, PLUGIN, "pmacct.acct", ("options.topic",), _KAFKA),
    Key("kafka_output", parse_kafka_output, PLUGIN, "json", ("options.output",), _KAFKA),
    Key("kafka_partition", parse_partition, PLUGIN, -1, ("options.partition",), _KAFKA,
        doc="nfacctd 1.7.7 ignores it (messages still spread over partitions); pmengine honours it"),
    Key("kafka_partition_key", parse_partition_key, PLUGIN, None, ("options.partition_key",), _KAFKA),
    Key("kafka_config_file", parse_text, PLUGIN, None, ("options.config_file",), _KAFKA),
    Key("kafka_multi_values", int_range(0, 2**31 - 1), PLUGIN, 0, ("options.multi_values",), _KAFKA),
    Key("kafka_markers", parse_bool, PLUGIN, False, ("options.markers",), _KAFKA, format=format_bool),
)
