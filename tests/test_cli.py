"""`pmengine start --check`: a bad configuration is rejected before anything starts, naming key and line."""
from __future__ import annotations

import subprocess

from conftest import REPO, pmengine_cmd


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    return subprocess.run(pmengine_cmd("start", "--check", "-f", str(conf)), cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_check_accepts_the_default_config():
    proc = subprocess.run(pmengine_cmd("start", "--check", "-f", "conf/pmengine.conf"), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout


def test_check_names_unknown_key_and_line(tmp_path):
    proc = check(tmp_path, "! a comment\nplugins: print\nprint_outptu: json\n")
    assert proc.returncode != 0
    assert "print_outptu" in proc.stderr and ":3" in proc.stderr


def test_check_names_bad_value_and_line(tmp_path):
    proc = check(tmp_path, "plugins: print[a]\n\nnfacctd_port: seventy\n")
    assert proc.returncode != 0
    assert "nfacctd_port" in proc.stderr and ":3" in proc.stderr


def test_check_names_unknown_primitive(tmp_path):
    proc = check(tmp_path, "plugins: print[a]\naggregate[a]: src_host, dst_hots\n")
    assert proc.returncode != 0
    assert "dst_hots" in proc.stderr and ":2" in proc.stderr


def test_check_names_unimplemented_pmacct_key(tmp_path):
    proc = check(tmp_path, "plugins: print\nbgp_daemon: true\n")
    assert proc.returncode != 0
    assert "bgp_daemon" in proc.stderr and ":2" in proc.stderr and "not implement" in proc.stderr


def test_start_refuses_bad_config_without_starting(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("plugins: print\nprint_refresh_time: -5\n")
    proc = subprocess.run(pmengine_cmd("start", "-f", str(conf)), cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "print_refresh_time" in proc.stderr and ":2" in proc.stderr
    assert "listening" not in proc.stderr
