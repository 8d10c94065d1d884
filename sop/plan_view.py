"""One customer's plan, as `sop plan --customer` and the console's SOP page show it: first what the engine holds
in Redis (pending steps, stopped runs), then what would follow (the simulation of sop/simulate.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.times import DEFAULT_TZ, from_ts
from sop.engine import (
    CustomerFacts,
    CustomerReader,
    EngineState,
    PendingTouch,
    StoppedRun,
    engine_state,
)
from sop.journeys import Journey
from sop.plan import Rules, step_due
from sop.simulate import Profile, Row, simulate

__all__ = ["CustomerPlan", "customer_plan", "plan_of", "profile_of", "PENDING", "STOPPED"]

PENDING = "pending"  # the decision column of an engine row: held in Redis, not simulated
STOPPED = "stopped"
SAME_RUN = timedelta(minutes=1)  # a simulated step due this close to (or before) the engine's is the engine's run


def profile_of(record: CustomerFacts | None, tz: ZoneInfo = DEFAULT_TZ, value: float | None = None) -> Profile | None:
    """A preview profile from a customer record (None: a hypothetical new customer)."""
    if record is None or not record.first_seen:
        return None if record is None else Profile(id=record.id, unsubscribed=record.unsubscribed, value=value)
    return Profile(id=record.id, first_seen=from_ts(record.first_seen, tz),
                   last_inbound=from_ts(record.last_inbound, tz) if record.last_inbound else None,
                   tags={t: from_ts(ts, tz) for t, ts in record.tags.items()}, unsubscribed=record.unsubscribed,
                   value=value)


@dataclass
class CustomerPlan:
    """A customer's plan. `pending` and `stopped` are the engine's truth; `following` is what would follow
    (simulated, without the runs the engine already holds); `rows` lists both for a table, engine first, with
    the decision "pending" or "stopped" on the engine's rows."""

    customer: str
    known: bool  # a customer record exists (else: previewed as a new customer)
    start: datetime
    days: int
    pending: list[PendingTouch] = field(default_factory=list)
    stopped: list[StoppedRun] = field(default_factory=list)
    following: list[Row] = field(default_factory=list)
    engine: bool = False  # the engine's state was read (False: no Redis, simulation only)

    @property
    def counts(self) -> Counter:
        """Decisions of what would follow: send, remind, defer, skip."""
        return Counter(row.decision for row in self.following)

    @property
    def rows(self) -> list[Row]:
        """Engine rows (decision "pending" or "stopped"; reason a reason code: tick's as the history stands, or
        stopped:<fact>) then the rest. Every field is a code a console filter can name."""
        held = [Row(t.journey, t.step, t.kind, t.due, None, t.channel, PENDING, t.reason) for t in self.pending]
        held += [Row(s.journey, s.step, "", s.at or self.start, None, "", STOPPED, f"stopped:{s.reason}")
                 for s in self.stopped]
        return held + self.following

    def to_json(self) -> dict[str, Any]:
        """The engine's part: {"pending": [...], "stopped": [...]} (`sop plan --json --pending`)."""
        return {"pending": [t.to_json() for t in self.pending], "stopped": [s.to_json() for s in self.stopped]}


def plan_of(journeys: list[Journey], rules: Rules, profile: Profile | None, start: datetime, days: int,
            tz: ZoneInfo = DEFAULT_TZ, state: EngineState | None = None, customer: str = "",
            known: bool = False) -> CustomerPlan:
    """Combine the engine's state (if read) with the simulation from `start` for `days` days: the simulation
    leaves out a journey's steps the engine's run of it covers (due no later than that run's), and everything
    once the customer unsubscribed or was deleted."""
    if state is not None and state.birthday and profile is not None and profile.birthday is None:
        profile = Profile(profile.id, profile.first_seen, profile.last_inbound, profile.tags, profile.unsubscribed,
                          profile.value, state.birthday)
    rows = simulate(journeys, rules, profile, start.astimezone(tz), days, tz)
    plan = CustomerPlan(customer or (profile.id if profile else ""), known, start, days, engine=state is not None)
    if state is None:
        plan.following = rows
        return plan
    plan.pending, plan.stopped = state.pending, state.stopped
    if state.history.unsubscribed or state.history.deleted:
        return plan
    steps = {(j.id, s.id): s for j in journeys for s in j.steps}
    covered: list[Row] = []
    for row in rows:
        anchor = state.anchors.get(row.journey)
        step = steps.get((row.journey, row.step))
        if anchor is not None and step is not None:
            ours = step_due(step, anchor, tz)
            if (row.due or row.at).timestamp() - ours.timestamp() <= SAME_RUN.total_seconds():
                continue
        covered.append(row)
    plan.following = covered
    return plan


def customer_plan(r: redis.Redis, journeys: list[Journey], rules: Rules, tz: ZoneInfo, customers: CustomerReader,
                  customer: str, start: datetime | None = None, days: int = 14,
                  exists: bool | None = None) -> CustomerPlan:
    """The one plan of `customer` both `sop plan --customer` and the console show (see plan_of). `exists`:
    whether a customer record exists (default: it has a first_seen); unknown customers are previewed as new."""
    start = (start or datetime.now(tz)).astimezone(tz)
    record = customers.get(customer)
    known = bool(record.first_seen) if exists is None else exists
    state = engine_state(r, journeys, rules, tz, customers, customer, start)
    return plan_of(journeys, rules, profile_of(record, tz) if known else None, start, days, tz, state, customer,
                   known)
