"""Shared fixtures: where the captures are, free ports, running pmengine and nfacctd as real processes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
CAPTURES = (REPO.parent / "shared" / "captures").resolve()
NFACCTD = shutil.which("nfacctd") or ("/usr/sbin/nfacctd" if os.path.exists("/usr/sbin/nfacctd") else None)


def captures_or_skip() -> Path:
    if not CAPTURES.is_dir():
        pytest.skip(f"captures not found at {CAPTURES} (../shared/captures beside the checkout)")
    return CAPTURES


def smaps_mapping(address: int) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping that holds `address`."""
    fields: dict[str, str] = {}
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split(maxsplit=1)[0]
        if "-" in head and ":" not in head:
            if inside:
                break
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    assert fields, "no mapping holds the address"
    return fields


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pmengine_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def run_pmengine_pcap(conf: str, workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `pmengine start -f conf` (a pcap_savefile config) to completion."""
    path = workdir / "pmengine.conf"
    path.write_text(conf)
    proc = subprocess.run(pmengine_cmd("start", "-f", str(path)), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"pmengine failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def run_pmacct_daemon(daemon: str, binary: Optional[str], conf: str, workdir: Path,
                      timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a reference pmacct 1.7.7 daemon (nfacctd, sfacctd) on a pcap_savefile config to completion."""
    if binary is None:
        pytest.skip(f"{daemon} (Debian package pmacct) is not installed")
    path = workdir / f"{daemon}.conf"
    path.write_text("daemonize: false\n" + conf)
    proc = subprocess.run([binary, "-f", str(path)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{daemon} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def run_nfacctd_pcap(conf: str, workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the reference nfacctd 1.7.7 on a pcap_savefile config to completion."""
    return run_pmacct_daemon("nfacctd", NFACCTD, conf, workdir, timeout)


def nfacctd_reference(make_conf, base: Path, plugins, daemon: str = "nfacctd", attempts: int = 3) -> Path:
    """A validated reference run of nfacctd (or sfacctd) on a pcap_savefile config.

    make_conf(folder) -> configuration text writing into folder.  pmacct 1.7.7's print writers are
    forked and may outlive the core: a run is accepted only when every plugin in `plugins` logged
    exactly one purge (none missing, none duplicated), else it is run again.
    """
    runner = run_nfacctd_pcap if daemon == "nfacctd" else globals()["run_sfacctd_pcap"]
    for attempt in range(attempts):
        folder = base / f"{daemon}-{attempt}"
        folder.mkdir()
        proc = runner(make_conf(folder), folder)
        if all(proc.stderr.count(f"( {name}/print ): *** Purging cache - END") == 1 for name in plugins):
            time.sleep(0.3)             # forked writers may still be flushing their files
            return folder
    raise AssertionError(f"{daemon} gave an incomplete or duplicated purge {attempts} times")


class Collector:
    """A live `pmengine start` process; stopped by its PID with SIGTERM."""

    def __init__(self, conf: str, workdir: Path, shards: int = 1) -> None:
        self.conf_path = workdir / "live.conf"
        self.conf_path.write_text(conf)
        self.log_path = workdir / "pmengine.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(pmengine_cmd("start", "--shards", str(shards), "-f", str(self.conf_path)),
                                     cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_listening(self, shards: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if text.count("listening on") >= shards:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"pmengine exited early:\n{text[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"pmengine did not start listening:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def collector_factory(tmp_path):
    started: list[Collector] = []

    def make(conf: str, shards: int = 1) -> Collector:
        c = Collector(conf, tmp_path, shards)
        started.append(c)
        return c

    yield make
    for c in started:
        c.kill()


SFACCTD = shutil.which("sfacctd") or ("/usr/sbin/sfacctd" if os.path.exists("/usr/sbin/sfacctd") else None)


def run_sfacctd_pcap(conf: str, workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the reference sfacctd 1.7.7 on a pcap_savefile config to completion."""
    return run_pmacct_daemon("sfacctd", SFACCTD, conf, workdir, timeout)
