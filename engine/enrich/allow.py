"""nfacctd_allow_file / sfacctd_allow_file: only listed exporters are accepted.

File: one IPv4/IPv6 address or prefix per line, `!` comments.  No file: allow all; a file with no
entries: deny all (pmacct).  Packets of other exporters are dropped before decoding and counted
(`allow_denied_packets`).  The check is one vectorised longest-prefix lookup per batch
(engine/enrich/lpm.py).  Reload on SIGUSR2; a file that cannot be read keeps the old list.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..decoders.batch import PacketBatch
from .lpm import IntervalTable, build_table, ipv4_keys, ipv6_keys

DENIED = "allow_denied_packets"


@dataclass
class AllowList:
    v4: IntervalTable
    v6: IntervalTable
    entries: int
    bad_lines: int

    def allowed(self, exporters: np.ndarray) -> np.ndarray:
        """bool per (n, 16) exporter address (IPv4-mapped for IPv4)."""
        is_v4 = np.all(exporters[:, :12] == _MAPPED, axis=1)
        ok = np.zeros(len(exporters), dtype=bool)
        if is_v4.any():
            ok[is_v4] = self.v4.lookup(ipv4_keys(exporters[is_v4])) >= 0
        if (~is_v4).any():
            ok[~is_v4] = self.v6.lookup(ipv6_keys(exporters[~is_v4])) >= 0
        return ok


_MAPPED = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


def load_allow_file(path: str, log: Optional[logging.Logger] = None) -> AllowList:
    """Read an allow file (raises OSError when it cannot be read; bad lines are logged and skipped)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    bad = 0
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("!"):
            continue
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            bad += 1
            if log is not None:
                log.warning("allow file %s line %d skipped: bad address or prefix %r", path, number, text)
            continue
        if net.version == 6 and net.network_address.ipv4_mapped is not None and net.prefixlen >= 96:
            net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        (v4 if net.version == 4 else v6).append((int(net.network_address), net.prefixlen))
    return AllowList(build_table(v4, 32), build_table(v6, 128), len(v4) + len(v6), bad)


class AllowStage:
    """A shard's allow check; admits everything without an allow file."""

    def __init__(self, path: Optional[str], log: logging.Logger, counters: dict) -> None:
        self.path = path
        self.log = log
        self.counters = counters
        self.allow: Optional[AllowList] = None
        if path:
            self.counters[DENIED] = 0
            self.allow = self._load() or AllowList(build_table([], 32), build_table([], 128), 0, 0)

    def _load(self) -> Optional[AllowList]:
        try:
            allow = load_allow_file(self.path, self.log)
        except OSError as exc:
            self.log.error("allow file %s not loaded: %s", self.path, exc)
            return None
        self.log.info("[%s] allow file loaded: %d entries", self.path, allow.entries)
        return allow

    def admit(self, batch: PacketBatch) -> PacketBatch:
        if self.allow is None or len(batch) == 0:
            return batch
        ok = self.allow.allowed(batch.exporters)
        denied = len(ok) - int(ok.sum())
        if denied == 0:
            return batch
        self.counters[DENIED] += denied
        return PacketBatch(batch.buf, batch.offsets[ok], batch.lengths[ok], batch.exporters[ok],
                           batch.arrival_us[ok])

    def reload(self) -> None:
        if self.path:
            allow = self._load()
            if allow is not None:
                self.allow = allow
