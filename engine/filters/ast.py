"""The tree of a flow filter expression (libpcap syntax, as operators write aggregate_filter / map filters).

Leaves test record fields; `dir` is "src", "dst", "src or dst" or "src and dst".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

ANY_DIR = "src or dst"
BOTH_DIR = "src and dst"


@dataclass(frozen=True)
class Host:
    """`[src|dst] host A`: the address (16 bytes, IPv4-mapped) on a flow of its family."""
    dir: str
    addr: bytes
    family: int


@dataclass(frozen=True)
class Net:
    """`[src|dst] net P/L` (or `net A mask M`): the address under the prefix, on a flow of its family."""
    dir: str
    prefix: bytes           # 16 bytes, masked
    bits: int               # prefix length over the 16 bytes (IPv4: 96 + L)
    family: int


@dataclass(frozen=True)
class Port:
    """`[tcp|udp] [src|dst] port N` / `portrange A-B`: a port in [low, high] on a flow of the protocols."""
    dir: str
    low: int
    high: int
    protos: tuple[int, ...]     # (6, 17, 132) for a bare `port`, as libpcap


@dataclass(frozen=True)
class Proto:
    """`tcp`, `udp`, `icmp`, `ip proto N`, `ip6 proto N`, `proto N`: the L4 protocol (on a family, if given)."""
    protos: tuple[int, ...]
    family: Optional[int] = None


@dataclass(frozen=True)
class Family:
    """`ip` (4) / `ip6` (6)."""
    family: int


@dataclass(frozen=True)
class Vlan:
    """`vlan [N]`: the flow's VLAN id is N (any non-zero id without N)."""
    vid: Optional[int]


@dataclass(frozen=True)
class Not:
    item: "Node"


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Const:
    """Always true / false (an empty expression is true)."""
    value: bool


Node = Union[Host, Net, Port, Proto, Family, Vlan, Not, And, Or, Const]
