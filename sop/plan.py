"""Pure SOP logic: when a step is due, and whether a due touch is sent, deferred, skipped or reminded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot.times import DEFAULT_TZ, aware
from sop.journeys import Journey, Segment, Step

__all__ = [
    "BY_NAME", "DEFAULT_TZ", "Decision", "History", "Rules", "Touch", "anchor_for", "decide", "lifecycle", "next_allowed",
    "schedule", "segment_matches", "touch_for", "touch_id",
]

DAY = timedelta(days=1)
BY_NAME = "by_name"  # not a trigger operators write: a journey enrolled by its id (an answer to a step chose it)
Channel = Literal["kf", "mass_task", "staff", "welcome"]
Verdict = Literal["send", "defer", "skip", "remind"]


@dataclass(frozen=True, slots=True)
class Rules:
    """Rules that apply across all journeys."""

    quiet_start: time = time(22, 0)
    quiet_end: time = time(8, 0)
    daily_cap: int = 3  # touches reaching the customer (kf + mass_task) per local day
    ignored_limit: int = 3  # ignored this many of a kind in a row -> stop that kind
    quiet_exempt: frozenset[str] = frozenset({"welcome"})
    # kf: at most 5 messages within 48 h of the customer's last message (platform notes §2.4).
    kf_window: timedelta = timedelta(hours=48)
    kf_budget: int = 5
    # add_msg_template: at most 4 per customer per calendar month (platform notes §3.4).
    mass_quota: int = 4
    max_delay: timedelta = timedelta(days=3)  # a touch deferred longer than this is dropped as stale


@dataclass(frozen=True, slots=True)
class Touch:
    """One step of one journey for one customer, due at `due` (aware)."""

    touch_id: str
    journey: str
    step: str
    customer: str
    due: datetime
    kind: str
    channel: str  # the step's policy: auto | staff
    content: dict[str, Any] = field(hash=False, compare=False)
    priority: int = 0
    trigger_at: datetime | None = None  # the anchor the step times count from
    since: datetime | None = None  # the trigger event; stop facts after it count
    window: tuple[time, time] | None = None
    stop_on: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        """The fields a worker needs (times as ISO 8601 with offset)."""
        return {"touch_id": self.touch_id, "journey": self.journey, "step": self.step, "customer": self.customer,
                "kind": self.kind, "content": self.content, "priority": self.priority,
                "due": self.due.isoformat()}


@dataclass
class History:
    """What one customer's decision needs; times aware."""

    sent_by_day: dict[date, int] = field(default_factory=dict)  # local day -> kf + mass_task touches
    last_customer_message: datetime | None = None
    bot_since: int = 0  # kf messages since the customer's last message
    mass_by_month: dict[str, int] = field(default_factory=dict)  # "2024-12" -> add_msg_template tasks
    ignored: dict[str, int] = field(default_factory=dict)  # kind -> touches ignored in a row
    purchased_at: datetime | None = None
    redeemed_at: datetime | None = None
    handed_off_at: datetime | None = None
    unsubscribed: bool = False
    deleted: bool = False
    welcome_code: bool = False  # a live 20-second welcome code is at hand (fast path)

    def stop_reason(self, touch: Touch) -> str | None:
        """The stop condition that ends this touch's journey, if any."""
        since = touch.since or touch.trigger_at or touch.due
        after = {"replied": self.last_customer_message, "purchased": self.purchased_at,
                 "redeemed": self.redeemed_at, "handed_off": self.handed_off_at}
        # Unsubscribed and deleted contacts stop every journey, listed or not.
        if self.unsubscribed:
            return "unsubscribed"
        if self.deleted:
            return "contact_deleted"
        for fact in sorted(touch.stop_on):
            at = after.get(fact)
            if at is not None and at.timestamp() > since.timestamp():
                return fact
        return None

    def record(self, channel: str, at: datetime, kind: str, tz: ZoneInfo) -> None:
        """Count a touch that reached the customer (for the simulation and within a tick batch)."""
        if channel not in ("kf", "mass_task", "welcome", "manual"):
            return
        local = at.astimezone(tz)
        self.sent_by_day[local.date()] = self.sent_by_day.get(local.date(), 0) + 1
        if channel == "kf":
            self.bot_since += 1
        if channel == "mass_task":
            month = month_key(local)
            self.mass_by_month[month] = self.mass_by_month.get(month, 0) + 1
        self.ignored[kind] = self.ignored.get(kind, 0) + 1


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a due touch now, when (`at`), when it was due, on which channel, and why."""

    decision: Verdict
    at: datetime
    due: datetime
    channel: Channel
    reason: str


def month_key(local: datetime) -> str:
    """Calendar month of a local time, e.g. "2024-12"."""
    return f"{local.year:04d}-{local.month:02d}"


def touch_id(journey: str, step: str, customer: str, trigger_at: datetime, key: str = "") -> str:
    """Stable id of one step for one customer and one trigger."""
    raw = f"{journey}|{step}|{customer}|{int(trigger_at.timestamp())}|{key}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def wall(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The local time `at` on `day`, normalised across DST gaps."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC).astimezone(tz)


def elapsed(earlier: datetime, later: datetime) -> timedelta:
    """Real time between two aware datetimes (Python subtracts wall clocks when the tzinfo is the same)."""
    return later.astimezone(UTC) - earlier.astimezone(UTC)


def _in_range(t: time, start: time, end: time) -> bool:
    """start <= t < end, wrapping midnight when start > end."""
    return start <= t < end if start <= end else (t >= start or t < end)




def step_due(step: Step, trigger_at: datetime, tz: ZoneInfo) -> datetime:
    """When a step is due: whole days count on the local calendar, then `at` or `window` apply."""
    local = trigger_at.astimezone(tz)
    days, rest = divmod(step.wait, DAY)
    if rest:
        base = (local.astimezone(UTC) + step.wait).astimezone(tz)
    else:
        base = wall(local.date() + timedelta(days=days), local.timetz().replace(tzinfo=None), tz)
    if step.at is not None:
        cand = wall(base.date(), step.at, tz)
        floor = local if not rest else base
        while cand.timestamp() < floor.timestamp():
            cand = wall(cand.date() + DAY, step.at, tz)
        return cand
    if step.window is not None:
        return _into_window(base, step.window, tz)
    return base


def _into_window(moment: datetime, window: tuple[time, time], tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    start, end = window
    t = local.time()
    if t < start:
        return wall(local.date(), start, tz)
    if t >= end:
        return wall(local.date() + DAY, start, tz)
    return local


def next_allowed(moment: datetime, touch: Touch, rules: Rules, tz: ZoneInfo) -> tuple[datetime, str | None]:
    """The earliest time >= moment outside quiet hours (unless exempt) and inside the step window."""
    reason = None
    for _ in range(4):
        local = moment.astimezone(tz)
        if touch.kind not in rules.quiet_exempt and _in_range(local.time(), rules.quiet_start, rules.quiet_end):
            day = local.date() if local.time() < rules.quiet_end else local.date() + DAY
            moment, reason = wall(day, rules.quiet_end, tz), reason or "quiet_hours"
            continue
        if touch.window is not None and not _in_range(local.time(), *touch.window):
            moment, reason = _into_window(local, touch.window, tz), reason or "window"
            continue
        break
    return moment.astimezone(tz), reason


def route(touch: Touch, history: History, now: datetime, rules: Rules, tz: ZoneInfo) -> tuple[Channel, str]:
    """Channel policy: auto = kf in window and budget, else mass task within quota, else staff reminder."""
    if touch.channel == "staff":
        return "staff", "staff_step"
    if touch.kind == "welcome" and history.welcome_code:
        return "welcome", "welcome_code"
    last = history.last_customer_message
    if last is not None and elapsed(last, now) < rules.kf_window:
        if history.bot_since < rules.kf_budget:
            return "kf", "kf_window_open"
        closed = "kf_budget_used"
    else:
        closed = "kf_window_closed"
    if history.mass_by_month.get(month_key(now.astimezone(tz)), 0) < rules.mass_quota:
        return "mass_task", closed
    return "staff", "mass_quota_used"


def decide(touch: Touch, history: History, now: datetime, rules: Rules = Rules(),
           tz: ZoneInfo = DEFAULT_TZ) -> Decision:
    """Send, defer (quiet hours, window, daily cap), skip (stop condition, fatigue, stale) or remind staff."""
    now = aware(now, "now").astimezone(tz)
    due = touch.due.astimezone(tz)
    channel, why = route(touch, history, now, rules, tz)
    if stop := history.stop_reason(touch):
        return Decision("skip", now, due, channel, f"stopped:{stop}")
    if history.ignored.get(touch.kind, 0) >= rules.ignored_limit:
        return Decision("skip", now, due, channel, f"ignored:{touch.kind}")
    if elapsed(due, now) > rules.max_delay:
        return Decision("skip", now, due, channel, "stale")
    allowed, wait_reason = next_allowed(now, touch, rules, tz)
    if allowed > now:
        return Decision("defer", allowed, due, channel, wait_reason or "window")
    if channel == "staff":
        return Decision("remind", now, due, channel, why)
    if history.sent_by_day.get(now.date(), 0) >= rules.daily_cap:
        later = wall(now.date() + DAY, now.time(), tz)
        later, _ = next_allowed(later, touch, rules, tz)
        return Decision("defer", later, due, channel, "daily_cap")
    return Decision("send", now, due, channel, why)


def anchor_for(journey: Journey, at: datetime, facts: dict[str, Any]) -> datetime | None:
    """The moment step waits count from, for a trigger event at `at`; None if the facts do not fit."""
    t = journey.trigger
    if t.type == "intent" and t.no_purchase_within_hours:
        return at + timedelta(hours=t.no_purchase_within_hours)
    if t.type == "coupon_issued":
        expires = facts.get("expires_at")
        if expires is None:
            return None
        expires = aware(expires, "expires_at")
        remind = expires - timedelta(hours=t.remind_before_hours or 0)
        # A coupon shorter-lived than the lead time: remind halfway, not the moment it is issued.
        return max(remind, at + (expires - at) / 2) if expires > at else None
    return at


def trigger_matches(journey: Journey, trigger: str, facts: dict[str, Any]) -> bool:
    """Whether an event of type `trigger` with `facts` enrols a customer into this journey."""
    t = journey.trigger
    if trigger == BY_NAME:
        return journey.enabled and facts.get("journey") == journey.id
    if not journey.enabled or t.type != trigger:
        return False
    if t.type == "intent" and facts.get("intent") != t.intent:
        return False
    if t.type == "tag" and facts.get("tag") != t.tag:
        return False
    if t.type == "coupon_issued" and t.campaign and facts.get("campaign") != t.campaign:
        return False
    if t.type == "silence" and facts.get("days") not in (None, t.days):
        return False
    return True


def touch_for(journey: Journey, step: Step, customer: str, trigger_at: datetime, tz: ZoneInfo,
              since: datetime | None = None, key: str = "") -> Touch:
    """The touch of one step."""
    stop_on = journey.stop_on | ({"purchased"} if journey.trigger.type == "intent" else frozenset())
    return Touch(touch_id(journey.id, step.id, customer, trigger_at, key), journey.id, step.id, customer,
                 step_due(step, trigger_at, tz), step.kind, step.channel, step.content, journey.priority,
                 trigger_at, since or trigger_at, step.window, stop_on)


def schedule(journey: Journey, customer_id: str, trigger_at: datetime, tz: ZoneInfo = DEFAULT_TZ,
             since: datetime | None = None, key: str = "") -> list[Touch]:
    """Every step of a journey for one customer, with its due time (before quiet hours and caps)."""
    aware(trigger_at, "trigger_at")
    return [touch_for(journey, s, customer_id, trigger_at, tz, since, key) for s in journey.steps]


def lifecycle(first_seen: datetime | None, last_interaction: datetime | None, now: datetime) -> str:
    """new (0-7 days), active (8-30), silent (30+ days without interaction)."""
    last = last_interaction or first_seen
    if last is not None and elapsed(last, now) >= timedelta(days=30):
        return "silent"
    if first_seen is None or elapsed(first_seen, now) < timedelta(days=8):
        return "new"
    return "active"


def segment_matches(segment: Segment, stage: str, tags: set[str] | frozenset[str], value: float | None) -> bool:
    """Whether a customer in lifecycle `stage` with `tags` and order `value` belongs to the segment."""
    if segment.lifecycle and stage not in segment.lifecycle:
        return False
    if segment.tags and not set(segment.tags) & set(tags):
        return False
    if segment.min_value is not None and (value is None or value < segment.min_value):
        return False
    return True


def shifted(touch: Touch, due: datetime) -> Touch:
    """The same touch with another due time."""
    return replace(touch, due=due)
