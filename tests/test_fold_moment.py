"""The plugin loop runs a due fold of its aggregator's spill buffer when its rings are nearly empty
(engine/plugins/runner.py PluginLoop.step, Aggregator.compact_if_due): the fold's stall then starts with a
whole ring of headroom for the shards.  Real shared-memory rings, the real loop and aggregator."""
from __future__ import annotations

import os
import uuid

import pytest

import engine.plugins.aggregate as aggmod
import engine.plugins.loop as loopmod
from engine.config.tree import CoreConfig, PluginConfig
from engine.ipc.ring import Ring
from engine.plugins.runner import PluginLoop
from tests.test_aggregate import ours, random_records, reference


class Collect:
    """A writer that keeps what each purge hands it."""

    def __init__(self) -> None:
        self.purged = []

    def write(self, rows) -> int:
        self.purged.append(ours(rows, AGGREGATE))
        return len(rows)


AGGREGATE = ("src_host", "dst_host", "src_port")


@pytest.fixture
def ring():
    r = Ring.create(f"pmt{os.getpid()}_{uuid.uuid4().hex[:10]}", 4096)
    yield r
    r.unlink()


def test_a_due_fold_waits_until_the_rings_are_nearly_empty(ring, monkeypatch):
    monkeypatch.setattr(aggmod, "HASH_TABLE_MAX_ROWS", 100)
    monkeypatch.setattr(aggmod, "COMPACT_MIN_ROWS", 400)
    monkeypatch.setattr(aggmod, "COMPACT_SLACK_ROWS", 1 << 30)      # add() never folds by itself here
    monkeypatch.setattr(loopmod, "READ_CHUNK", 200)                 # a turn reads 200 records of a ring
    plugin = PluginConfig(name="t", type="print", aggregate=AGGREGATE)
    writer = Collect()
    loop = PluginLoop(plugin, CoreConfig(), [ring], writer=writer)
    assert loop.fold_backlog == 4096 // 8
    records = random_records(3000, seed=3)
    assert ring.write(records)
    folds_at = []
    while ring.pending():
        due_before = loop.aggregator.compaction_due
        loop.step()                     # reads 200 records, then maybe folds: a fold leaves nothing unfolded
        buf = loop.aggregator._buffer
        if buf is not None and buf.pending == 0 and due_before:     # (the table's spill folds too: not due)
            folds_at.append(ring.pending())
        elif loop.aggregator.compaction_due:
            assert ring.pending() > loop.fold_backlog          # due, and left for later: the ring is still full
    assert folds_at and all(backlog <= loop.fold_backlog for backlog in folds_at)
    loop.purge()
    assert writer.purged[-1] == {k: v[:3] + [0] for k, v in reference(records, AGGREGATE).items()}
