"""What the forkserver imports before it forks any child (supervisor.PRELOAD): everything a shard or plugin needs,
so a child (and a restarted one) starts in milliseconds.

The forkserver holds no state worth finalizing, so it leaves without tearing its interpreter down: with numpy,
zmq and the engine loaded, Python's teardown costs ~0.1 s of CPU at every stop.  This module is imported only by
the forkserver; never import it elsewhere.
"""
import atexit
import os

import numpy.ma  # noqa: F401  numpy 2's np.unique imports it on first use: ~50 ms in a shard's first batch otherwise
import zmq  # noqa: F401

import engine.ipc.heartbeat  # noqa: F401
import engine.plugins.memory.plugin  # noqa: F401
import engine.plugins.print_plugin  # noqa: F401
import engine.plugins.runner  # noqa: F401
import engine.proc  # noqa: F401
import engine.shards.receiver  # noqa: F401

atexit.register(os._exit, 0)        # first of the atexit handlers to run (last registered): skip the teardown
