"""sampling_map: per agent / exporter (and input / output interface) sampling rates, applied to a batch.

Syntax (pmacct's sampling.map.example): `id=<rate> ip=<address or prefix> [in=<ifindex>] [out=<ifindex>]`;
in/out may be negative (not that interface); the first rule that matches wins; records of routers that
no rule matches keep the rate they carry.  Rules are compiled to numpy masks: applying a map costs one
vectorised pass per rule, not per record.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..schema import IPV4_MAPPED_PREFIX
from . import MapError, read_map

KEYS = ("id", "ip", "in", "out")


@dataclass(frozen=True)
class SamplingRule:
    rate: int
    network: bytes          # 16 bytes (IPv4-mapped for IPv4)
    prefix: int             # prefix length over the 16 bytes
    in_iface: Optional[int]     # None: any; negative: not this interface
    out_iface: Optional[int]
    line: int


def _iface(text: str, key: str, path: str, line: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MapError(f"bad {key} value {text!r}", path, line) from None
    if not -(2**32) < value < 2**32:
        raise MapError(f"bad {key} value {text!r}", path, line)
    return value


def load_sampling_map(path: str) -> list[SamplingRule]:
    rules = []
    for r in read_map(path, KEYS, required=("id", "ip")):
        v = r.values
        try:
            rate = int(v["id"])
            if not 0 < rate < 2**32:
                raise ValueError
        except ValueError:
            raise MapError(f"bad id (sampling rate) {v['id']!r}", path, r.line) from None
        try:
            net = ipaddress.ip_network(v["ip"], strict=False)
        except ValueError:
            raise MapError(f"bad ip {v['ip']!r}", path, r.line) from None
        if net.version == 4:
            network, prefix = IPV4_MAPPED_PREFIX + net.network_address.packed, 96 + net.prefixlen
        else:
            network, prefix = net.network_address.packed, net.prefixlen
        in_iface = _iface(v["in"], "in", path, r.line) if "in" in v else None
        out_iface = _iface(v["out"], "out", path, r.line) if "out" in v else None
        rules.append(SamplingRule(rate, network, prefix, in_iface, out_iface, r.line))
    return rules


def _prefix_mask(prefix: int) -> np.ndarray:
    bits = np.zeros(128, np.uint8)
    bits[:prefix] = 1
    return np.packbits(bits)


def _iface_match(values: np.ndarray, rule_value: Optional[int]) -> np.ndarray:
    if rule_value is None:
        return np.ones(len(values), bool)
    if rule_value < 0:
        return values != -rule_value
    return values == rule_value


def apply_sampling_map(records: np.ndarray, rules: list[SamplingRule]) -> None:
    """Set records' sampling_rate from the first matching rule (in place)."""
    if not rules or len(records) == 0:
        return
    undecided = np.ones(len(records), bool)
    agents = records["peer_src_ip"]
    for rule in rules:
        mask = _prefix_mask(rule.prefix)
        net = np.frombuffer(rule.network, np.uint8) & mask
        hit = undecided & np.all((agents & mask) == net, axis=1)
        hit &= _iface_match(records["in_iface"], rule.in_iface) & _iface_match(records["out_iface"], rule.out_iface)
        records["sampling_rate"][hit] = rule.rate
        undecided &= ~hit
        if not undecided.any():
            return


def renormalize(records: np.ndarray) -> None:
    """packets and bytes × the sampling rate, in place, as [nf|sf]acctd_renormalize.

    A rate of 0 means unknown (CONFIG-KEYS): counters untouched, sampling_rate stays 0 (as nfacctd 1.7.7);
    any other rate is reported as 1 afterwards."""
    if len(records) == 0:
        return
    rate = records["sampling_rate"].astype(np.uint64)
    known = rate != 0
    rate[~known] = 1
    records["packets"] *= rate
    records["bytes"] *= rate
    records["sampling_rate"][known] = 1
