"""The one home of the default zone and aware datetimes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["DEFAULT_TZ", "aware", "from_ts", "parse_at"]

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")


def aware(moment: datetime, what: str = "now") -> datetime:
    """`moment`, or ValueError naming `what` if it is naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment


def from_ts(ts: float, tz: ZoneInfo = DEFAULT_TZ) -> datetime:
    """The aware local time in `tz` of a Unix timestamp."""
    return datetime.fromtimestamp(ts, tz)


def parse_at(text: str | None, tz: ZoneInfo = DEFAULT_TZ) -> datetime:
    """An ISO 8601 time (naive = local `tz`), or now when `text` is empty."""
    if not text:
        return datetime.now(tz)
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment
