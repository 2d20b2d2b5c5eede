"""Several workers of one print plugin (plugin_workers > 1) writing one output: PurgeRounds claims, PrintWriter
pairs in one process, and real processes writing one file and one stdout at the same time."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from engine.config.tree import CoreConfig, PluginConfig
from engine.plugins.aggregate import Aggregator
from engine.plugins import print_plugin
from engine.plugins.print_plugin import PrintWriter
from engine.plugins.purge_rounds import KEEP_ROUNDS, PurgeRounds
from engine.schema import IPV4_MAPPED_PREFIX, empty

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1795308811                # 2026-11-22 00:53:31 UTC


# -- PurgeRounds ----------------------------------------------------------------------------------------------
def claimed(rounds: PurgeRounds, path: str, round_id: int) -> bool:
    with rounds.claim(path, round_id) as first:
        return first


def test_first_claim_per_path_and_round(tmp_path):
    w0, w1 = PurgeRounds(str(tmp_path / "state"), "p"), PurgeRounds(str(tmp_path / "state"), "p")
    assert claimed(w0, "/out/a.csv", 10) is True
    assert claimed(w1, "/out/a.csv", 10) is False        # the other worker: append
    assert claimed(w0, "/out/a.csv", 10) is False        # the same worker again in the round: append
    assert claimed(w1, "/out/b.csv", 10) is True         # another path
    assert claimed(w1, "/out/a.csv", 20) is True         # a new round truncates again
    assert claimed(w0, "/out/a.csv", 20) is False
    assert claimed(w0, "/out/a.csv", 10) is False        # a late worker of an older round never truncates
    other = PurgeRounds(str(tmp_path / "state"), "q")    # another plugin: its own state
    assert claimed(other, "/out/a.csv", 20) is True


def test_relative_and_absolute_paths_are_one_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    assert claimed(rounds, "out.csv", 1) is True
    assert claimed(rounds, str(tmp_path / "out.csv"), 1) is False


def test_a_failed_block_records_nothing(tmp_path):
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    with pytest.raises(OSError):
        with rounds.claim("/out/a.csv", 5) as first:
            assert first
            raise OSError("disk full")
    assert claimed(rounds, "/out/a.csv", 5) is True      # the next writer truncates and titles


def test_stdout_title_once_over_rounds_and_workers(tmp_path):
    w0, w1 = PurgeRounds(str(tmp_path / "s"), "p"), PurgeRounds(str(tmp_path / "s"), "p")
    assert claimed(w1, "", 1) is True
    assert claimed(w0, "", 1) is False
    assert claimed(w0, "", 2) is False
    assert claimed(w1, "", 3) is False
    w0.reset()                                           # a plugin starting afresh
    assert claimed(w1, "", 4) is True
    assert claimed(w1, "/out/a.csv", 4) is True


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'{"paths": [1], "stdout_titled": 1}',
                                     b'{"paths": {"/out/a.csv": "10"}, "stdout_titled": "yes"}'])
def test_missing_or_corrupt_state_is_nothing_written(tmp_path, content):
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    assert claimed(rounds, "/out/a.csv", 10) is True
    with open(rounds.state_path, "wb") as f:
        f.write(content)
    assert claimed(rounds, "/out/a.csv", 10) is True
    assert claimed(rounds, "", 10) is True
    assert claimed(rounds, "/out/a.csv", 10) is False    # and the state works again afterwards


def test_old_rounds_are_dropped(tmp_path):
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    for r in range(1, 51):
        for i in range(3):
            assert claimed(rounds, f"/out/{r}-{i}.csv", r * 60) is True
    with open(rounds.state_path) as f:
        paths = json.load(f)["paths"]
    assert len(paths) == 3 * KEEP_ROUNDS
    assert sorted(set(paths.values())) == [r * 60 for r in range(51 - KEEP_ROUNDS, 51)]


def test_lock_is_per_process_after_fork(tmp_path):
    """A PurgeRounds used before a fork: the child must not share the parent's lock (flock is per open file)."""
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    assert claimed(rounds, "/out/a.csv", 1) is True      # the lock file is open in this process now
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    with rounds.claim("/out/a.csv", 2):
        child = ctx.Process(target=_claim_and_signal, args=(rounds, ready))
        child.start()
        assert not ready.wait(0.5)                       # blocked while this process holds the lock
    assert ready.wait(10)
    child.join(10)
    assert child.exitcode == 0


def _claim_and_signal(rounds: PurgeRounds, ready) -> None:
    with rounds.claim("/out/a.csv", 2) as first:
        assert first is False
        ready.set()


# -- PrintWriter pairs in one process -----------------------------------------------------------------------------
def records(addresses: list[str]) -> np.ndarray:
    recs = empty(len(addresses))
    recs["family"], recs["packets"], recs["bytes"], recs["flows"], recs["etype"] = 4, 1, 100, 1, 0x800
    recs["src_host"] = np.frombuffer(b"".join(IPV4_MAPPED_PREFIX + bytes(map(int, a.split(".")))
                                              for a in addresses), np.uint8).reshape(-1, 16)
    return recs


def rows_of(cfg: PluginConfig, addresses: list[str], now: int = NOW):
    agg = Aggregator(cfg, CoreConfig(), start_s=now)
    if addresses:
        agg.add(records(addresses), now_s=now)
    return agg.purge(now * 1_000_000)


def config(**kw) -> PluginConfig:
    kw.setdefault("aggregate", ("src_host",))
    kw.setdefault("timestamps_utc", True)
    return PluginConfig(name="p", type="print", workers=2, **kw)


def workers(cfg: PluginConfig, state: str, n: int = 2) -> list[PrintWriter]:
    out = []
    for i in range(n):
        w = PrintWriter(replace(cfg, worker=i), CoreConfig())
        w.coordinate(PurgeRounds(state, cfg.name))
        out.append(w)
    return out


def single(cfg: PluginConfig, path, rows) -> str:
    """What one uncoordinated writer writes for rows (the reference: one plugin)."""
    ref = replace(cfg, output_file=str(path), output_file_append=False, workers=1)
    PrintWriter(ref, CoreConfig()).write(rows)
    return path.read_text()


def write_round(writers, parts, round_id: int) -> None:
    for w, rows in zip(writers, parts):
        w.purge_round = round_id
        w.write(rows)


@pytest.mark.parametrize("output", ["csv", "formatted", "json"])
@pytest.mark.parametrize("append", [False, True])
def test_two_writers_one_file_over_rounds(tmp_path, output, append):
    out = tmp_path / "out" / "flows.txt"
    cfg = config(output=output, output_file=str(out), output_file_append=append)
    w0, w1 = workers(cfg, str(tmp_path / "state"))
    a, b = rows_of(cfg, ["10.0.0.1", "10.0.0.2"]), rows_of(cfg, ["10.0.1.1"])
    c, d = rows_of(cfg, ["10.0.2.1"]), rows_of(cfg, ["10.0.3.1", "10.0.3.2", "10.0.3.3"])
    ref_a, ref_b = single(cfg, tmp_path / "a", a), single(cfg, tmp_path / "b", b)
    ref_c, ref_d = single(cfg, tmp_path / "c", c), single(cfg, tmp_path / "d", d)
    untitled = (lambda text: text) if output == "json" else (lambda text: text.split("\n", 1)[1])
    if output == "csv":
        assert ref_a.splitlines()[0] == "SRC_IP,PACKETS,BYTES"

    write_round([w0, w1], [a, b], 1000)
    first = ref_a + untitled(ref_b)
    assert out.read_text() == first
    write_round([w1, w0], [c, d], 1060)                 # the other worker first this time
    second = ref_c + untitled(ref_d)
    assert out.read_text() == (first + untitled(second) if append else second)
    assert w0.rows_written == 5 and w1.rows_written == 2 and w0.write_errors == w1.write_errors == 0


def test_the_first_worker_appends_after_its_title_like_the_others(tmp_path, monkeypatch):
    """Blocks are appended after the lock: worker b may write its whole part between two blocks of the round's
    first worker a, whose own blocks must then land after b's (O_APPEND), never over them."""
    monkeypatch.setattr(print_plugin, "CHUNK_ROWS", 2)
    out = tmp_path / "flows.csv"
    cfg = config(output="csv", output_file=str(out))
    a, b = workers(cfg, str(tmp_path / "state"))
    a.purge_round = b.purge_round = 60
    blocks = a._blocks

    def a_blocks(rows):
        for i, block in enumerate(blocks(rows)):
            yield block
            if i == 0:
                b.write(rows_of(cfg, ["10.9.0.1", "10.9.0.2", "10.9.0.3"]))
    monkeypatch.setattr(a, "_blocks", a_blocks)
    a.write(rows_of(cfg, ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]))
    lines = out.read_text().splitlines()
    assert lines[0] == "SRC_IP,PACKETS,BYTES"
    assert lines[1:] == ["10.1.0.1,1,100", "10.1.0.2,1,100", "10.9.0.1,1,100", "10.9.0.2,1,100",
                         "10.9.0.3,1,100", "10.1.0.3,1,100", "10.1.0.4,1,100"]


def test_csv_literal_two_workers(tmp_path):
    out = tmp_path / "flows.csv"
    cfg = config(output="csv", output_file=str(out))
    writers = workers(cfg, str(tmp_path / "state"))
    write_round(writers, [rows_of(cfg, ["10.0.0.1"]), rows_of(cfg, ["10.0.0.2"])], 60)
    assert out.read_text() == "SRC_IP,PACKETS,BYTES\n10.0.0.1,1,100\n10.0.0.2,1,100\n"


def test_existing_file_without_append_is_truncated_by_the_first_worker(tmp_path):
    out = tmp_path / "flows.csv"
    out.write_text("OLD\nLINES\n")
    cfg = config(output="csv", output_file=str(out))
    writers = workers(cfg, str(tmp_path / "state"))
    write_round(writers[::-1], [rows_of(cfg, ["10.0.0.2"]), rows_of(cfg, ["10.0.0.1"])], 60)
    assert out.read_text() == "SRC_IP,PACKETS,BYTES\n10.0.0.2,1,100\n10.0.0.1,1,100\n"


def test_append_to_existing_file_never_titles(tmp_path):
    out = tmp_path / "flows.csv"
    out.write_text("PRE\n")
    cfg = config(output="csv", output_file=str(out), output_file_append=True)
    writers = workers(cfg, str(tmp_path / "state"))
    write_round(writers, [rows_of(cfg, ["10.0.0.1"]), rows_of(cfg, ["10.0.0.2"])], 60)
    assert out.read_text() == "PRE\n10.0.0.1,1,100\n10.0.0.2,1,100\n"


@pytest.mark.parametrize("empty_first", [True, False])
def test_write_empty_file_only_when_no_worker_wrote(tmp_path, empty_first):
    out = tmp_path / "flows.csv"
    cfg = config(output="csv", output_file=str(out), write_empty_file=True)
    writers = workers(cfg, str(tmp_path / "state"))
    parts = [rows_of(cfg, []), rows_of(cfg, ["10.0.0.1"])]
    if not empty_first:
        writers, parts = writers[::-1], parts[::-1]
    write_round(writers, parts, 60)
    assert out.read_text() == "SRC_IP,PACKETS,BYTES\n10.0.0.1,1,100\n"
    write_round(writers, [rows_of(cfg, []), rows_of(cfg, [])], 120)     # nobody has rows: one empty file
    assert out.read_text() == "SRC_IP,PACKETS,BYTES\n"


def test_markers_one_part_per_worker_and_latest(tmp_path):
    out = tmp_path / "flows.json"
    latest = tmp_path / "latest"
    cfg = config(output="json", output_file=str(out), markers=True, latest_file=str(latest))
    writers = workers(cfg, str(tmp_path / "state"))
    write_round(writers, [rows_of(cfg, ["10.0.0.1", "10.0.0.2"]), rows_of(cfg, ["10.0.0.3"])], 60)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["event_type"] for e in events]
    assert kinds == ["purge_init", "purge", "purge", "purge_close", "purge_init", "purge", "purge_close"]
    assert [e["purged_entries"] for e in events if e["event_type"] == "purge_close"] == [2, 1]
    assert sorted(e["ip_src"] for e in events if e["event_type"] == "purge") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert os.readlink(latest) == str(out)


def test_split_files_per_peer_each_titled_once(tmp_path):
    cfg = config(aggregate=("src_host", "peer_src_ip"), output="csv", output_file=f"{tmp_path}/$peer_src_ip.csv")
    writers = workers(cfg, str(tmp_path / "state"))

    def with_peers(pairs):
        recs = records([src for src, _ in pairs])
        recs["peer_src_ip"] = records([peer for _, peer in pairs])["src_host"]
        agg = Aggregator(cfg, CoreConfig(), start_s=NOW)
        agg.add(recs, now_s=NOW)
        return agg.purge(NOW * 1_000_000)

    write_round(writers, [with_peers([("10.0.0.1", "192.0.2.1"), ("10.0.0.2", "192.0.2.2")]),
                          with_peers([("10.0.0.3", "192.0.2.1")])], 60)
    assert (tmp_path / "192_0_2_1.csv").read_text() == ("PEER_SRC_IP,SRC_IP,PACKETS,BYTES\n"
                                                        "192.0.2.1,10.0.0.1,1,100\n192.0.2.1,10.0.0.3,1,100\n")
    assert (tmp_path / "192_0_2_2.csv").read_text() == "PEER_SRC_IP,SRC_IP,PACKETS,BYTES\n192.0.2.2,10.0.0.2,1,100\n"


def test_one_worker_makes_no_state(tmp_path):
    out = tmp_path / "flows.csv"
    cfg = PluginConfig(name="p", type="print", aggregate=("src_host",), output="csv", output_file=str(out))
    w = PrintWriter(cfg, CoreConfig())
    w.write(rows_of(cfg, ["10.0.0.1"]))
    w.write(rows_of(cfg, ["10.0.0.2"]))
    assert out.read_text() == "SRC_IP,PACKETS,BYTES\n10.0.0.2,1,100\n"
    assert w.rounds is None and os.listdir(tmp_path) == ["flows.csv"]


# -- real processes -------------------------------------------------------------------------------------------------
WRITES, ROWS = 30, 150
BLOCK = re.compile(r"--START \((\d+)\)--\n(.*?)--END \(\1\)--\n", re.S)


def _file_worker(worker: int, cfg: PluginConfig, rounds: PurgeRounds, start, errors) -> None:
    w = PrintWriter(cfg, CoreConfig())
    w.coordinate(rounds)
    w.purge_round = 600
    start.wait(10)
    for i in range(WRITES):
        w.write(rows_of(cfg, [f"10.{worker}.{i}.{j}" for j in range(ROWS)]))
    errors.put(w.write_errors)


def run_file_workers(cfg: PluginConfig, rounds: PurgeRounds, procs: int) -> None:
    """procs forked _file_workers started together; each must exit 0 without a write error."""
    ctx = mp.get_context("fork")
    start, errors = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_file_worker, args=(k, cfg, rounds, start, errors)) for k in range(procs)]
    for c in children:
        c.start()
    start.set()
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    assert [errors.get(timeout=5) for _ in children] == [0] * procs


@pytest.mark.parametrize("procs", [2, 4])
def test_processes_write_one_file_in_one_round(tmp_path, procs):
    out = tmp_path / "flows.csv"
    out.write_text("from the previous round\n")
    cfg = config(output="csv", output_file=str(out), markers=True)
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    assert claimed(rounds, str(tmp_path / "other"), 1)      # lock file opened before the fork
    run_file_workers(cfg, rounds, procs)
    text = out.read_text()
    blocks = BLOCK.findall(text)
    assert "".join(f"--START ({p})--\n{body}--END ({p})--\n" for p, body in blocks) == text   # whole blocks only
    assert len(blocks) == procs * WRITES
    assert len({p for p, _ in blocks}) == procs
    lines = [line for _, body in blocks for line in body.splitlines()]
    assert lines.count("SRC_IP,PACKETS,BYTES") == 1 and blocks[0][1].startswith("SRC_IP,PACKETS,BYTES\n")
    expected = [f"10.{k}.{i}.{j},1,100" for k in range(procs) for i in range(WRITES) for j in range(ROWS)]
    assert sorted(lines[1:]) == sorted(expected)


@pytest.mark.parametrize("procs", [2, 4])
def test_processes_append_whole_lines_without_markers(tmp_path, procs, monkeypatch):
    """Without markers the workers append after the lock, a block of lines per write(): with blocks of 16 rows
    (forked children inherit the patched CHUNK_ROWS) their blocks alternate, but every line is whole, the
    title comes once, first, and the leftover file of an earlier round is gone."""
    monkeypatch.setattr(print_plugin, "CHUNK_ROWS", 16)
    out = tmp_path / "flows.csv"
    out.write_text("from the previous round\n")
    cfg = config(output="csv", output_file=str(out))
    rounds = PurgeRounds(str(tmp_path / "state"), "p")
    run_file_workers(cfg, rounds, procs)
    lines = out.read_text().splitlines()
    assert lines[0] == "SRC_IP,PACKETS,BYTES" and lines.count("SRC_IP,PACKETS,BYTES") == 1
    expected = [f"10.{k}.{i}.{j},1,100" for k in range(procs) for i in range(WRITES) for j in range(ROWS)]
    assert sorted(lines[1:]) == sorted(expected)


STDOUT_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, sys
    sys.path.insert(0, {tests!r})
    from test_purge_rounds import config, rows_of
    from engine.config.tree import CoreConfig
    from engine.plugins.print_plugin import PrintWriter
    from engine.plugins.purge_rounds import PurgeRounds

    def run(k):
        cfg = config(output="csv", markers=True)
        w = PrintWriter(cfg, CoreConfig())
        w.coordinate(PurgeRounds({state!r}, "p"))
        for r in range(10):
            w.purge_round = 60 * r
            w.write(rows_of(cfg, [f"10.{{k}}.{{r}}.{{j}}" for j in range(200)]))

    if __name__ == "__main__":
        procs = [mp.get_context("fork").Process(target=run, args=(k,)) for k in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        sys.exit(max(p.exitcode for p in procs))
""")


def test_processes_share_stdout_title_once(tmp_path):
    script = STDOUT_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)), state=str(tmp_path / "state"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    blocks = BLOCK.findall(proc.stdout)
    assert "".join(f"--START ({p})--\n{body}--END ({p})--\n" for p, body in blocks) == proc.stdout
    assert len(blocks) == 30
    lines = [line for _, body in blocks for line in body.splitlines()]
    assert lines.count("SRC_IP,PACKETS,BYTES") == 1 and blocks[0][1].startswith("SRC_IP,PACKETS,BYTES\n")
    expected = [f"10.{k}.{r}.{j},1,100" for k in range(3) for r in range(10) for j in range(200)]
    assert sorted(lines[1:]) == sorted(expected)
