"""Preview: every touch one customer would get in a period, simulated with plan.py (no Redis)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.times import DEFAULT_TZ
from sop.journeys import Journey
from sop.plan import (
    History,
    Rules,
    Touch,
    anchor_for,
    decide,
    lifecycle,
    segment_matches,
    touch_for,
    wall,
)

__all__ = ["Profile", "Row", "simulate"]


@dataclass(frozen=True, slots=True)
class Profile:
    """The customer as the simulation sees them; first_seen None means a new customer added at `start`."""

    id: str = "preview"
    first_seen: datetime | None = None
    last_inbound: datetime | None = None
    tags: dict[str, datetime] = field(default_factory=dict)
    unsubscribed: bool = False
    value: float | None = None
    birthday: date | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One decision in the preview."""

    journey: str
    step: str
    kind: str
    at: datetime
    due: datetime | None
    channel: str
    decision: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Exactly the keys of `sop plan --json`."""
        return {"journey": self.journey, "step": self.step, "at": self.at.isoformat(),
                "due": self.due.isoformat() if self.due else None, "channel": self.channel,
                "decision": self.decision, "reason": self.reason}


def _span(journey: Journey) -> timedelta:
    return max(s.wait for s in journey.steps) + timedelta(days=2)


def _triggers(journeys: list[Journey], p: Profile, first_seen: datetime, begin: datetime, end: datetime,
              new: bool, tz: ZoneInfo) -> list[tuple[datetime, Journey, dict[str, Any]]]:
    """(event time, journey, facts) for every trigger the profile meets in [begin, end)."""
    out: list[tuple[datetime, Journey, dict[str, Any]]] = []
    last = p.last_inbound or first_seen
    days = [begin.astimezone(tz).date() + timedelta(days=i) for i in range((end - begin).days + 2)]
    for j in journeys:
        t = j.trigger
        if not j.enabled:
            continue
        if t.type == "customer_added" and begin <= first_seen < end:
            out.append((first_seen, j, {"welcome_code": new}))
        elif t.type == "tag":
            out += [(at, j, {}) for tag, at in p.tags.items() if tag == t.tag and begin <= at < end]
        elif t.type == "silence":
            at = last + timedelta(days=t.days or 0)
            if begin <= at < end:
                out.append((at, j, {}))
        elif t.type == "calendar":
            for d in days:
                if (t.monthday and d.day == t.monthday) or (t.weekdays and d.weekday() in t.weekdays):
                    at = wall(d, time(0), tz)
                    if begin <= at < end:
                        out.append((at, j, {}))
        elif t.type == "birthday" and p.birthday:
            for d in days:
                if (d.month, d.day) == (p.birthday.month, p.birthday.day):
                    out.append((wall(d, time(0), tz), j, {}))
    return out


def simulate(journeys: list[Journey], rules: Rules, profile: Profile | None, start: datetime, days: int,
             tz: ZoneInfo = DEFAULT_TZ) -> list[Row]:
    """Every decision for one customer who never replies, from `start` for `days` days."""
    new = profile is None or profile.first_seen is None
    p = profile or Profile()
    first_seen = p.first_seen if not new and p.first_seen is not None else start
    end = start + timedelta(days=days)
    begin = start if new else start - max((_span(j) for j in journeys), default=timedelta(0))
    history = History(last_customer_message=p.last_inbound, unsubscribed=p.unsubscribed)
    heap: list[tuple[datetime, int, int, Touch]] = []
    seq = 0

    def push(when: datetime, touch: Touch) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (when.astimezone(UTC), -touch.priority, seq, touch))

    for at, j, facts in sorted(_triggers(journeys, p, first_seen, begin, end, new, tz), key=lambda x: x[0]):
        stage = lifecycle(first_seen, p.last_inbound, at)
        if not segment_matches(j.segment, stage, set(p.tags), p.value):
            continue
        anchor = anchor_for(j, at, facts)
        if anchor is not None:
            first = touch_for(j, j.steps[0], p.id, anchor, tz, since=at)
            push(max(first.due, at), first)
    by_id = {j.id: j for j in journeys}
    rows: list[Row] = []
    while heap:
        now, _, _, touch = heapq.heappop(heap)
        if now >= end:
            break
        history.welcome_code = new and touch.kind == "welcome" and now == first_seen
        d = decide(touch, history, now, rules, tz)
        if d.at >= start:
            late = d.due if d.decision == "defer" or d.at != d.due else None
            rows.append(Row(touch.journey, touch.step, touch.kind, d.at, late, d.channel, d.decision, d.reason))
        if d.decision == "send":
            history.record(d.channel, d.at, touch.kind, tz)
        if d.decision == "defer":
            push(d.at, touch)
            continue
        if d.decision == "skip" and d.reason.startswith("stopped:"):
            continue
        j = by_id[touch.journey]
        nxt = j.after(touch.step)
        if nxt is not None:
            t = touch_for(j, nxt, p.id, touch.trigger_at or touch.due, tz, since=touch.since)
            push(max(t.due, now), t)
    return rows
