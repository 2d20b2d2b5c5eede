"""History time bins (print_history / print_history_roundoff), as nfacctd 1.7.7 assigns them.

What nfacctd does (measured with crafted NetFlow v5 flows, a controlled start
time and pcap_savefile / live UDP runs; see tests/test_aggregate.py):

- The flow time is the flow start (timestamp_start); with nfacctd_time_new it
  is the arrival time.  Seconds resolution.
- The bin grid is anchored at a *base*: the plugin start time with its seconds
  dropped (always, even without roundoff), then rounded off in local time:
  `m` zeroes the minutes, `h` the hour and minutes, `d` goes to the 1st of the
  month at 00:00, `w` to the last Monday at 00:00, `M` to January 1st 00:00.
  The base is then moved forward in steps of the history length to the last
  step not after the start time.  So 5m without roundoff, started at 00:44:05,
  gives bins at :04, :09, ...; with `m` (or `h`) bins are at :00, :05, ...
- The base follows the clock: it is the last grid point not after "now".
- A flow at or after the base goes to floor-aligned bin (a flow exactly on a
  boundary starts that bin).  A flow before the base goes to the last grid
  point strictly *before* it: a flow exactly on a past boundary lands in the
  previous bin (nfacctd walks back from the base while the grid point is not
  below the flow time).
- Monthly history (1M) bins are calendar months starting on the 1st at 00:00
  local time, whatever the roundoff.  nfacctd 1.7.7 itself accounts nothing
  with 1M when a flow belongs to an earlier month than the current one (its
  plugin loops forever) or when reading a pcap_savefile; we keep such flows in
  their calendar month instead of copying that.

Local time: roundoff and month boundaries use the machine's local time zone
(the offset is fixed when the zone has no DST; otherwise looked up per value).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

US = 1_000_000


def roundoff_base(start_s: float, roundoff: str) -> int:
    """The grid origin before stepping: start with seconds dropped, then rounded off (local time)."""
    tm = time.localtime(int(start_s))
    year, mon, mday, hour, minute = tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min
    wday = tm.tm_wday                       # Monday is 0
    if "m" in roundoff:
        minute = 0
    if "h" in roundoff:
        hour = minute = 0
    if "d" in roundoff:
        mday, hour, minute = 1, 0, 0
    if "w" in roundoff:
        mday, hour, minute = mday - wday, 0, 0
    if "M" in roundoff:
        mon, mday, hour, minute = 1, 1, 0, 0
    return int(time.mktime((year, mon, mday, hour, minute, 0, 0, 0, -1)))


def local_offsets(t_s: np.ndarray, utc: bool = False) -> np.ndarray:
    """Seconds east of UTC of the local zone at each time (0 with utc; vectorised when the zone has no DST)."""
    if utc:
        return np.zeros(np.shape(t_s), dtype=np.int64)
    if not time.daylight:
        return np.full(np.shape(t_s), -time.timezone, dtype=np.int64)
    # slow path: DST zones, one localtime() per distinct value
    uniq, inverse = np.unique(t_s, return_inverse=True)
    offs = np.fromiter((time.localtime(int(v)).tm_gmtoff for v in uniq), dtype=np.int64, count=len(uniq))
    return offs[inverse].reshape(t_s.shape)


def month_starts(t_s: np.ndarray) -> np.ndarray:
    """First day of the (local) calendar month of each time, 00:00 local, as epoch seconds."""
    t_s = np.asarray(t_s, dtype=np.int64)
    local = t_s + local_offsets(t_s)
    month = local.astype("datetime64[s]").astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)
    # the offset at the month start may differ from the one at t (DST): take the month start's own offset
    return month - local_offsets(month)


@dataclass
class TimeBins:
    """Assigns stamp_inserted to flows for one plugin; disabled when history is off."""
    seconds: int            # bin length in seconds (0 when monthly or disabled)
    monthly: bool           # calendar-month bins ("1M"; any "NM" is taken as one month)
    origin: int             # grid origin (epoch seconds), from the plugin start
    base: int               # current base: last grid point not after "now"

    @classmethod
    def create(cls, history: Optional[str], history_secs: int = 0, roundoff: str = "",
               start_s: Optional[float] = None) -> "TimeBins":
        """From print_history as written ("5m", "1M"; months are told by the text) and in seconds."""
        monthly = bool(history and history.strip().endswith("M"))
        seconds = 0 if monthly else int(history_secs or 0)
        start = time.time() if start_s is None else start_s
        if not seconds:
            return cls(0, monthly, 0, 0)
        origin = roundoff_base(start, roundoff or "")
        base = origin + ((int(start) - origin) // seconds) * seconds
        return cls(seconds, monthly, origin, base)

    @property
    def enabled(self) -> bool:
        return bool(self.seconds or self.monthly)

    def advance(self, now_s: float) -> None:
        """Move the base with the clock (never backwards)."""
        if self.seconds:
            base = self.origin + ((int(now_s) - self.origin) // self.seconds) * self.seconds
            self.base = max(self.base, base)

    def assign(self, t_s: np.ndarray) -> np.ndarray:
        """Bin start (epoch seconds, int64) of each flow time (epoch seconds)."""
        t_s = np.asarray(t_s, dtype=np.int64)
        if self.monthly:
            return month_starts(t_s)
        h, base = self.seconds, self.base
        delta = t_s - base
        after = base + (delta // h) * h                     # t >= base: floor
        before = base - ((base - t_s) // h + 1) * h         # t < base: last grid point strictly below t
        return np.where(delta >= 0, after, before)
