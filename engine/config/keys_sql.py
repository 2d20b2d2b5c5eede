"""Key table section: the pgsql plugin (`sql_*` keys) and its typed options."""
from __future__ import annotations

from dataclasses import dataclass

from engine.config.values import Key

_SQL = ("pgsql",)


@dataclass
class SqlOptions:
    """PluginConfig.options of a pgsql plugin."""


SQL_KEYS: tuple[Key, ...] = ()
