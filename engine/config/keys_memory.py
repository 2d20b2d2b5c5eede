"""Key table section: the memory plugin (pmacct's in-memory table, `imt_*` keys) and its typed options.

pmacct's memory table is a chained hash table (imt_buckets) whose entries live
in imt_mem_pools_number pools of imt_mem_pools_size bytes (0 pools: grow
without bound).  pmengine's table is numpy arrays; the same two keys bound it:
at most pools_number * pools_size bytes of entries (key width + 24 bytes of
counters per entry).  imt_buckets is accepted (a hash-table sizing hint that a
sorted numpy table does not need).

The query socket: pmacct binds imt_path and leaves its mode to the process
umask (Debian's nfacctd shows srwxrwxrwx); CONFIG-KEYS advises a protected
directory instead.  pmengine creates it with mode 0666 & ~files_umask
(pmacct's global key, default 077: 0600, owner only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.config.values import PLUGIN, Key, int_range, parse_text

_MEMORY = ("memory",)
DEFAULT_IMT_PATH = "/tmp/collect.pipe"



@dataclass
class MemoryOptions:
    """PluginConfig.options of a memory plugin."""
    path: str = DEFAULT_IMT_PATH        # imt_path: the UNIX socket the client queries
    buckets: int = 32771                # imt_buckets: accepted, a sizing hint only
    pools_number: int = 16              # imt_mem_pools_number: 0 = unbounded
    pools_size: int = 8192              # imt_mem_pools_size, bytes

    def max_bytes(self) -> Optional[int]:
        """Bytes the table may hold, None when unbounded."""
        return self.pools_number * self.pools_size if self.pools_number else None

    def validate(self, plugin) -> Optional[tuple[str, str]]:
        if not self.path:
            return "imt_path", "imt_path must not be empty"
        return None


MEMORY_KEYS: tuple[Key, ...] = (
    Key("imt_path", parse_text, PLUGIN, DEFAULT_IMT_PATH, ("options.path",), _MEMORY),
    Key("imt_buckets", int_range(1, 2**31 - 1), PLUGIN, 32771, ("options.buckets",), _MEMORY,
        doc="accepted; pmengine's table is sorted numpy arrays, not a hash table"),
    Key("imt_mem_pools_number", int_range(0, 2**31 - 1), PLUGIN, 16, ("options.pools_number",), _MEMORY,
        doc="0: unbounded"),
    Key("imt_mem_pools_size", int_range(1, 2**40), PLUGIN, 8192, ("options.pools_size",), _MEMORY),
)
