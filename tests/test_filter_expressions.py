"""The filter parser (errors name the expression) and the numpy evaluator against a per-record reference."""
from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest

from engine.config import ConfigError, loads_config as parse_config_text
from engine.filters import FilterError, evaluate, parse_filter
from engine.schema import empty


def _batch(n: int = 400, seed: int = 1) -> tuple[np.ndarray, list[dict]]:
    rng = random.Random(seed)
    rec = empty(n)
    flows = []
    for i in range(n):
        v6 = rng.random() < 0.3
        src = rng.choice(["10.0.0.1", "10.1.2.3", "192.168.1.9"] if not v6 else ["2001:db8::1", "2001:db8:1::2"])
        dst = rng.choice(["8.8.8.8", "10.1.9.9"] if not v6 else ["2001:db8::53", "::1"])
        f = dict(family=6 if v6 else 4, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(dst),
                 proto=rng.choice([1, 6, 17, 47]), sport=rng.choice([53, 80, 1500]), dport=rng.choice([53, 443, 2000]),
                 vlan=rng.choice([0, 100]))
        flows.append(f)
        for side in ("src", "dst"):
            a = f[side]
            rec[f"{side}_host"][i] = np.frombuffer(
                (bytes(10) + b"\xff\xff" + a.packed) if a.version == 4 else a.packed, np.uint8)
        rec["family"][i], rec["proto"][i], rec["vlan"][i] = f["family"], f["proto"], f["vlan"]
        rec["src_port"][i], rec["dst_port"][i] = f["sport"], f["dport"]
    return rec, flows


NET10 = ipaddress.ip_network("10.0.0.0/8")
CASES = {
    "src host 10.1.2.3 and not port 53": lambda f: str(f["src"]) == "10.1.2.3" and not (
        f["proto"] in (6, 17) and 53 in (f["sport"], f["dport"])),
    "net 10.0.0.0/8": lambda f: f["family"] == 4 and (f["src"] in NET10 or f["dst"] in NET10),
    "portrange 1000-2000": lambda f: f["proto"] in (6, 17) and (1000 <= f["sport"] <= 2000 or 1000 <= f["dport"] <= 2000),
    "ip proto 17": lambda f: f["family"] == 4 and f["proto"] == 17,
    "ip6 and (tcp or udp)": lambda f: f["family"] == 6 and f["proto"] in (6, 17),
    "icmp or vlan 100": lambda f: f["proto"] == 1 or f["vlan"] == 100,
    "tcp dst port 443 or 2000": lambda f: f["proto"] == 6 and f["dport"] in (443, 2000),
    "not ip": lambda f: f["family"] != 4,
    "dst host 2001:db8::53 || src net 192.168.0.0/16": lambda f: str(f["dst"]) == "2001:db8::53" or (
        f["family"] == 4 and f["src"] in ipaddress.ip_network("192.168.0.0/16")),
    "src and dst net 10.0.0.0 mask 255.0.0.0": lambda f: f["family"] == 4 and f["src"] in NET10 and f["dst"] in NET10,
}


@pytest.mark.parametrize("expression", list(CASES))
def test_evaluate_matches_reference(expression: str) -> None:
    records, flows = _batch()
    expected = np.array([CASES[expression](f) for f in flows])
    got = evaluate(parse_filter(expression), records)
    assert expected.any() and not expected.all()
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("expression", ["host example.com", "port http", "ether host 1:2:3:4:5:6", "len > 100",
                                        "tcp host 10.0.0.1", "(port 53", "port 53 or", "net 10.1.2.3/8",
                                        "ip6 host 10.0.0.1", "portrange 5"])
def test_unsupported_is_an_error_naming_the_expression(expression: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filter(expression)
    assert repr(expression) in str(err.value)


def test_config_error_names_key_line_and_expression() -> None:
    text = "plugins: print[a]\naggregate[a]: src_host\naggregate_filter[a]: tcp and port smtp\n"
    with pytest.raises(ConfigError) as err:
        parse_config_text(text)
    msg = str(err.value)
    assert "aggregate_filter" in msg and "3" in msg and "tcp and port smtp" in msg


def test_config_keeps_the_text() -> None:
    cfg = parse_config_text("plugins: print[a]\naggregate_filter[a]: udp and dst port 53\npre_tag_filter[a]: 1,3-5,-4\n")
    assert cfg.plugins[0].aggregate_filter == "udp and dst port 53"
    assert cfg.plugins[0].pre_tag_filter == "1,3-5,-4"
