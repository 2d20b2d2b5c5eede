"""networks_file and nfacctd_net / nfacctd_as: src/dst mask, AS, peer AS and BGP next hop by longest prefix.

File syntax (pmacct): one entry per line, `[<next-hop>,][[<peerAS>_]<originAS>,]<prefix>/<len>`;
`!` starts a comment line; IPv4 and IPv6.  A bad line is counted, logged and skipped.

Semantics (pmacct 1.7.7, checked against nfacctd where it works; see tests/test_networks_differential.py):
- net source `flow` (netflow / sflow, the default): masks and next hop as exported; with use_ip_next_hop
  an absent BGP next hop is taken from the IP next hop.
- net source `file`: src_mask / dst_mask are the matching prefix lengths (0: no match, so src_net /
  dst_net print the zero network), peer_dst_ip is the next hop of the destination's entry (empty if none).
- net source `mask`: networks_mask for both sides.
- as source `file`: src_as / peer_src_as from the source's entry, dst_as / peer_dst_as from the
  destination's entry (0 where no entry or no AS in it).
- `longest`: per side, the file's entry wins where its prefix is longer than the flow's mask (at equal
  length the flow protocol wins: networks_file < NetFlow/sFlow); networks_file_no_lpm: a matching entry
  always wins.  The winner supplies everything for that side, empty fields included.
- networks_file_filter: hosts that match no entry are zeroed (address and mask).
src_net / dst_net are derived at aggregation from host & mask (engine/plugins/aggregate.py), so setting
the masks yields the file's networks.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..schema import IPV4_MAPPED_PREFIX
from .lpm import IntervalTable, build_table, ipv4_keys, ipv6_keys

NET_SOURCES = ("flow", "file", "mask", "longest")
AS_SOURCES = ("flow", "file", "longest")


class NetworksFileError(ValueError):
    """The file cannot be read at all (a bad line is only counted)."""


@dataclass
class Entries:
    """A family's entries, indexed like its IntervalTable's owners."""
    plen: np.ndarray            # uint8, prefix length in the family's width
    origin_as: np.ndarray       # uint32
    peer_as: np.ndarray         # uint32
    next_hop: np.ndarray        # uint8 (n, 16), zeros: none
    has_next_hop: np.ndarray    # bool


@dataclass
class NetworksTable:
    v4: IntervalTable
    v4_entries: Entries
    v6: IntervalTable
    v6_entries: Entries
    entries: int
    bad_lines: int


def _addr16(ip) -> bytes:
    return IPV4_MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


def parse_line(line: str) -> Optional[tuple]:
    """One line -> (network, origin_as, peer_as, next_hop or None), None for blanks and comments.

    Raises ValueError on a malformed entry."""
    text = line.strip()
    if not text or text.startswith("!"):
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 3 or not parts[-1]:
        raise ValueError(f"bad entry {text!r}")
    net = ipaddress.ip_network(parts[-1], strict=False)
    head = parts[:-1]
    next_hop, asn = None, None
    if len(head) == 2:
        next_hop, asn = head
    elif len(head) == 1:
        try:
            ipaddress.ip_address(head[0])
            next_hop = head[0]
        except ValueError:
            asn = head[0]
    origin, peer = 0, 0
    if asn is not None:
        peer_text, _, origin_text = asn.rpartition("_")
        origin = _as_number(origin_text)
        peer = _as_number(peer_text) if peer_text else 0
    hop = ipaddress.ip_address(next_hop) if next_hop is not None else None
    return net, origin, peer, hop


def _as_number(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise ValueError(f"bad AS number {text!r}")
    return value


def _entries(rows: list[tuple]) -> Entries:
    n = len(rows)
    hops = np.zeros((n, 16), dtype=np.uint8)
    for i, (_, _, _, hop) in enumerate(rows):
        if hop is not None:
            hops[i] = np.frombuffer(_addr16(hop), dtype=np.uint8)
    return Entries(np.array([r[0].prefixlen for r in rows], dtype=np.uint8),
                   np.array([r[1] for r in rows], dtype=np.uint32), np.array([r[2] for r in rows], dtype=np.uint32),
                   hops, np.array([r[3] is not None for r in rows], dtype=bool))


def load_networks(path: str, log: Optional[logging.Logger] = None) -> NetworksTable:
    """Read and flatten a networks file (raises NetworksFileError when it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as exc:
        raise NetworksFileError(f"networks_file {path}: {exc}") from None
    v4: list[tuple] = []
    v6: list[tuple] = []
    bad = 0
    for number, line in enumerate(lines, 1):
        try:
            row = parse_line(line)
        except ValueError as exc:
            bad += 1
            if log is not None:
                log.warning("networks_file %s line %d skipped: %s", path, number, exc)
            continue
        if row is not None:
            (v4 if row[0].version == 4 else v6).append(row)
    return NetworksTable(build_table([(int(r[0].network_address), r[0].prefixlen) for r in v4], 32), _entries(v4),
                         build_table([(int(r[0].network_address), r[0].prefixlen) for r in v6], 128), _entries(v6),
                         len(v4) + len(v6), bad)


@dataclass
class SideMatch:
    """Per record of a batch: the matching entry's fields for one side (src or dst)."""
    matched: np.ndarray         # bool
    plen: np.ndarray            # uint8
    origin_as: np.ndarray
    peer_as: np.ndarray
    next_hop: np.ndarray        # (n, 16)
    has_next_hop: np.ndarray


def match(table: NetworksTable, addr16: np.ndarray, family: np.ndarray) -> SideMatch:
    """Longest-prefix match of every address of a batch (family 4 / 6 picks the table)."""
    n = len(addr16)
    out = SideMatch(np.zeros(n, bool), np.zeros(n, np.uint8), np.zeros(n, np.uint32), np.zeros(n, np.uint32),
                    np.zeros((n, 16), np.uint8), np.zeros(n, bool))
    for fam, lpm, entries, keys in ((4, table.v4, table.v4_entries, ipv4_keys),
                                    (6, table.v6, table.v6_entries, ipv6_keys)):
        if len(entries.plen) == 0:
            continue
        rows = np.flatnonzero(family == fam)
        if len(rows) == 0:
            continue
        owner = lpm.lookup(keys(addr16[rows]))
        hit = owner >= 0
        rows, owner = rows[hit], owner[hit]
        out.matched[rows] = True
        out.plen[rows] = entries.plen[owner]
        out.origin_as[rows] = entries.origin_as[owner]
        out.peer_as[rows] = entries.peer_as[owner]
        out.next_hop[rows] = entries.next_hop[owner]
        out.has_next_hop[rows] = entries.has_next_hop[owner]
    return out


@dataclass(frozen=True)
class NetworksSettings:
    net_source: str = "flow"            # NET_SOURCES
    as_source: str = "flow"             # AS_SOURCES
    use_ip_next_hop: bool = False
    no_lpm: bool = False                # networks_file_no_lpm
    file_filter: bool = False           # networks_file_filter
    mask: Optional[int] = None          # networks_mask

    @property
    def active(self) -> bool:
        return (self.net_source != "flow" or self.as_source != "flow" or self.use_ip_next_hop
                or self.file_filter)


def enrich(records: np.ndarray, table: Optional[NetworksTable], s: NetworksSettings) -> np.ndarray:
    """Fill src/dst mask, AS, peer AS and peer_dst_ip of a batch in place, as configured; returns it."""
    if len(records) == 0 or not s.active:
        return records
    family = records["family"]
    wants_file = table is not None and (s.net_source in ("file", "longest") or s.as_source in ("file", "longest")
                                        or s.file_filter)
    if s.use_ip_next_hop and s.net_source in ("flow", "longest"):
        # before the file: where the file wins below, its next hop replaces this one
        absent = ~records["peer_dst_ip"].any(axis=1) & records["ip_next_hop"].any(axis=1)
        records["peer_dst_ip"][absent] = records["ip_next_hop"][absent]
        records["peer_dst_missing"][absent] = 0
    if s.net_source == "mask":
        width = np.where(family == 6, 128, 32)
        value = np.minimum(width, s.mask or 0).astype(np.uint8)
        records["src_mask"] = value
        records["dst_mask"] = value
    for side in ("src", "dst"):
        mask_col, as_col, peer_col = f"{side}_mask", f"{side}_as", f"peer_{side}_as"
        if not wants_file:
            if s.net_source == "file":
                records[mask_col] = 0
                if side == "dst":
                    _clear_next_hop(records, np.ones(len(records), bool))
            if s.as_source == "file":
                records[as_col] = 0
                records[peer_col] = 0
            continue
        m = match(table, records[f"{side}_host"], family)
        # ties go to the file (nfacctd 1.7.7, measured), an unmatched address counting as length 0
        file_wins = m.matched if s.no_lpm else m.plen >= records[mask_col]
        net_rows = {"file": np.ones(len(records), bool), "longest": file_wins}.get(s.net_source)
        if net_rows is not None:
            records[mask_col][net_rows] = m.plen[net_rows]
            if side == "dst":
                records["peer_dst_ip"][net_rows] = m.next_hop[net_rows]
                records["peer_dst_missing"][net_rows] = ~m.has_next_hop[net_rows]
        as_rows = {"file": np.ones(len(records), bool), "longest": file_wins}.get(s.as_source)
        if as_rows is not None:
            records[as_col][as_rows] = m.origin_as[as_rows]
            records[peer_col][as_rows] = m.peer_as[as_rows]
        if s.file_filter:
            out = ~m.matched
            records[f"{side}_host"][out] = 0
            records[mask_col][out] = 0
    return records


def _clear_next_hop(records: np.ndarray, rows: np.ndarray) -> None:
    records["peer_dst_ip"][rows] = 0
    records["peer_dst_missing"][rows] = 1


def settings_for(plugin, core) -> NetworksSettings:
    """The plugin's NetworksSettings from the typed configuration (nfacctd_* win over sfacctd_*)."""
    return NetworksSettings(net_source=core.net_source or core.sflow_net_source or "flow",
                            as_source=core.as_source or core.sflow_as_source or "flow",
                            use_ip_next_hop=core.use_ip_next_hop, no_lpm=plugin.networks_file_no_lpm,
                            file_filter=plugin.networks_file_filter and plugin.networks_file is not None,
                            mask=plugin.networks_mask)


class NetworksStage:
    """A plugin's networks enrichment: the loaded file (if any) and the settings; reloaded on SIGUSR2."""

    def __init__(self, plugin, core, log: logging.Logger, counters: dict) -> None:
        self.path = plugin.networks_file
        self.settings = settings_for(plugin, core)
        self.log = log
        self.counters = counters
        self.table: Optional[NetworksTable] = None
        if self.path:
            self.table = self._load()
            if self.table is None:
                self.table = load_networks("/dev/null")      # unreadable at start: no entries, as an empty file

    def _load(self) -> Optional[NetworksTable]:
        try:
            table = load_networks(self.path, self.log)
        except NetworksFileError as exc:
            self.counters["networks_file_errors"] = self.counters.get("networks_file_errors", 0) + 1
            self.log.error("%s", exc)
            return None
        self.counters["networks_entries"] = table.entries
        self.counters["networks_bad_lines"] = table.bad_lines
        self.log.info("[%s] networks_file loaded: %d entries, %d bad lines", self.path, table.entries,
                      table.bad_lines)
        return table

    def apply(self, records: np.ndarray) -> np.ndarray:
        if not self.settings.active or len(records) == 0:
            return records
        if not records.flags.writeable:
            records = records.copy()
        return enrich(records, self.table, self.settings)

    def reload(self) -> None:
        if self.path:
            table = self._load()
            if table is not None:
                self.table = table
