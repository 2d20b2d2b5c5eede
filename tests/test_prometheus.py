"""The Prometheus endpoint: its config key (loopback only, off by default), the text format, the server."""
from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from engine.config import ConfigError, describe_config, loads_config
from engine.config.keys_ops import ListenAddress
from engine.ops.prometheus import PrometheusServer, render_metrics
from engine.ops.stats_model import build_model

from test_stats_model import files


def test_off_by_default_and_loopback_addresses_parse():
    assert loads_config("").core.prometheus_listen is None
    assert loads_config("prometheus_listen: [::1]:9108\n").core.prometheus_listen == ListenAddress("::1", 9108)
    assert loads_config("prometheus_listen: 127.0.0.9:0\n").core.prometheus_listen == ListenAddress("127.0.0.9", 0)
    cfg = loads_config("prometheus_listen: [::1]:9108\n")
    assert loads_config(describe_config(cfg)).core.prometheus_listen == cfg.core.prometheus_listen


@pytest.mark.parametrize("value, words", [("0.0.0.0:9108", "not a loopback"), ("192.0.2.1:9108", "not a loopback"),
                                           ("[::]:9108", "not a loopback"), ("127.0.0.1", "bad listen address"),
                                           ("localhost:9108", "bad listen address"), ("127.0.0.1:70000", "port")])
def test_a_bad_or_non_loopback_address_is_an_error_naming_key_and_line(value, words):
    with pytest.raises(ConfigError) as err:
        loads_config(f"! a comment\nprometheus_listen: {value}\n", source="x.conf")
    assert err.value.key == "prometheus_listen" and err.value.line == 2 and words in str(err.value)


def test_metrics_text_names_types_and_values():
    text = render_metrics(build_model(files()))
    assert text.endswith("\n")
    assert "# TYPE pmengine_exporter_packets_total counter" in text
    assert 'pmengine_exporter_packets_total{exporter="10.0.0.1"} 6' in text.splitlines()
    assert 'pmengine_shard_kernel_drops_total{shard="0"} 3' in text.splitlines()
    assert 'pmengine_ring_dropped_records_total{ring="r0b",shard="0",plugin="b"} 20' in text.splitlines()
    assert 'pmengine_sink_total{plugin="b",type="pgsql",counter="rows_dropped"} 4' in text.splitlines()
    assert 'pmengine_sink{plugin="b",type="pgsql",counter="rows_buffered"} 9' in text.splitlines()
    assert "pmengine_balance_ok{} 1" in text.splitlines()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        assert (m.group(2) == "counter") == m.group(1).endswith("_total")
    names = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(names) == len(set(names))


def test_label_values_are_escaped():
    model = build_model({"plugin-x": {"plugin": 'a"b\\c', "type": "print", "rings": {}}})
    assert 'plugin="a\\"b\\\\c"' in render_metrics(model)


def test_server_serves_metrics_and_nothing_else():
    server = PrometheusServer("127.0.0.1", 0, lambda: build_model(files())).start()
    try:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "pmengine_exporter_flows_total" in resp.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url.replace("/metrics", "/secret"), timeout=10)
        assert err.value.code == 404
    finally:
        server.stop()


def test_a_failing_model_is_a_500_not_a_dead_server():
    def broken():
        raise RuntimeError("no stats")
    server = PrometheusServer("127.0.0.1", 0, broken).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url, timeout=10)
        assert err.value.code == 500
    finally:
        server.stop()
