"""pre_tag_map: tag, tag2 and label set on records by the first matching map entry (with jeq jumps).

    pretag = load_pretag_map("/etc/pmacct/pretag.map")     # raises MapError naming file and line
    pretag.apply(records)                                  # sets records["tag"], ["tag2"], ["label"] in place

Map lines are `key=value` words (values may be quoted: filter='udp and port 53'); `!` starts a comment.
Each entry sets exactly one of set_tag (alias id), set_tag2 (id2), set_label, and matches when all its
keys match: ip (exporter address or prefix), in, out, engine_type, engine_id, source_id, nexthop,
bgp_nexthop, src_as, dst_as, src_mac, dst_mac, vlan, sample_type, direction, filter (libpcap syntax).

Evaluation, as nfacctd 1.7.7 does it (checked on crafted flows):
- entries in file order, the first match wins and evaluation stops;
- `jeq=L` on the matching entry: evaluation resumes at the entry whose `label=L`; the next match there
  overwrites tag/tag2 (`stack=sum|or` on that entry: adds / ORs instead) and appends its set_label
  to the label with a comma ("a,b");
- a record no entry matches keeps tag 0, tag2 0, empty label.
Jumps go forward only, so one pass over the entries suffices: each record carries the index it may
resume from; entry i is evaluated (vectorised) on the records not yet done whose index is <= i.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..filters import FilterError, evaluate, parse_filter
from ..maps import MapError
from ..schema import LABEL_BYTES

MATCH_KEYS = ("ip", "in", "out", "engine_type", "engine_id", "source_id", "nexthop", "bgp_nexthop", "src_as",
              "dst_as", "src_mac", "dst_mac", "vlan", "sample_type", "direction", "filter")
SET_KEYS = {"set_tag": "tag", "id": "tag", "set_tag2": "tag2", "id2": "tag2", "set_label": "label"}
FLOW_KEYS = ("jeq", "label", "stack")
ALL_KEYS = MATCH_KEYS + tuple(SET_KEYS) + FLOW_KEYS
_WORD = re.compile(r"""\s*([A-Za-z_0-9]+)=('[^']*'|"[^"]*"|\S+)""")

Test = Callable[[np.ndarray], np.ndarray]       # records -> bool mask


@dataclass
class PretagEntry:
    line: int
    tests: list[Test]               # conjunction of field tests
    set_field: str                  # "tag", "tag2" or "label"
    value: object                   # int, or label bytes
    label: Optional[str] = None     # this entry's name, a jeq target
    jeq: Optional[str] = None
    jump: Optional[int] = None      # resolved index of the jeq target
    stack: Optional[str] = None     # "sum" | "or"

    def match(self, records: np.ndarray) -> np.ndarray:
        mask = np.ones(len(records), dtype=bool)
        for test in self.tests:
            mask &= test(records)
            if not mask.any():
                break
        return mask


class ExporterIndex:
    """The exporter runs of a batch (records of one export packet are adjacent) and each record's run:
    exporter tests run once per run head instead of once per record."""

    def __init__(self, records: np.ndarray) -> None:
        n = len(records)
        words = np.ascontiguousarray(records["peer_src_ip"]).view(">u8")
        heads = np.flatnonzero(np.concatenate(([True], (words[1:] != words[:-1]).any(axis=1))))
        if len(heads) > max(1, n // 8):             # records not grouped by packet: test them all directly
            self.addresses = words.view(np.uint8).reshape(n, 16)
            self.ids = np.arange(n)
            return
        self.addresses = words[heads].view(np.uint8).reshape(len(heads), 16)
        self.ids = np.repeat(np.arange(len(heads)), np.diff(np.append(heads, n)))


class RecordSubset:
    """records[idx] for the entry tests without copying whole records: a column is gathered on first use.

    idx None: all records.  Exporter tests (`ip=`) run once per distinct exporter (by_exporter).
    """
    __slots__ = ("records", "idx", "cache", "exporters")

    def __init__(self, records: np.ndarray, idx: Optional[np.ndarray], exporters: ExporterIndex) -> None:
        self.records, self.idx, self.cache, self.exporters = records, idx, {}, exporters

    def __len__(self) -> int:
        return len(self.records) if self.idx is None else len(self.idx)

    def __getitem__(self, name: str) -> np.ndarray:
        column = self.cache.get(name)
        if column is None:
            column = self.records[name] if self.idx is None else self.records[name][self.idx]
            self.cache[name] = column
        return column

    def by_exporter(self, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """test(distinct exporter addresses (k, 16)) -> bool (k,), spread over these records."""
        per_exporter = test(self.exporters.addresses)
        ids = self.exporters.ids if self.idx is None else self.exporters.ids[self.idx]
        return per_exporter[ids]


@dataclass
class PretagMap:
    path: str
    entries: list[PretagEntry] = field(default_factory=list)

    def apply(self, records: np.ndarray) -> np.ndarray:
        """Set tag, tag2, label on every record (untouched fields stay 0 / empty); returns records."""
        n = len(records)
        if n == 0 or not self.entries:
            return records
        records["tag"] = 0
        records["tag2"] = 0
        records["label"] = 0
        todo = np.arange(n)                         # records still being evaluated
        resume = np.zeros(n, dtype=np.int64)        # per record: the first entry it may match
        labels: dict[int, bytes] = {}               # record -> label text, when a jump appends labels
        exporters = ExporterIndex(records)
        everything = RecordSubset(records, None, exporters)
        subset, subset_of = everything, None       # the records the entries are tested on (columns cached)
        for i, entry in enumerate(self.entries):
            if len(todo) == 0:
                break
            here = todo[resume[todo] <= i]
            if len(here) == 0:
                continue
            if len(here) == n:
                subset = everything
            elif subset_of is None or len(subset_of) != len(here) or not np.array_equal(subset_of, here):
                subset, subset_of = RecordSubset(records, here, exporters), here
            matched = entry.match(subset)
            if not matched.any():
                continue
            hit = here[matched]
            self._set(records, hit, entry, labels)
            if entry.jump is None:
                keep = np.ones(n, dtype=bool)
                keep[hit] = False
                todo = todo[keep[todo]]
            else:
                resume[hit] = entry.jump
        if labels:
            self._write_long_labels(records, labels)
        return records

    @staticmethod
    def _set(records: np.ndarray, hit: np.ndarray, entry: PretagEntry, labels: dict) -> None:
        if entry.set_field == "label":
            current = records["label"][hit]
            appended = current.any(axis=1)
            plain = hit[~appended]
            records["label"][plain] = np.frombuffer(entry.value.ljust(LABEL_BYTES, b"\0"), np.uint8)
            for r in hit[appended].tolist():          # slow path: only records already labelled by a jeq chain
                labels[r] = labels.get(r, bytes(records["label"][r]).rstrip(b"\0")) + b"," + entry.value
            return
        col = entry.set_field
        value = np.uint64(entry.value)
        if entry.stack == "sum":
            records[col][hit] += value
        elif entry.stack == "or":
            records[col][hit] |= value
        else:
            records[col][hit] = value

    @staticmethod
    def _write_long_labels(records: np.ndarray, labels: dict) -> None:
        for r, text in labels.items():
            records["label"][r] = np.frombuffer(text[:LABEL_BYTES].ljust(LABEL_BYTES, b"\0"), np.uint8)


# --------------------------------------------------------------------------- loading

def split_map_line(line: str, path: str, number: int) -> dict[str, str]:
    """`key=value` words, values optionally quoted; keys lower-cased."""
    values: dict[str, str] = {}
    pos = 0
    for m in _WORD.finditer(line):
        if line[pos:m.start()].strip():
            break
        key, value = m.group(1).lower(), m.group(2)
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        if key in values:
            raise MapError(f"key {key!r} given twice", path, number)
        values[key] = value
        pos = m.end()
    if line[pos:].strip():
        raise MapError(f"expected key=value, got {line[pos:].strip().split()[0]!r}", path, number)
    return values


def _uint(text: str, bits: int, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text) or int(text) >= 1 << bits:
        raise ValueError(f"bad {what} {text!r} (expected 0-{(1 << bits) - 1})")
    return int(text)


def _addr16(text: str) -> bytes:
    addr = ipaddress.ip_address(text)
    return (bytes(10) + b"\xff\xff" + addr.packed) if addr.version == 4 else addr.packed


def _eq(column: str, value: int) -> Test:
    return lambda rec: rec[column] == value


def _bytes_eq(column: str, value: bytes) -> Test:
    want = np.frombuffer(value, np.uint8)
    return lambda rec: np.all(rec[column] == want, axis=1)


def _prefix(column: str, text: str) -> Test:
    """An address under the prefix, of the prefix's family (ip=::/0 matches no IPv4 exporter, as nfacctd).

    On the exporter column the test runs once per distinct exporter of the batch."""
    net = ipaddress.ip_network(text, strict=False)
    prefix = _addr16(str(net.network_address))
    if net.version == 4:
        def test(addr: np.ndarray) -> np.ndarray:
            return _prefix_mask_test(addr, prefix, 96 + net.prefixlen)
    else:
        mapped = bytes(10) + b"\xff\xff" + bytes(4)

        def test(addr: np.ndarray) -> np.ndarray:
            return _prefix_mask_test(addr, prefix, net.prefixlen) & ~_prefix_mask_test(addr, mapped, 96)
    if column == "peer_src_ip":
        return lambda rec: rec.by_exporter(test)
    return lambda rec: test(rec[column])


def _prefix_mask_test(addr: np.ndarray, prefix: bytes, bits: int) -> np.ndarray:
    """Addresses (n, 16 bytes) under prefix/bits, compared as two big-endian 64-bit words."""
    mask = np.zeros(16, dtype=np.uint8)
    mask[:bits // 8] = 0xFF
    if bits % 8:
        mask[bits // 8] = (0xFF << (8 - bits % 8)) & 0xFF
    mask_words = mask.view(">u8")
    want = np.frombuffer(prefix, np.uint8).view(">u8") & mask_words
    words = np.ascontiguousarray(addr).view(">u8")
    hit = (words[:, 1] & mask_words[1]) == want[1]
    hit &= (words[:, 0] & mask_words[0]) == want[0]
    return hit


def _mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


def _match_test(key: str, text: str) -> Test:
    if key == "ip":
        return _prefix("peer_src_ip", text)
    if key in ("in", "out"):
        return _eq("in_iface" if key == "in" else "out_iface", _uint(text, 32, key))
    if key == "engine_type":
        value = _uint(text, 8, key)
        return lambda rec: (rec["domain_id"] >> 8) & 0xFF == value
    if key == "engine_id":
        value = _uint(text, 8, key)
        return lambda rec: rec["domain_id"] & 0xFF == value
    if key == "source_id":
        return _eq("domain_id", _uint(text, 32, key))
    if key in ("nexthop", "bgp_nexthop"):
        return _prefix("ip_next_hop" if key == "nexthop" else "peer_dst_ip", text)
    if key in ("src_as", "dst_as"):
        return _eq(key, _uint(text, 32, key))
    if key in ("src_mac", "dst_mac"):
        return _bytes_eq(key, _mac(text))
    if key == "vlan":
        return _eq("vlan", _uint(text, 12, key))
    if key == "direction":
        return _eq("direction", _uint(text, 1, key))
    if key == "sample_type":
        if text.lower() != "flow":
            raise ValueError(f"bad sample_type {text!r} (supported: flow; counter samples are not tagged)")
        return lambda rec: np.ones(len(rec), dtype=bool)
    if key == "filter":
        tree = parse_filter(text)
        return lambda rec: evaluate(tree, rec)
    raise ValueError(f"unknown key {key!r}")


def _entry(values: dict[str, str], path: str, number: int) -> PretagEntry:
    unknown = [k for k in values if k not in ALL_KEYS]
    if unknown:
        raise MapError(f"unknown key {unknown[0]!r} (valid: {', '.join(ALL_KEYS)})", path, number)
    sets = [k for k in values if k in SET_KEYS]
    if len(sets) != 1:
        raise MapError("exactly one of set_tag, set_tag2, set_label per entry (nfacctd: mutually exclusive)"
                       if sets else "missing set_tag, set_tag2 or set_label", path, number)
    set_key = sets[0]
    target = SET_KEYS[set_key]
    try:
        if target == "label":
            value = values[set_key].encode("utf-8")
            if len(value) > LABEL_BYTES:
                raise ValueError(f"label {values[set_key]!r} is longer than {LABEL_BYTES} bytes")
        else:
            value = _uint(values[set_key], 64, set_key)
        tests = [_match_test(k, v) for k, v in values.items() if k in MATCH_KEYS]
    except (ValueError, FilterError) as exc:
        raise MapError(str(exc), path, number) from None
    stack = values.get("stack")
    if stack is not None and stack.lower() not in ("sum", "or"):
        raise MapError(f"bad stack {stack!r} (expected sum or or)", path, number)
    return PretagEntry(number, tests, target, value, values.get("label"), values.get("jeq"),
                       stack=stack.lower() if stack else None)


def parse_pretag_text(text: str, path: str) -> PretagMap:
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        entries.append(_entry(split_map_line(line, path, number), path, number))
    names = {}
    for i, e in enumerate(entries):
        if e.label is not None:
            if e.label in names:
                raise MapError(f"label {e.label!r} given twice", path, e.line)
            names[e.label] = i
    for i, e in enumerate(entries):
        if e.jeq is not None:
            if e.jeq not in names:
                raise MapError(f"unresolved jeq label {e.jeq!r}", path, e.line)
            if names[e.jeq] <= i:
                raise MapError(f"jeq {e.jeq!r} jumps backwards (only forward jumps)", path, e.line)
            e.jump = names[e.jeq]
    return PretagMap(path, entries)


def load_pretag_map(path: str) -> PretagMap:
    """Read and check a pre_tag_map; raises MapError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(f"cannot read map: {exc}", path) from None
    return parse_pretag_text(text, path)


class PretagStage:
    """The shard's pre_tag_map: applied to every batch, reloaded on SIGUSR2 (maps_refresh), old map kept on error."""

    def __init__(self, path: Optional[str], maps_refresh: bool, log, counters: dict) -> None:
        self.path, self.maps_refresh, self.log, self.counters = path, maps_refresh, log, counters
        self.map: Optional[PretagMap] = None
        if path:
            try:
                self.map = load_pretag_map(path)
            except MapError as exc:         # checked at config parse time; the file changed since
                self.log.error("pre_tag_map not loaded: %s", exc)
                self.counters["pre_tag_map_errors"] = self.counters.get("pre_tag_map_errors", 0) + 1

    def apply(self, records: np.ndarray) -> np.ndarray:
        current = self.map                  # a reload (signal handler) swaps self.map between batches
        return records if current is None else current.apply(records)

    def reload(self) -> None:
        if not (self.path and self.maps_refresh):
            return
        try:
            new = load_pretag_map(self.path)
        except MapError as exc:
            self.counters["pre_tag_map_errors"] = self.counters.get("pre_tag_map_errors", 0) + 1
            self.log.error("pre_tag_map not reloaded, keeping the old one: %s", exc)
            return
        self.map = new
        self.counters["pre_tag_map_reloads"] = self.counters.get("pre_tag_map_reloads", 0) + 1
        self.log.info("pre_tag_map reloaded: %s (%d entries)", self.path, len(new.entries))
