"""Working hours: the `hours:` grammar of content/consultants.yaml and whether a moment falls in them."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from bot.times import aware
from bot.yamlfile import Doc, KeyPath, shown

__all__ = ["DAYS", "Period", "Week", "parse_hours", "in_hours", "next_start"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES
TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")

Period = tuple[int, int]  # minutes from the day's midnight; end > 1440 runs past midnight
Week = tuple[tuple[Period, ...], ...]  # 7 entries, Monday first


def _at(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """The local moment `minutes` after midnight of `day` (may be on a later day)."""
    days, rest = divmod(minutes, DAY_MINUTES)
    return datetime.combine(day + timedelta(days=days), time(rest // 60, rest % 60), tzinfo=tz)


def _periods_around(week: Week, tz: ZoneInfo, now: datetime, days_back: int,
                    days_ahead: int) -> list[tuple[datetime, datetime]]:
    """Working periods starting from `days_back` days before to `days_ahead` days after now's local date."""
    aware(now)
    today = now.astimezone(tz).date()
    out = []
    for offset in range(-days_back, days_ahead + 1):
        day = today + timedelta(days=offset)
        for start, end in week[day.weekday()]:
            out.append((_at(day, start, tz), _at(day, end, tz)))
    return out


def in_hours(week: Week, tz: ZoneInfo, now: datetime) -> bool:
    """Whether `now` falls in one of the working periods."""
    ts = now.timestamp()
    return any(s.timestamp() <= ts < e.timestamp() for s, e in _periods_around(week, tz, now, 1, 0))


def next_start(week: Week, tz: ZoneInfo, now: datetime) -> datetime | None:
    """`now` if within hours, else the start of the next working period (local time); None if there is none."""
    if in_hours(week, tz, now):
        return now.astimezone(tz)
    ts = now.timestamp()
    starts = [s for s, _ in _periods_around(week, tz, now, 0, 8) if s.timestamp() > ts]
    return min(starts, key=lambda s: s.timestamp()) if starts else None


def parse_hours(doc: Doc, at: KeyPath, data: Any) -> Week:
    """hours: {mon-fri: "09:00-18:00", sat: "10:00-16:00", ...}; unlisted days are off."""
    if not isinstance(data, dict) or not data:
        raise doc.error(at, 'expected a mapping of days to hours, e.g. mon-fri: "09:00-18:00"')
    week: list[list[Period]] = [[] for _ in DAYS]
    owner: dict[int, str] = {}
    for key, value in data.items():
        where = (*at, str(key))
        for day in _days(doc, where, key):
            if day in owner:
                raise doc.error(where, f"{DAYS[day]} is already given by {owner[day]!r}")
            owner[day] = str(key)
            week[day] = _periods(doc, where, value)
    spans: list[tuple[int, int, int]] = []
    for day, periods in enumerate(week):
        for start, end in periods:
            base = day * DAY_MINUTES
            spans.append((base + start, base + end, day))
            if base + end > WEEK_MINUTES:  # Sunday night into Monday morning
                spans.append((base + start - WEEK_MINUTES, base + end - WEEK_MINUTES, day))
    spans.sort()
    for (_, e1, d1), (s2, _, d2) in pairwise(spans):
        if s2 < e1:
            raise doc.error((*at, owner[d2]), f"hours on {DAYS[d2]} overlap hours on {DAYS[d1]}")
    if not any(week):
        raise doc.error(at, "no working hours at all")
    return tuple(tuple(sorted(p)) for p in week)


def _days(doc: Doc, at: KeyPath, key: Any) -> list[int]:
    """'mon', 'mon-fri', 'sat,sun', 'fri-mon' (wraps), 'daily' -> weekday numbers."""
    text = str(key).strip().lower()
    if text in ("daily", "every day", "mon-sun"):
        return list(range(7))
    out: list[int] = []
    for part in text.split(","):
        ends = [p.strip() for p in part.split("-")]
        if len(ends) > 2 or not all(e in DAYS for e in ends):
            raise doc.error(at, "expected days like mon, mon-fri, sat,sun or daily")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        span = [(first + i) % 7 for i in range((last - first) % 7 + 1)]
        for day in span:
            if day in out:
                raise doc.error(at, f"{DAYS[day]} is listed twice")
            out.append(day)
    return out


def _periods(doc: Doc, at: KeyPath, value: Any) -> list[Period]:
    """'09:00-18:00', '09:00-12:00, 13:30-18:00', a list of those, or 'off'."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):  # YAML reads off as false
        return []
    parts = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
    if not parts:
        raise doc.error(at, f'expected hours like "09:00-18:00" (quoted), got {shown(value)}')
    out: list[Period] = []
    for part in parts:
        if not isinstance(part, str) or part.count("-") != 1:
            raise doc.error(at, f'expected hours like "09:00-18:00" (quoted), got {shown(part)}')
        start, end = (_minute(doc, at, p.strip(), allow_24=i == 1) for i, p in enumerate(part.split("-")))
        if start == end:
            raise doc.error(at, f"{part.strip()!r} is empty (start equals end)")
        out.append((start, end if end > start else end + DAY_MINUTES))  # end <= start: runs past midnight
    out.sort()
    for (_, e1), (s2, _) in pairwise(out):
        if s2 < e1:
            raise doc.error(at, "periods overlap")
    return out


def _minute(doc: Doc, at: KeyPath, text: str, *, allow_24: bool) -> int:
    """'09:30' -> 570; '24:00' only as an end."""
    m = TIME_RE.fullmatch(text)
    if not m:
        raise doc.error(at, f"expected a time like 09:00, got {text!r}")
    h, mi = int(m[1]), int(m[2])
    if (h, mi) == (24, 0) and allow_24:
        return DAY_MINUTES
    if h > 23 or mi > 59:
        raise doc.error(at, f"{text!r} is not a time of day")
    return h * 60 + mi
