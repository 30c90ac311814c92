"""When a campaign may dial: a daily window of local wall-clock minutes in an IANA time zone.

Pure (no I/O, no clock of its own): callers pass the instant to judge, always time-zone aware.

* ``start_minutes`` / ``end_minutes`` are minutes after local midnight: the window is
  ``[start, end)``. ``end`` may be 1440 (midnight at the end of the day).
* ``end < start`` is an **overnight** window: it opens at ``start`` on an allowed day and
  closes at ``end`` on the next calendar day. ``days`` name the day the window *opens*: a
  Friday 22:00-06:00 window is open on Saturday at 02:00.
* ``days`` are ISO weekdays (1 = Monday … 7 = Sunday).
* The window follows the **wall clock** of the zone, daylight saving included: on the
  spring-forward day a window starting inside the skipped hour opens when the clock jumps
  (e.g. 02:30 in New York opens at 03:00 EDT); on the fall-back day the repeated hour is judged
  by its wall-clock reading both times (a window ending at 01:30 is open from 01:00 to 01:30
  EDT and again from 01:00 to 01:30 EST), which is what "calls only between these hours"
  means to the people being called.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["ALL_DAYS", "DAY_NAMES", "CallingWindow", "zone"]

#: ISO weekday numbers by short name.
DAY_NAMES = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
ALL_DAYS = frozenset(range(1, 8))
_MINUTE = timedelta(minutes=1)
_DAY_MINUTES = 1440


@functools.lru_cache(maxsize=512)
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone (cached). Raises ``zoneinfo.ZoneInfoNotFoundError`` for unknown names."""
    return zoneinfo.ZoneInfo(name)


@dataclass(slots=True, frozen=True)
class CallingWindow:
    """A daily calling window; see the module docstring for the exact rules."""

    start_minutes: int = 0
    end_minutes: int = _DAY_MINUTES
    days: frozenset[int] = ALL_DAYS
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not 0 <= self.start_minutes < _DAY_MINUTES:
            raise ValueError("start_minutes must be in 0..1439")
        if not 0 < self.end_minutes <= _DAY_MINUTES:
            raise ValueError("end_minutes must be in 1..1440")
        if self.start_minutes == self.end_minutes:
            raise ValueError("the window is empty (start == end)")
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError("days must be a non-empty set of ISO weekdays 1..7")
        zone(self.timezone)

    @property
    def overnight(self) -> bool:
        return self.end_minutes < self.start_minutes

    @property
    def always_open(self) -> bool:
        return (
            self.start_minutes == 0 and self.end_minutes == _DAY_MINUTES and (self.days == ALL_DAYS)
        )

    def is_open(self, at: datetime) -> bool:
        """Whether calls may be placed at the instant ``at`` (aware)."""
        if at.tzinfo is None:
            raise ValueError("naive datetime; pass an aware one")
        if self.always_open:
            return True
        local = at.astimezone(zone(self.timezone))
        minute = local.hour * 60 + local.minute
        today = local.isoweekday()
        if not self.overnight:
            return today in self.days and self.start_minutes <= minute < self.end_minutes
        if minute >= self.start_minutes:
            return today in self.days
        yesterday = 7 if today == 1 else today - 1
        return minute < self.end_minutes and yesterday in self.days

    def next_open(self, at: datetime, *, horizon: timedelta = timedelta(days=9)) -> datetime:
        """The first instant ≥ ``at`` (to the minute) when the window is open; ``at`` itself
        when it is open now. Always found within a week for a valid window; ``horizon`` is
        a safety bound (raises ``ValueError`` beyond it)."""
        if self.is_open(at):
            return at
        tz = zone(self.timezone)
        t = at.astimezone(UTC).replace(second=0, microsecond=0) + _MINUTE
        limit = at + horizon
        while t <= limit:
            if self.is_open(t):
                return t
            local = t.astimezone(tz)
            minute = local.hour * 60 + local.minute
            wall_gap = (self.start_minutes - minute) % _DAY_MINUTES or _DAY_MINUTES
            # Wall-clock minutes and real minutes differ by at most the DST shift (≤ 1 h, 2 h
            # in a few historical zones): jump short of the next start, then walk the rest.
            t += max(_MINUTE, timedelta(minutes=wall_gap - 120))
        raise ValueError("the window does not open within the horizon")

    def describe(self) -> dict[str, object]:
        """The window as the API shows it."""
        names = {v: k for k, v in DAY_NAMES.items()}
        return {
            "window_start_minutes": self.start_minutes,
            "window_end_minutes": self.end_minutes,
            "window_days": [names[d] for d in sorted(self.days)],
            "timezone": self.timezone,
        }
