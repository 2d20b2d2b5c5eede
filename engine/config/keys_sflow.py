"""Key table section: the sFlow listener and sfacctd_* keys (targets "sflow_listener.x", "core.x")."""
from __future__ import annotations

from engine.config.values import Key

SFLOW_KEYS: tuple[Key, ...] = ()
