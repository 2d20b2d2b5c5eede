"""Inter-process plumbing: shared-memory record rings and the ZeroMQ template bus.

Names are imported lazily so that a plugin importing the ring does not pay for zmq.
"""
from __future__ import annotations

_EXPORTS = {
    "Ring": "engine.ipc.ring",
    "ring_name": "engine.ipc.ring",
    "cleanup_stale": "engine.ipc.ring",
    "RING_PREFIX": "engine.ipc.ring",
    "TemplateBus": "engine.ipc.template_bus",
    "BusClient": "engine.ipc.template_bus",
    "BusEndpoints": "engine.ipc.template_bus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.ipc' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
