"""Evaluate a filter tree over a whole batch of canonical records (RECORD_DTYPE) with numpy.

    mask = evaluate(parse_filter("udp and dst port 53"), records)   # bool array, one per record

What each leaf means on a flow (nfacctd runs the libpcap program over a packet made from the flow):
host/net test the flow's source/destination address on a flow of the address's family; port/portrange
the L4 ports on flows of the protocols (bare `port`: tcp, udp, sctp) and an L3 family; tcp/udp/icmp and
`proto N` the L4 protocol; ip/ip6 the family; vlan the VLAN id.
"""
from __future__ import annotations

import numpy as np

from . import ast

_DIRS = {"src": ("src",), "dst": ("dst",), ast.ANY_DIR: ("src", "dst"), ast.BOTH_DIR: ("src", "dst")}


def _prefix_mask(bits: int) -> np.ndarray:
    mask = np.zeros(16, dtype=np.uint8)
    mask[:bits // 8] = 0xFF
    if bits % 8:
        mask[bits // 8] = (0xFF << (8 - bits % 8)) & 0xFF
    return mask


def _combine(direction: str, tests: list[np.ndarray]) -> np.ndarray:
    if direction == ast.BOTH_DIR:
        return tests[0] & tests[1]
    out = tests[0]
    for t in tests[1:]:
        out = out | t
    return out


def _addr_test(records: np.ndarray, direction: str, family: int, want: np.ndarray, mask: np.ndarray) -> np.ndarray:
    fam = records["family"] == family
    tests = []
    for side in _DIRS[direction]:
        addr = records[f"{side}_host"]
        tests.append(np.all((addr & mask) == want, axis=1))
    return fam & _combine(direction, tests)


def _l3(records: np.ndarray) -> np.ndarray:
    fam = records["family"]
    return (fam == 4) | (fam == 6)


def evaluate(node: ast.Node, records: np.ndarray) -> np.ndarray:
    """One bool per record: does the record match the expression."""
    n = len(records)
    if isinstance(node, ast.Const):
        return np.full(n, node.value, dtype=bool)
    if isinstance(node, ast.And):
        out = evaluate(node.items[0], records)
        for item in node.items[1:]:
            out &= evaluate(item, records)
        return out
    if isinstance(node, ast.Or):
        out = evaluate(node.items[0], records)
        for item in node.items[1:]:
            out |= evaluate(item, records)
        return out
    if isinstance(node, ast.Not):
        return ~evaluate(node.item, records)
    if isinstance(node, ast.Host):
        full = np.full(16, 0xFF, dtype=np.uint8)
        return _addr_test(records, node.dir, node.family, np.frombuffer(node.addr, np.uint8), full)
    if isinstance(node, ast.Net):
        mask = _prefix_mask(node.bits)
        return _addr_test(records, node.dir, node.family, np.frombuffer(node.prefix, np.uint8) & mask, mask)
    if isinstance(node, ast.Port):
        ok = _l3(records) & np.isin(records["proto"], node.protos)
        tests = [(records[f"{side}_port"] >= node.low) & (records[f"{side}_port"] <= node.high)
                 for side in _DIRS[node.dir]]
        return ok & _combine(node.dir, tests)
    if isinstance(node, ast.Proto):
        fam = _l3(records) if node.family is None else records["family"] == node.family
        return fam & np.isin(records["proto"], node.protos)
    if isinstance(node, ast.Family):
        return records["family"] == node.family
    if isinstance(node, ast.Vlan):
        vlan = records["vlan"]
        return vlan != 0 if node.vid is None else vlan == node.vid
    raise TypeError(f"not a filter node: {node!r}")
