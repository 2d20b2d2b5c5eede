"""The canonical records of a batch's flow samples: filled column by column, written block by block.

    rows = FlowRows(n, wanted)              # row i: flow sample i
    rows.put("bytes", None, frame_length)   # every row, in order
    rows.put("vlan", sample_rows, vids)     # some rows (sorted, unique); a later put overrides an earlier one
    records = rows.records()                # RECORD_DTYPE, n rows

Writes are queued and applied by records() one block of records at a time: a block stays in the CPU
cache while all its columns are written, where writing column after column over the whole batch
would stream every 248-byte record through memory once per column.  A constant put on every row
goes into the blank record each block starts from; address and MAC columns are written as plain
integers at their byte offsets (ie.record_view), not through numpy's byte-by-byte sub-array copy.
"""
from __future__ import annotations

import numpy as np

from ..schema import RECORD_DTYPE
from .ie import record_view
from .sflow_walk import column

BLOCK = 2048                    # records per block (~0.5 MB: stays in L2 while its columns are written)
# a byte column (k, width) is written as these (offset, integer format) pieces
_BYTE_PIECES = {16: ((0, "<u8"), (8, "<u8")), 6: ((0, "<u4"), (4, "<u2")), 4: ((0, "<u4"),)}


class FlowRows:
    """The records of n flow samples, with what the counters need whatever the projection: which samples
    carry a flow, their sampled frame lengths."""

    def __init__(self, n: int, wanted) -> None:
        self.n = n
        self.wanted = wanted                        # record fields some consumer reads (None: all)
        self.has_flow = np.zeros(n, bool)
        self.frame_length = np.zeros(n, np.uint64)
        self._blank = np.zeros(1, RECORD_DTYPE)     # every record starts as this one
        self._writes: list[tuple[str, int, str, object, np.ndarray]] = []   # (field, at, format, rows, values)

    def want(self, *fields: str) -> bool:
        return self.wanted is None or any(f in self.wanted for f in fields)

    def put(self, name: str, rows, values, always: bool = False) -> None:
        """name[rows] = values (rows: sorted unique row indices, or None for every row in order); a field
        nobody reads is skipped unless `always`.  Byte fields (addresses, MACs) take (k, width) uint8 with
        contiguous rows."""
        if not (always or self.want(name)):
            return
        values = np.asarray(values)
        if values.ndim and len(values) == 0:
            return
        if values.ndim == 0 and rows is None and all(w[0] != name for w in self._writes):
            self._blank[name] = values
        elif values.ndim == 2 and values.shape[1] in _BYTE_PIECES:
            values = values.astype(np.uint8, copy=False)
            for at, fmt in _BYTE_PIECES[values.shape[1]]:
                self._writes.append((name, at, fmt, rows, column(values, at, fmt)))
        else:
            self._writes.append((name, 0, "", rows, values))

    def records(self) -> np.ndarray:
        """The RECORD_DTYPE records, every queued write applied in order (fields never written are zero)."""
        out = np.empty(self.n, RECORD_DTYPE)
        raw = out.view(np.uint8).reshape(self.n, RECORD_DTYPE.itemsize)
        blank = self._blank.view(np.uint8)
        targets = [record_view(out, name, at, fmt) if fmt else out[name] for name, at, fmt, _, _ in self._writes]
        for a in range(0, self.n, BLOCK):
            b = min(a + BLOCK, self.n)
            raw[a:b] = blank                        # as bytes: a structured copy goes field by field
            for (_, _, _, rows, values), dst in zip(self._writes, targets):
                if rows is None:
                    dst[a:b] = values if values.ndim == 0 else values[a:b]
                else:
                    i, j = np.searchsorted(rows, (a, b)).tolist()
                    if i < j:
                        dst[rows[i:j]] = values if values.ndim == 0 else values[i:j]
        return out
