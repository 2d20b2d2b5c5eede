"""Key table section: the kafka plugin (`kafka_*` keys) and its typed options."""
from __future__ import annotations

from dataclasses import dataclass

from engine.config.values import Key

_KAFKA = ("kafka",)


@dataclass
class KafkaOptions:
    """PluginConfig.options of a kafka plugin."""


KAFKA_KEYS: tuple[Key, ...] = ()
