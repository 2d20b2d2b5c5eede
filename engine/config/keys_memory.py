"""Key table section: the memory plugin (pmacct's in-memory table, `imt_*` keys) and its typed options."""
from __future__ import annotations

from dataclasses import dataclass

from engine.config.values import Key

_MEMORY = ("memory",)


@dataclass
class MemoryOptions:
    """PluginConfig.options of a memory plugin."""


MEMORY_KEYS: tuple[Key, ...] = ()
