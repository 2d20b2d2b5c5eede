"""kafka_config_file and the librdkafka configuration of a kafka plugin's producer.

kafka_config_file holds pmacct's CSV lines `global, key, value` / `topic, key,
value`; key and value go to librdkafka unchecked, and the value may itself
contain commas.  Blank lines and lines starting with `!` or `#` are skipped.
librdkafka (1.x and later) takes topic-level properties in the global
configuration too, so both kinds end up in one dict; a later line wins.
"""
from __future__ import annotations

from typing import Optional

from engine.config.keys_kafka import bootstrap_servers

SCOPES = ("global", "topic")

# pmengine's defaults, under what kafka_config_file sets: a bounded local queue (a broker outage fills it,
# then produce() raises BufferError and the drop is counted), and delivery reports for failures only
# (successes are counted as produced - failed - still queued, without a Python call per message).
DEFAULTS = {
    "queue.buffering.max.messages": 100000,
    "queue.buffering.max.kbytes": 256 * 1024,
    "linger.ms": 50,
    "batch.num.messages": 10000,
    "delivery.report.only.error": True,
}


def parse_config_lines(text: str, source: str = "kafka_config_file") -> list[tuple[str, str, str]]:
    """`scope, key, value` lines -> [(scope, key, value)]; ValueError naming the line of a bad one."""
    settings = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "!#":
            continue
        parts = line.split(",", 2)
        if len(parts) != 3:
            raise ValueError(f"{source} line {number}: expected 'global|topic, key, value', got {raw!r}")
        scope, key, value = (p.strip() for p in parts)
        if scope.lower() not in SCOPES:
            raise ValueError(f"{source} line {number}: type must be 'global' or 'topic', not {scope!r}")
        if not key:
            raise ValueError(f"{source} line {number}: empty key")
        settings.append((scope.lower(), key, value))
    return settings


def read_config_file(path: str) -> list[tuple[str, str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read kafka_config_file {path!r}: {e}") from None
    return parse_config_lines(text, f"kafka_config_file {path}")


def producer_config(options, config_file_settings: Optional[list] = None) -> dict:
    """The librdkafka configuration of a plugin's producer (no callbacks)."""
    conf = {"bootstrap.servers": bootstrap_servers(options.broker_host, options.broker_port), **DEFAULTS}
    settings = config_file_settings
    if settings is None and options.config_file:
        settings = read_config_file(options.config_file)
    for _scope, key, value in settings or ():
        conf[key] = value
    return conf
