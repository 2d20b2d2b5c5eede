"""The engine's life cycle over real processes: a SIGKILLed supervisor, a configuration error in a child,
a crash loop, SIGHUP and the log file, `pmengine status` / `stop` with the pidfile, shared memory on every exit."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time

from conftest import REPO, Collector, free_udp_port, pmengine_cmd
from engine_probe import children, pid_alive, run_id_of, runtime_dir, shm_segments, wait_for
from engine.proc import EXIT_CONFIG


def conf(port: int, folder, extra: str = "") -> str:
    return (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: print[out]\naggregate: src_host\n"
            f"print_output_file: {folder}/out.txt\nprint_refresh_time: 3600\n{extra}")


def start(tmp_path, name: str, text: str, shards: int = 1) -> Collector:
    folder = tmp_path / name
    folder.mkdir()
    return Collector(text, folder, shards)


def test_sigkilled_supervisor_children_exit_and_next_start_cleans_up(tmp_path):
    port = free_udp_port()
    first = start(tmp_path, "a", conf(port, tmp_path), shards=2)
    second = None
    try:
        first.wait_listening(2)
        folder = runtime_dir(first.proc.pid)
        run = run_id_of(folder)
        pids = [c["pid"] for c in children(folder).values()]
        assert len(shm_segments(run)) == 3, "two rings and the heartbeat segment"
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "the children of a dead supervisor exit")
        assert folder.exists() and shm_segments(run), "a SIGKILLed supervisor cannot clean up"

        second = start(tmp_path, "b", conf(port, tmp_path), shards=1)
        second.wait_listening(1)
        assert not shm_segments(run), "the next start removed the dead run's segments"
        assert not folder.exists(), "and its runtime folder"
        assert "removed 3 stale shared-memory segments" in second.log_path.read_text()
        folder2 = runtime_dir(second.proc.pid)
        run2 = run_id_of(folder2)
        assert shm_segments(run2)
        assert second.stop() == 0
        assert not shm_segments(run2) and not folder2.exists(), "a normal stop removes everything"
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_configuration_error_in_a_child_halts_with_its_exit_code(tmp_path):
    port = free_udp_port()
    text = (f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: memory[m]\naggregate: src_host\n"
            f"imt_path: {tmp_path}/no/such/folder/pipe\n")
    c = start(tmp_path, "a", text)
    try:
        assert c.proc.wait(60) == EXIT_CONFIG
        log = c.log_path.read_text()
        assert "stopped on a configuration error: halting" in log
        assert log.count("started plugin-memory-m") == 1, "not respawned"
        run = re.search(r"runtime folder (\S+) \(run (\w+)\)", log)
        assert not shm_segments(run.group(2)) and not os.path.exists(run.group(1))
    finally:
        c.kill()


def test_crash_loop_backs_off_and_says_so(tmp_path):
    """A shard that keeps dying (SIGKILLed as soon as it runs) restarts at once 3 times, then backs off."""
    port = free_udp_port()
    c = start(tmp_path, "a", conf(port, tmp_path))
    try:
        c.wait_listening(1)
        folder = runtime_dir(c.proc.pid)
        killed: set[int] = set()
        for _ in range(5):
            pid = wait_for(lambda: next((ch["pid"] for ch in children(folder).values()
                                         if ch["role"] == "shard" and ch["pid"] and ch["pid"] not in killed
                                         and pid_alive(ch["pid"])), None), 30, "a (re)started shard", 0.02)
            killed.add(pid)
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "next start in 1.0 s" in c.log_path.read_text(), 30, "the second backoff", 0.05)
        log = c.log_path.read_text()
        assert "crash loop, 4 restarts in the last 60 s (#4 in all): next start in 0.5 s" in log
        assert "crash loop, 5 restarts in the last 60 s (#5 in all): next start in 1.0 s" in log
        assert c.stop() == 0
    finally:
        c.kill()


def test_port_in_use_is_a_clear_error_before_anything_starts(tmp_path):
    """The supervisor opens the shards' sockets: a port held without SO_REUSEPORT stops the start, exit 1."""
    port = free_udp_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    try:
        (tmp_path / "c.conf").write_text(conf(port, tmp_path))
        run = subprocess.run(pmengine_cmd("start", "-f", str(tmp_path / "c.conf")), cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 1, run.stderr
        assert f"cannot listen on [127.0.0.1]:{port}" in run.stderr
        assert "started shard" not in run.stderr
    finally:
        blocker.close()


def test_sighup_status_and_stop(tmp_path):
    """SIGHUP: every process reopens the log file moved away; status tells pid, uptime, children; stop stops."""
    port = free_udp_port()
    logfile, pidfile = tmp_path / "engine.log", tmp_path / "engine.pid"
    c = start(tmp_path, "a", conf(port, tmp_path, f"logfile: {logfile}\npidfile: {pidfile}\n"), shards=2)
    try:
        wait_for(lambda: logfile.exists() and logfile.read_text().count("listening on") >= 2, 30, "listening", 0.05)
        folder = runtime_dir(c.proc.pid)
        pids = {ch["pid"] for ch in children(folder).values()}
        os.rename(logfile, tmp_path / "engine.log.1")
        os.kill(c.proc.pid, signal.SIGHUP)
        wait_for(lambda: logfile.exists() and all(f"log file reopened (pid {p})" in logfile.read_text() for p in pids),
                 10, "every child writing to the new log file", 0.05)
        assert "SIGHUP: log files reopened" in logfile.read_text()

        status = subprocess.run(pmengine_cmd("status", "-F", str(pidfile)), cwd=REPO, capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        assert re.search(rf"pmengine running, pid {c.proc.pid}, up \d\d:\d\d:\d\d", status.stdout)
        assert "children: 3/3 alive" in status.stdout
        for p in pids:
            assert f"pid {p}," in status.stdout

        stop = subprocess.run(pmengine_cmd("stop", "-F", str(pidfile)), cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert c.proc.wait(10) == 0
        after = subprocess.run(pmengine_cmd("status", "-F", str(pidfile)), cwd=REPO, capture_output=True,
                               text=True, timeout=30)
        assert after.returncode == 3 and "not running" in after.stdout
    finally:
        c.kill()


def test_rings_larger_than_dev_shm_are_a_clear_error_before_anything_starts(tmp_path):
    """Rings are allocated when they are created: a plugin_pipe_size /dev/shm cannot hold stops the start with
    exit 1 and says what to change, instead of a SIGBUS in a shard once traffic fills the ring."""
    too_big = shutil.disk_usage("/dev/shm").total + (1 << 30)
    (tmp_path / "c.conf").write_text(conf(free_udp_port(), tmp_path, f"plugin_pipe_size: {too_big}\n"))
    before = set(os.listdir("/dev/shm"))
    run = subprocess.run(pmengine_cmd("start", "-f", str(tmp_path / "c.conf")), cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "cannot allocate" in run.stderr and "lower plugin_pipe_size or grow /dev/shm" in run.stderr
    assert "started shard" not in run.stderr
    assert not {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("pme")}   # nothing left behind
