"""Plugins: name -> implementation registries, imported lazily (optional sinks stay optional).

PLUGIN_TYPES maps a `plugins:` type to the entry point its process runs;
WRITERS maps it to the sink class the generic loop (runner.plugin_main) hands
each purge to.  Both hold "module:callable" strings resolved only when used.
"""
from __future__ import annotations

import importlib
from typing import Callable

PLUGIN_TYPES: dict[str, str] = {
    "print": "engine.plugins.runner:plugin_main",
    "memory": "engine.plugins.memory.plugin:memory_main",
    "pgsql": "engine.plugins.runner:plugin_main",
    "kafka": "engine.plugins.runner:plugin_main",
}

WRITERS: dict[str, str] = {
    "print": "engine.plugins.print_plugin:PrintWriter",
    "pgsql": "engine.plugins.pgsql.writer:PgsqlWriter",
    "kafka": "engine.plugins.kafka.writer:KafkaWriter",
}


def resolve_plugin(type_name: str) -> str:
    """The "module:callable" entry point of a plugin type; ValueError if unknown."""
    try:
        return PLUGIN_TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown plugin type {type_name!r} (known: {', '.join(sorted(PLUGIN_TYPES))})") from None


def load_plugin(type_name: str) -> Callable:
    """Import and return a plugin type's entry point."""
    module, name = resolve_plugin(type_name).split(":")
    return getattr(importlib.import_module(module), name)
