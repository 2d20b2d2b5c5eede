"""A recursive-descent parser for the libpcap filter expressions operators put on flows.

    parse_filter("src host 10.0.0.1 and not (port 53 or 123)")  # -> an engine.filters.ast tree

Grammar (precedence: not > and > or; `!`, `&&`, `||` are synonyms):

    expr    := conj { ("or" | "||") conj }
    conj    := unary { ("and" | "&&") unary }
    unary   := ("not" | "!") unary | "(" expr ")" | primitive
    primitive := [proto] [dir] [type] value | proto | "vlan" [N] | [ip|ip6] "proto" P

proto is ip, ip6, tcp, udp, icmp (sctp); dir is src, dst, "src or dst", "src and dst"; type is host, net,
port, portrange.  As in libpcap a bare value after and/or inherits the qualifiers of the previous
primitive (`port 53 or 80`, `host a or b`).  Anything else (hostnames, service names, arithmetic,
ether/link qualifiers, ...) is a FilterError naming the expression: never a silent pass.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from . import ast

PROTO_NUMBERS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "icmp6": 58, "sctp": 132}
PORT_PROTOS = (6, 17, 132)              # libpcap: `port` is tcp, udp or sctp
PROTO_QUALS = ("ip", "ip6", "tcp", "udp", "icmp", "sctp")
TYPE_QUALS = ("host", "net", "port", "portrange")
_TOKEN = re.compile(r"\(|\)|&&|\|\||!|[^\s()!&|]+")


class FilterError(ValueError):
    def __init__(self, message: str, expression: str) -> None:
        self.message, self.expression = message, expression
        super().__init__(f"bad filter expression {expression!r}: {message}")

    def __reduce__(self):
        return FilterError, (self.message, self.expression)


@dataclass
class _Quals:
    proto: Optional[str] = None
    dir: Optional[str] = None
    type: Optional[str] = None


def tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    for m in _TOKEN.finditer(text):
        gap = text[pos:m.start()]
        if gap.strip():
            raise FilterError(f"unexpected {gap.strip()!r}", text)
        tokens.append(m.group(0))
        pos = m.end()
    if text[pos:].strip():
        raise FilterError(f"unexpected {text[pos:].strip()!r}", text)
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.last: Optional[_Quals] = None

    # -- token helpers
    def peek(self, ahead: int = 0) -> Optional[str]:
        i = self.pos + ahead
        return self.tokens[i].lower() if i < len(self.tokens) else None

    def take(self) -> str:
        if self.pos >= len(self.tokens):
            raise self.error("unexpected end of expression")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def error(self, message: str) -> FilterError:
        return FilterError(message, self.text)

    # -- grammar
    def parse(self) -> ast.Node:
        if not self.tokens:
            return ast.Const(True)
        node = self.expr()
        if self.pos != len(self.tokens):
            raise self.error(f"unexpected {self.tokens[self.pos]!r}")
        return node

    def expr(self) -> ast.Node:
        items = [self.conj()]
        while self.peek() in ("or", "||"):
            self.take()
            items.append(self.conj())
        return items[0] if len(items) == 1 else ast.Or(tuple(items))

    def conj(self) -> ast.Node:
        items = [self.unary()]
        while self.peek() in ("and", "&&"):
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else ast.And(tuple(items))

    def unary(self) -> ast.Node:
        tok = self.peek()
        if tok in ("not", "!"):
            self.take()
            return ast.Not(self.unary())
        if tok == "(":
            self.take()
            node = self.expr()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.take()
            return node
        if tok is None:
            raise self.error("unexpected end of expression")
        if tok in (")", "and", "&&", "or", "||"):
            raise self.error(f"unexpected {tok!r}")
        return self.primitive()

    def primitive(self) -> ast.Node:
        tok = self.peek()
        if tok == "vlan":
            self.take()
            nxt = self.peek()
            if nxt is not None and nxt.isdigit():
                vid = int(self.take())
                if vid > 4095:
                    raise self.error(f"bad vlan id {vid}")
                return ast.Vlan(vid)
            return ast.Vlan(None)
        if tok == "proto":
            self.take()
            return ast.Proto((self.proto_number(),))
        quals = _Quals()
        if tok in PROTO_QUALS:
            quals.proto = self.take().lower()
            if self.peek() == "proto":
                if quals.proto not in ("ip", "ip6"):
                    raise self.error(f"'{quals.proto} proto' is not a valid combination")
                self.take()
                return ast.Proto((self.proto_number(),), 4 if quals.proto == "ip" else 6)
        if self.peek() in ("src", "dst"):
            quals.dir = self.take().lower()
            if self.peek() in ("or", "and") and self.peek(1) == ("dst" if quals.dir == "src" else "src"):
                quals.dir = ast.ANY_DIR if self.take().lower() == "or" else ast.BOTH_DIR
                self.take()
        if self.peek() in TYPE_QUALS:
            quals.type = self.take().lower()
        if quals.proto and not quals.dir and not quals.type and not self.at_value():
            return self.proto_only(quals.proto)
        if not quals.proto and not quals.dir and not quals.type:
            if self.last is None:
                if self.at_value() and self._is_address(self.peek()):
                    quals.type = "host"
                else:
                    raise self.error(f"unknown primitive {self.tokens[self.pos]!r}")
            else:
                quals = self.last                   # `port 53 or 80`: the previous qualifiers
        if not self.at_value():
            raise self.error("missing value after qualifiers")
        self.last = quals
        return self.value(quals, self.take())

    def at_value(self) -> bool:
        tok = self.peek()
        return tok is not None and tok not in ("(", ")", "and", "&&", "or", "||", "not", "!") \
            and tok not in PROTO_QUALS and tok not in TYPE_QUALS and tok not in ("src", "dst", "vlan", "proto")

    @staticmethod
    def _is_address(text: str) -> bool:
        try:
            ipaddress.ip_address(text)
            return True
        except ValueError:
            return False

    def proto_only(self, proto: str) -> ast.Node:
        if proto == "ip":
            return ast.Family(4)
        if proto == "ip6":
            return ast.Family(6)
        return ast.Proto((PROTO_NUMBERS[proto],))

    def proto_number(self) -> int:
        tok = self.take().lstrip("\\").lower()
        if tok in PROTO_NUMBERS:
            return PROTO_NUMBERS[tok]
        if tok.isdigit() and int(tok) <= 255:
            return int(tok)
        raise self.error(f"bad protocol {tok!r}")

    # -- values
    def value(self, quals: _Quals, text: str) -> ast.Node:
        kind = quals.type or "host"
        direction = quals.dir or ast.ANY_DIR
        if kind in ("port", "portrange"):
            if quals.proto in ("ip", "ip6", "icmp"):
                raise self.error(f"'{quals.proto} {kind}' is not a valid combination")
            protos = (PROTO_NUMBERS[quals.proto],) if quals.proto else PORT_PROTOS
            low, high = self.port_range(text) if kind == "portrange" else (self.port(text),) * 2
            return ast.Port(direction, low, high, protos)
        if quals.proto in ("tcp", "udp", "icmp", "sctp"):
            raise self.error(f"'{quals.proto} {kind}' is not a valid combination")
        if kind == "host":
            node = self.host(direction, text)
        else:
            node = self.net(direction, text)
        if quals.proto and node.family != (4 if quals.proto == "ip" else 6):
            raise self.error(f"address {text!r} is not an {quals.proto} address")
        return node

    def port(self, text: str) -> int:
        if not text.isdigit() or int(text) > 65535:
            raise self.error(f"bad port {text!r} (numbers 0-65535; service names are not supported)")
        return int(text)

    def port_range(self, text: str) -> tuple[int, int]:
        low, sep, high = text.partition("-")
        if not sep:
            raise self.error(f"bad port range {text!r} (expected A-B)")
        a, b = self.port(low), self.port(high)
        return (a, b) if a <= b else (b, a)

    def host(self, direction: str, text: str) -> ast.Host:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise self.error(f"bad host {text!r} (IP addresses only; hostnames are not resolved)") from None
        return ast.Host(direction, _addr16(addr), addr.version)

    def net(self, direction: str, text: str) -> ast.Net:
        if self.peek() == "mask":
            self.take()
            mask_text = self.take()
            try:
                net = ipaddress.ip_network(f"{text}/{mask_text}", strict=False)
            except ValueError:
                raise self.error(f"bad net {text!r} mask {mask_text!r}") from None
        else:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise self.error(f"bad net {text!r} (expected ADDRESS/LENGTH)") from None
        if "/" in text and ipaddress.ip_network(text, strict=False).network_address != \
                ipaddress.ip_interface(text).ip:
            raise self.error(f"non-network bits set in {text!r}")
        bits = net.prefixlen + (96 if net.version == 4 else 0)
        return ast.Net(direction, _addr16(net.network_address), bits, net.version)


def _addr16(addr) -> bytes:
    if addr.version == 4:
        return bytes(10) + b"\xff\xff" + addr.packed
    return addr.packed


def parse_filter(text: str) -> ast.Node:
    """The tree of a filter expression; raises FilterError (naming the expression) on anything unsupported."""
    return _Parser(text).parse()
