"""pmacct map files (engine.maps) and sampling_map: errors name file and line; matching by agent / interface."""
from __future__ import annotations

import numpy as np
import pytest

from engine.config import ConfigError, load_config
from engine.decoders.batch import exporter_bytes
from engine.maps import MapError, parse_map_text, read_map
from engine.maps.sampling import apply_sampling_map, load_sampling_map, renormalize
from engine.schema import RECORD_DTYPE


@pytest.mark.parametrize("text, line, words", [
    ("id=1 ip=1.2.3.4\nid=2 ip\n", 2, "expected key=value"),
    ("! comment\n\nid=1 ip=1.2.3.4 colour=red\n", 3, "unknown key 'colour'"),
    ("id=1 id=2 ip=1.2.3.4\n", 1, "given twice"),
    ("ip=1.2.3.4\n", 1, "missing key 'id'"),
    ("id=1 ip=\n", 1, "has no value"),
])
def test_map_reader_errors_name_file_and_line(text, line, words):
    with pytest.raises(MapError) as info:
        parse_map_text(text, "/etc/x.map", keys=("id", "ip"), required=("id", "ip"))
    assert str(info.value).startswith(f"/etc/x.map:{line}: ") and words in str(info.value)
    assert info.value.line == line


def test_map_reader_keys_are_case_insensitive_and_comments_skipped():
    rules = parse_map_text("! c\n  ID=3 Ip=10.0.0.0/8  \n\n!id=4\nid=5 ip=::1\n", "m", keys=("id", "ip"))
    assert [(r.values, r.line) for r in rules] == [({"id": "3", "ip": "10.0.0.0/8"}, 2),
                                                  ({"id": "5", "ip": "::1"}, 5)]


def test_unreadable_map_names_the_file(tmp_path):
    with pytest.raises(MapError) as info:
        read_map(str(tmp_path / "missing.map"), keys=("id",))
    assert str(tmp_path / "missing.map") in str(info.value) and info.value.line is None


@pytest.mark.parametrize("line, words", [("id=0 ip=1.2.3.4", "bad id"), ("id=x ip=1.2.3.4", "bad id"),
                                         ("id=10 ip=300.1.1.1", "bad ip"), ("id=10 ip=1.2.3.4 in=abc", "bad in")])
def test_sampling_map_value_errors(tmp_path, line, words):
    path = tmp_path / "s.map"
    path.write_text(f"id=1 ip=192.0.2.1\n{line}\n")
    with pytest.raises(MapError) as info:
        load_sampling_map(str(path))
    assert f"{path}:2: " in str(info.value) and words in str(info.value)


def records(agents: list[str], in_ifaces: list[int], out_ifaces: list[int], rate: int = 3) -> np.ndarray:
    r = np.zeros(len(agents), RECORD_DTYPE)
    r["peer_src_ip"] = np.frombuffer(b"".join(exporter_bytes(a) for a in agents), np.uint8).reshape(-1, 16)
    r["in_iface"], r["out_iface"] = in_ifaces, out_ifaces
    r["sampling_rate"], r["packets"], r["bytes"] = rate, 1, 100
    return r


def test_sampling_map_matches_agent_prefix_and_interfaces_first_rule_wins(tmp_path):
    path = tmp_path / "s.map"
    path.write_text("id=100 ip=192.0.2.1 in=5\n"          # agent + input interface
                    "id=200 ip=192.0.2.0/24 out=-7\n"      # prefix, any output interface but 7
                    "id=300 ip=2001:db8::/32\n"
                    "id=400 ip=192.0.2.1\n")
    rules = load_sampling_map(str(path))
    r = records(["192.0.2.1", "192.0.2.1", "192.0.2.9", "192.0.2.9", "2001:db8::5", "198.51.100.1", "192.0.2.1"],
                [5, 6, 1, 1, 1, 1, 6], [1, 1, 1, 7, 1, 1, 7])
    apply_sampling_map(r, rules)
    assert r["sampling_rate"].tolist() == [100, 200, 200, 3, 300, 3, 400]
    renormalize(r)
    assert r["bytes"].tolist() == [10000, 20000, 20000, 300, 30000, 300, 40000]
    assert r["packets"].tolist() == [100, 200, 200, 3, 300, 3, 400] and set(r["sampling_rate"].tolist()) == {1}


def test_renormalize_leaves_unknown_rate_zero_alone():
    r = records(["192.0.2.1"], [1], [1], rate=0)
    renormalize(r)
    assert (r["bytes"][0], r["packets"][0], r["sampling_rate"][0]) == (100, 1, 0)


def test_bad_sampling_map_is_a_config_error_at_start(tmp_path):
    smap = tmp_path / "bad.map"
    smap.write_text("id=10 ip=192.0.2.1\nid=20 ip=nowhere\n")
    conf = tmp_path / "c.conf"
    conf.write_text(f"sfacctd_port: 6343\nsampling_map: {smap}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert f"{smap}:2" in str(info.value) and "sampling_map" in str(info.value)
