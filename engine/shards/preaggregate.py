"""Pre-aggregation in the shard: before a batch goes into a plugin's ring, records that plugin cannot tell apart
are folded into one (counters summed, tcp flags OR-ed).

A plugin reads from a record only its aggregation key (the key columns of aggregate.KeySpec, the host/mask/family
of src_net/dst_net, the flow's second when it bins by time) and the counters packets, bytes, flows, tcp_flags
(memory and tcpflags OR it, never a key).  Two records equal on those key columns are the same to it, so folding
them first changes nothing it writes -- and a low-cardinality plugin (a traffic matrix: a few hundred keys per
batch of ~10k flows) then receives a few hundred records instead of ~10k: one ring copy and one aggregation per
key instead of per flow.  High-cardinality batches barely shrink; the folder notices and stops trying for a while.

How a batch folds (a few dozen numpy calls, no sort, no per-row Python):
- the record's 8-byte words that hold key bytes are copied out column by column (bytes of those words outside
  the key masked to zero, the flow's second computed into a word of its own), then the counters';
- a multiply-add hash of the key words picks a slot of the folder's KeyDictionary, the keys of earlier batches
  (an id per key, its words and a template record); a row whose key words equal those of the key in its slot
  (compared word by word: exact, whatever the hash did) belongs to that key;
- the other rows (new keys, or keys whose slot another key holds) are grouped among themselves: every row
  writes its row number into its slot of a scratch table, the last writer wins, rows equal to the winner share
  it; rows unlike theirs go round again with another hash, and after ROUNDS the few left stay unfolded (each
  its own group: still exact).  New keys then join the dictionary where one of their two slots is free (a full
  dictionary starts over);
- counters are added per key id (ufunc.at), tcp flags OR-ed when the plugin reads them; the output is one
  template record per key present in the batch, dictionary ids first, in id order.

Folding is off for a plugin whenever the configuration has a consumer whose reads we do not list
(fields_needed.needed_fields() is None: filters, maps, networks, tags), like the field projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config.fields_needed import needed_fields
from ..config.tree import Config, PluginConfig
from ..plugins.aggregate import KeySpec
from ..plugins.timebins import US, TimeBins
from ..schema import PRIMITIVES, RECORD_DTYPE
from .fold_tables import RECORD_WORDS, ROUNDS, KeyDictionary, _candidates, _differ, _hash, _table_size

SUMMED = ("packets", "bytes", "flows")
WORTH_IT = 0.5          # fold while a batch shrinks to at most this share of its records
JUDGE_FROM = 1024       # smaller batches are written as they are, and say nothing about the next ones
SKIP_BATCHES = 32       # after a batch that did not shrink enough, this many times its records are written as they
                        # are before trying again -- but a batch more than GROWN times its size is tried at once: a
                        # small batch shows more distinct keys per record than a big one of the same traffic
GROWN = 2
DICTIONARY_PAUSE = 16   # batches folded without the dictionary after one where it knew at most half the rows


@dataclass(frozen=True)
class FoldSpec:
    """What tells one plugin's records apart: record columns, and the flow's second (time bins) or not."""
    columns: tuple[str, ...]
    flow_second: bool = False
    use_arrival: bool = False       # nfacctd_time_new: bins by arrival
    or_flags: bool = True           # the plugin reads tcp_flags (memory, tcpflags): OR them over a group


def fold_spec(cfg: Config, plugin: PluginConfig) -> Optional[FoldSpec]:
    """The FoldSpec of a plugin, or None when its records must travel as they are."""
    if needed_fields(cfg) is None:
        return None
    history = plugin.type != "memory" and TimeBins.create(plugin.history, plugin.history_secs,
                                                          plugin.history_roundoff, 0.0).enabled
    spec = KeySpec.create(tuple(plugin.aggregate), history)
    columns = [n for n in spec.dtype.names if n in RECORD_DTYPE.names]
    for name in spec.derived:
        prim = PRIMITIVES.get(name)
        if prim is not None and prim.derived == "net":
            columns += [*prim.columns[:2], "family"]
    return FoldSpec(tuple(dict.fromkeys(columns)), history, bool(cfg.core.time_new),
                    plugin.type == "memory" or spec.or_flags)


def fold_specs(cfg: Config) -> list[Optional[FoldSpec]]:
    return [fold_spec(cfg, p) for p in cfg.plugins]


def _word(name: str) -> int:
    offset = RECORD_DTYPE.fields[name][1]
    assert offset % 8 == 0, f"{name} is not word-aligned"
    return offset // 8


@dataclass(frozen=True)
class WordPlan:
    """Which 8-byte record words a fold reads, one row of the (words, n) column array each: the key (record
    words holding key bytes, ANDed with `masks` where a word also holds other bytes; then the flow's second,
    computed in place of its start time), packets, bytes, flows, then the word holding tcp_flags when they are
    OR-ed, and ts_arrival when the second falls back to it."""
    words: tuple[int, ...]          # record word per row of the column array
    masks: tuple[Optional[int], ...]    # per key row: AND mask, None when all its bytes are key
    second: Optional[int]           # row of the flow's second, or None
    arrival: Optional[int]          # row of ts_arrival (the second of a flow without start time), or None
    flags: Optional[int]            # row of the word holding tcp_flags, or None: not OR-ed (nobody reads them)

    @property
    def key_rows(self) -> int:
        return len(self.masks)

    @classmethod
    def create(cls, spec: FoldSpec) -> "WordPlan":
        key_bytes = np.zeros(RECORD_DTYPE.itemsize, dtype=np.uint8)
        for name in spec.columns:
            offset, size = RECORD_DTYPE.fields[name][1], RECORD_DTYPE.fields[name][0].itemsize
            key_bytes[offset:offset + size] = 0xFF
        native = key_bytes.view(np.uint64)          # the masks in the byte order the words are read in
        words = [int(w) for w in np.flatnonzero(native)]
        masks: list[Optional[int]] = [None if native[w] == np.uint64(2 ** 64 - 1) else int(native[w])
                                      for w in words]
        second = arrival = flags = None
        if spec.flow_second:
            second = len(words)
            words.append(_word("ts_arrival" if spec.use_arrival else "ts_start"))
            masks.append(None)
        if not words:                               # no key at all: one group, a constant (zero) row
            words, masks = [0], [0]
        words += [_word(n) for n in SUMMED]
        if spec.or_flags:
            flags = len(words)
            words.append(RECORD_DTYPE.fields["tcp_flags"][1] // 8)
        if spec.flow_second and not spec.use_arrival:
            arrival = len(words)
            words.append(_word("ts_arrival"))
        return cls(tuple(words), tuple(masks), second, arrival, flags)


class PreAggregator:
    """fold(records) -> records: the batch with indistinguishable records folded, or as it was."""

    def __init__(self, spec: FoldSpec) -> None:
        self.spec = spec
        self.plan = WordPlan.create(spec)
        self.known = KeyDictionary(self.plan.key_rows)
        self.skip_rows = 0              # records still to write as they are before trying to fold again
        self.failed_size = 0            # records of the last batch that did not shrink enough
        self.paused = 0                 # batches left to fold without the dictionary
        self._columns = np.zeros((len(self.plan.words), 0), dtype=np.uint64)    # buffers, grown as needed
        self._scratch = np.zeros(0, dtype=np.uint64)
        self._rows = np.arange(0, dtype=np.intp)
        self._table = np.zeros(0, dtype=np.intp)

    def _grow(self, n: int) -> None:
        if len(self._rows) < n:
            size = max(n, 2 * len(self._rows))
            self._columns = np.empty((len(self.plan.words), size), dtype=np.uint64)
            self._scratch = np.empty(size, dtype=np.uint64)
            self._rows = np.arange(size, dtype=np.intp)
            self._table = np.empty(_table_size(size), dtype=np.intp)

    def columns(self, records: np.ndarray) -> np.ndarray:
        """The plan's record words as a (words, n) uint64 array (a reused buffer): the key rows masked and
        the flow's second computed."""
        n = len(records)
        self._grow(n)
        columns = self._columns[:, :n]
        words = records.view(np.uint64).reshape(n, RECORD_WORDS)
        for row, word in enumerate(self.plan.words):
            np.copyto(columns[row], words[:, word])
        for row, mask in enumerate(self.plan.masks):
            if mask is not None:
                columns[row] &= np.uint64(mask)
        if self.plan.second is not None:
            start = columns[self.plan.second].view(np.int64)
            if self.plan.arrival is not None:
                start = np.where(start != 0, start, columns[self.plan.arrival].view(np.int64))
            np.floor_divide(start, US, out=columns[self.plan.second].view(np.int64))
        return columns

    def fold(self, records: np.ndarray) -> np.ndarray:
        n = len(records)
        if n < JUDGE_FROM:
            return records
        if self.skip_rows > 0 and n <= GROWN * self.failed_size:
            self.skip_rows -= n
            return records
        self.skip_rows = 0
        records = np.ascontiguousarray(records)
        columns = self.columns(records)
        keys = columns[:self.plan.key_rows]
        h = _hash(keys, 0, self._scratch[:n])
        rows: Optional[np.ndarray] = self._rows[:n]             # rows of keys not in the dictionary
        if self.paused:
            self.paused -= 1
        if self.known.size:
            group, rows = self.known.lookup(keys, h, self.known.first_slots(h))
            if rows is not None and 2 * len(rows) >= n:       # keys keep changing: a while without it
                self.paused, self.known.full = DICTIONARY_PAUSE, True
        else:
            group = np.empty(n, dtype=np.intp)
        templates = None
        if rows is not None:
            templates = self._place(records, keys, h, group, rows)
            if templates is None:
                self._failed(n)
                return records
        out = self._output(records, columns, group, templates)
        if self.known.full:
            self.known.clear()
        if len(out) > WORTH_IT * n:
            self._failed(n)
        return out

    def _failed(self, n: int) -> None:
        """A batch of n records did not shrink enough: write the next ones as they are for a while."""
        self.skip_rows, self.failed_size = SKIP_BATCHES * n, n

    def _place(self, records: np.ndarray, keys: np.ndarray, h: np.ndarray, group: np.ndarray,
               rows: np.ndarray) -> Optional[np.ndarray]:
        """Gives the rows of unknown keys (h: the batch's hashes) a group id in place: new keys join the
        dictionary where they can, the others get ids after the dictionary's.  Returns the template rows of
        the latter, or None when the batch has too many keys to be worth folding."""
        every = len(rows) == len(records)
        sub = keys if every else keys.take(rows, axis=1)
        rep = self._representatives(sub, h if every else h.take(rows), WORTH_IT * len(records))
        if rep is None:
            return None
        local = self._rows[:len(rows)]
        firsts = np.flatnonzero(rep == local)
        dense = np.empty(len(rows), dtype=np.intp)
        dense[firsts] = local[:len(firsts)]
        new = rows.take(firsts)
        words = records.view(np.uint64).reshape(len(records), RECORD_WORDS)
        if self.paused:
            ids = np.full(len(new), -1, dtype=np.intp)
        else:
            ids = self.known.insert(sub.take(firsts, axis=1), words.take(new, axis=0), h.take(new))
        left = np.flatnonzero(ids < 0)
        ids[left] = self.known.size + local[:len(left)]
        group[rows] = ids.take(dense.take(rep))
        return new.take(left)

    def _representatives(self, keys: np.ndarray, h: np.ndarray, limit: float) -> Optional[np.ndarray]:
        """Per row (column of keys; h: their hashes), the row whose key it shares (rows left unresolved:
        themselves); None when there are more than `limit` groups."""
        n = keys.shape[1]
        rows = self._rows[:n]
        rep = _candidates(h, self._table, rows)
        if np.count_nonzero(rep == rows) > limit:           # distinct slots: at least that many groups
            return None
        bad = _differ(keys, rep)
        todo = rows
        for rnd in range(1, ROUNDS + 1):
            if not bad.any():
                return rep
            todo = todo.compress(bad)
            if rnd == ROUNDS:
                break
            sub = keys.take(todo, axis=1)
            local = _candidates(_hash(sub, rnd), self._table, self._rows[:len(todo)])
            rep[todo] = todo.take(local)
            bad = _differ(sub, local)
        rep[todo] = todo                # unresolved: each its own group
        return rep

    def _output(self, records: np.ndarray, columns: np.ndarray, group: np.ndarray,
                templates: Optional[np.ndarray]) -> np.ndarray:
        """One record per group present: dictionary templates (id order), then the batch's own templates;
        packets, bytes, flows summed, tcp flags OR-ed when the plugin reads them."""
        known = self.known.size
        groups = known + (0 if templates is None else len(templates))
        present = np.flatnonzero(np.bincount(group, minlength=groups))
        every = len(present) == groups                  # the usual case: no gather of the sums
        if every:
            words = self.known.records[:known]
        else:
            words = self.known.records.take(present[:np.searchsorted(present, known)], axis=0)
        if templates is not None and len(templates):
            batch = records.view(np.uint64).reshape(len(records), RECORD_WORDS)
            words = np.concatenate([words, batch.take(templates, axis=0)])
        elif every:
            words = words.copy()
        out = words.view(RECORD_DTYPE).reshape(len(words))
        counters = columns[self.plan.key_rows:]
        sums = np.zeros(groups, dtype=np.uint64)
        for row, name in enumerate(SUMMED):
            if row:
                sums.fill(0)
            np.add.at(sums, group, counters[row])
            out[name] = sums if every else sums.take(present)
        if self.plan.flags is not None:
            flags = columns[self.plan.flags].view(np.uint8)[RECORD_DTYPE.fields["tcp_flags"][1] % 8::8]
            ored = np.zeros(groups, dtype=np.uint8)
            if flags.any():
                np.bitwise_or.at(ored, group, flags)
            out["tcp_flags"] = ored if every else ored.take(present)
        return out


def folders_for(specs: Optional[list[Optional[FoldSpec]]], rings: int) -> list[Optional[PreAggregator]]:
    specs = specs or [None] * rings
    return [PreAggregator(s) if s is not None else None for s in specs]
