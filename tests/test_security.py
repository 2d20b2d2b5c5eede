"""Security of the IPC and of the inputs: a private runtime folder for the ipc:// bus, CURVE on a tcp:// bus
(no client without the run's keys), maps and configuration never evaluated as code."""
from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from conftest import REPO, free_udp_port, pmengine_cmd
from engine.ipc.template_bus import IPC_FILES, BusClient, BusEndpoints, CurveKeys, TemplateBus
from engine_probe import runtime_dir, wait_for

ENGINE = REPO / "engine"


def test_runtime_folder_is_private_and_holds_the_bus_sockets(collector_factory, tmp_path):
    port = free_udp_port()
    c = collector_factory(f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: print[p]\n"
                          f"print_output_file: {tmp_path}/out.txt\n")
    c.wait_listening(1)
    folder = runtime_dir(c.proc.pid)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for name in IPC_FILES:
        assert stat.S_ISSOCK(os.stat(folder / name).st_mode)
    assert c.stop() == 0


@pytest.fixture
def tcp_bus(tmp_path):
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    bus = TemplateBus(str(tmp_path / "run"), endpoint="tcp")
    bus.start()
    yield bus
    bus.stop()


def test_tcp_bus_admits_only_the_runs_curve_keys(tcp_bus):
    ours = tcp_bus.endpoints
    assert ours.curve is not None and ours.publish.startswith("tcp://127.0.0.1:")
    assert ours.curve.client_secret not in repr(ours).encode(), "a secret key never reaches a log line"
    shard = BusClient(ours, b"shard")
    shard.publish([(b"template", b"payload")])
    wait_for(lambda: tcp_bus.state(), 10, "the bus has the shard's item")
    assert shard.snapshot() == [(b"template", b"payload")]

    plain = BusClient(BusEndpoints(ours.publish, ours.subscribe, ours.snapshot), b"plain")
    stranger_public, stranger_secret = zmq.curve_keypair()
    stranger = BusClient(BusEndpoints(ours.publish, ours.subscribe, ours.snapshot,
                                      CurveKeys(ours.curve.server_public, stranger_public, stranger_secret)), b"x")
    try:
        for intruder in (plain, stranger):
            intruder.publish([(b"template", b"forged")])
            assert intruder.snapshot(timeout_ms=500) == [], "no state without the run's keys"
        time.sleep(0.3)
        assert tcp_bus.state() == {b"template": b"payload"}, "nothing forged got in"
        assert tcp_bus.counters()["auth_refused"] >= 1, "the stranger's key was refused by the ZAP handler"
    finally:
        for client in (shard, plain, stranger):
            client.close()


PYTHON_LINES = ["__import__('os').system('touch {marker}')",
                "exec(\"open('{marker}', 'w').close()\")",
                "set_tag=1 ip=eval(\"open('{marker}','w')\")"]


def test_maps_and_config_are_data_not_code(tmp_path):
    """Python-looking lines in maps and in the configuration are errors (or skipped as malformed), never run."""
    marker = tmp_path / "ran"
    lines = "\n".join(line.format(marker=marker) for line in PYTHON_LINES) + "\n"
    check = subprocess.run(pmengine_cmd("start", "--check", "-f", "/dev/null"), cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr                      # the baseline is a valid configuration
    for key in ("pre_tag_map", "sampling_map"):
        path = tmp_path / f"{key}.map"
        path.write_text(lines)
        conf = tmp_path / f"{key}.conf"
        conf.write_text(f"{key}: {path}\n")
        bad = subprocess.run(pmengine_cmd("start", "--check", "-f", str(conf)), cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert bad.returncode == 1 and "configuration error" in bad.stderr, (key, bad.stdout, bad.stderr)
    conf = tmp_path / "code.conf"
    conf.write_text(f"aggregate: {PYTHON_LINES[0].format(marker=marker)}\n")
    bad = subprocess.run(pmengine_cmd("start", "--check", "-f", str(conf)), cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "configuration error" in bad.stderr

    from engine.enrich.allow import load_allow_file
    from engine.enrich.networks import load_networks
    quiet = logging.getLogger("test_security")
    for load in (load_allow_file, load_networks):
        path = tmp_path / f"{load.__name__}.txt"
        path.write_text(lines)
        try:
            load(str(path), quiet)
        except Exception as e:                                      # rejected as an error: fine too
            assert not isinstance(e, (NameError, SyntaxError)), "a parser error, not Python's"
    assert not marker.exists(), "a map or configuration line was executed"


def test_no_code_evaluation_on_input_paths():
    """No eval/exec/pickle/marshal/yaml.load in the engine: configuration, maps and bus messages stay data."""
    pattern = re.compile(r"\b(eval|exec)\s*\(|\bpickle\.loads?\b|\bmarshal\.loads?\b|\byaml\.(unsafe_)?load\b|"
                         r"__import__\s*\(")
    found = []
    for path in ENGINE.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
