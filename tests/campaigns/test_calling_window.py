"""The calling window (pure): inside/outside, overnight, daylight saving, other zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.calls.calling_window import ALL_DAYS, CallingWindow

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
TOKYO = ZoneInfo("Asia/Tokyo")
WEEKDAYS = frozenset({1, 2, 3, 4, 5})


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    year, month, day, hour, minute = args
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold)


def test_before_inside_after_a_day_window() -> None:
    w = CallingWindow(9 * 60, 17 * 60, WEEKDAYS, "Europe/London")
    # Wednesday 2026-07-15 (BST)
    assert not w.is_open(local(LONDON, 2026, 7, 15, 8, 59))
    assert w.is_open(local(LONDON, 2026, 7, 15, 9, 0))
    assert w.is_open(local(LONDON, 2026, 7, 15, 16, 59))
    assert not w.is_open(local(LONDON, 2026, 7, 15, 17, 0))
    # Saturday: not a calling day
    assert not w.is_open(local(LONDON, 2026, 7, 18, 12, 0))
    # the same instant expressed in UTC is judged in the campaign's zone (BST = UTC+1)
    assert w.is_open(datetime(2026, 7, 15, 8, 0, tzinfo=UTC))
    assert not w.is_open(datetime(2026, 7, 15, 16, 0, tzinfo=UTC))


def test_overnight_window_belongs_to_the_day_it_opens() -> None:
    # Friday 22:00 to Saturday 06:00 only
    w = CallingWindow(22 * 60, 6 * 60, frozenset({5}), "UTC")
    # 2026-07-17 is a Friday
    assert not w.is_open(datetime(2026, 7, 17, 21, 59, tzinfo=UTC))
    assert w.is_open(datetime(2026, 7, 17, 22, 0, tzinfo=UTC))
    assert w.is_open(datetime(2026, 7, 18, 2, 0, tzinfo=UTC))  # Saturday small hours
    assert not w.is_open(datetime(2026, 7, 18, 6, 0, tzinfo=UTC))
    assert not w.is_open(datetime(2026, 7, 18, 23, 0, tzinfo=UTC))  # Saturday night: no
    # Friday's small hours belong to Thursday's window, which is not allowed
    assert not w.is_open(datetime(2026, 7, 17, 2, 0, tzinfo=UTC))


def test_spring_forward_day_in_new_york() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT
    w = CallingWindow(2 * 60 + 30, 4 * 60, ALL_DAYS, "America/New_York")
    before_jump = datetime(2026, 3, 8, 6, 59, tzinfo=UTC)  # 01:59 EST
    after_jump = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert not w.is_open(before_jump)
    assert w.is_open(after_jump)
    # a start inside the skipped hour opens when the clock jumps
    assert w.next_open(before_jump) == after_jump
    # a 09:00-17:00 window opens at 13:00 UTC that day (EDT), at 14:00 UTC the day before
    day = CallingWindow(9 * 60, 17 * 60, ALL_DAYS, "America/New_York")
    assert day.next_open(datetime(2026, 3, 7, 5, 0, tzinfo=UTC)) == datetime(
        2026, 3, 7, 14, 0, tzinfo=UTC
    )
    assert day.next_open(datetime(2026, 3, 8, 5, 0, tzinfo=UTC)) == datetime(
        2026, 3, 8, 13, 0, tzinfo=UTC
    )


def test_fall_back_day_follows_the_wall_clock() -> None:
    # 2026-11-01: 02:00 EDT goes back to 01:00 EST; a window ending at 01:30
    w = CallingWindow(0, 90, ALL_DAYS, "America/New_York")
    first = local(NY, 2026, 11, 1, 1, 15, fold=0)  # EDT
    second = local(NY, 2026, 11, 1, 1, 15, fold=1)  # EST, an hour later
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)
    assert w.is_open(first) and w.is_open(second)
    assert not w.is_open(local(NY, 2026, 11, 1, 1, 45, fold=0))
    # 17:00 local is 21:00 UTC the day before and 22:00 UTC on the day
    day = CallingWindow(9 * 60, 17 * 60, ALL_DAYS, "America/New_York")
    assert day.is_open(datetime(2026, 10, 31, 20, 59, tzinfo=UTC))
    assert not day.is_open(datetime(2026, 10, 31, 21, 0, tzinfo=UTC))
    assert day.is_open(datetime(2026, 11, 1, 21, 59, tzinfo=UTC))
    assert not day.is_open(datetime(2026, 11, 1, 22, 0, tzinfo=UTC))


def test_another_time_zone() -> None:
    w = CallingWindow(9 * 60, 18 * 60, WEEKDAYS, "Asia/Tokyo")
    # Monday 09:00 in Tokyo is Sunday 00:00 UTC
    assert w.is_open(datetime(2026, 7, 19, 23, 59, tzinfo=UTC)) is False
    assert w.is_open(datetime(2026, 7, 20, 0, 0, tzinfo=UTC))
    assert w.next_open(datetime(2026, 7, 18, 12, 0, tzinfo=UTC)) == local(TOKYO, 2026, 7, 20, 9, 0)


def test_next_open_from_a_closed_weekend() -> None:
    w = CallingWindow(9 * 60, 17 * 60, WEEKDAYS, "Europe/London")
    saturday = local(LONDON, 2026, 7, 18, 10, 0)
    assert w.next_open(saturday) == local(LONDON, 2026, 7, 20, 9, 0)
    inside = local(LONDON, 2026, 7, 20, 10, 0)
    assert w.next_open(inside) == inside


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_minutes": 60, "end_minutes": 60}, "empty"),
        ({"start_minutes": 1440}, "start_minutes"),
        ({"end_minutes": 0}, "end_minutes"),
        ({"days": frozenset()}, "days"),
        ({"days": frozenset({0})}, "days"),
    ],
)
def test_invalid_windows(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallingWindow(**kwargs)  # type: ignore[arg-type]


def test_unknown_zone() -> None:
    with pytest.raises(Exception, match="Not/AZone"):
        CallingWindow(timezone="Not/AZone")


ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]


@st.composite
def windows(draw: st.DrawFn) -> CallingWindow:
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(1, 1440).filter(lambda e: e != start))
    days = draw(st.frozensets(st.integers(1, 7), min_size=1))
    return CallingWindow(start, end, days, draw(st.sampled_from(ZONES)))


def reference_is_open(w: CallingWindow, at: datetime) -> bool:
    """An independent statement of the rule: which local day's window covers ``at``."""
    loc = at.astimezone(ZoneInfo(w.timezone))
    minute = loc.hour * 60 + loc.minute
    today, yesterday = loc.isoweekday(), (loc.date() - timedelta(days=1)).isoweekday()
    if w.start_minutes < w.end_minutes:
        return today in w.days and w.start_minutes <= minute < w.end_minutes
    return (today in w.days and minute >= w.start_minutes) or (
        yesterday in w.days and minute < w.end_minutes
    )


instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(windows(), instants)
def test_is_open_matches_the_reference(w: CallingWindow, at: datetime) -> None:
    assert w.is_open(at) == reference_is_open(w, at)


@settings(max_examples=60, deadline=None)
@given(windows(), instants)
def test_next_open_is_the_first_open_minute(w: CallingWindow, at: datetime) -> None:
    found = w.next_open(at)
    assert found >= at and w.is_open(found)
    if found == at:
        return
    # every whole minute before it (from the first one after ``at``) is closed
    t = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert found - at <= timedelta(days=8)
    while t < found:
        assert not w.is_open(t), t
        t += timedelta(minutes=1)
