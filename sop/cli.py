"""Pure printers for `wecom-bot sop validate|plan`: errors, one customer's touches, a segment's counts per day
(bot/ops/cli_sop.py reads Redis and the configuration and calls these)."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from bot.times import DEFAULT_TZ
from sop import journeys as journeys_mod
from sop.engine import CustomerFacts
from sop.journeys import Journey, ReplyOption, Segment, Step
from sop.plan import Rules, lifecycle, segment_matches
from sop.plan_view import CustomerPlan, plan_of, profile_of
from sop.simulate import Profile, Row, simulate

__all__ = ["validate_cmd", "plan_cmd", "print_plan", "segment_cmd", "profile_of"]


def validate_cmd(path: Path | str | None, out: TextIO = sys.stdout) -> int:
    """Print every error ("file:line: key: message"); exit status 1 if any, else "ok: N journeys"."""
    found, errors = journeys_mod.load_dir(path or journeys_mod.DEFAULT_DIR)
    for e in errors:
        print(e, file=out)
    if errors:
        print(f"{len(errors)} error(s)", file=out)
        return 1
    print(f"ok: {len(found)} journeys", file=out)
    return 0


def _line(row: Row, tz: ZoneInfo) -> str:
    at = row.at.astimezone(tz).strftime("%Y-%m-%d %a %H:%M")
    late = f" (due {row.due.astimezone(tz):%m-%d %H:%M})" if row.due else ""
    return f"{at}  {row.decision:<6} {row.channel:<9} {row.journey}/{row.step} [{row.kind}]  {row.reason}{late}"


def _replies_line(step: Step) -> str:
    """The answers a step's question accepts and what each does, on one indented line."""
    def does(o: ReplyOption) -> str:
        parts = [f"tag {o.tag}" if o.tag else "", "reply" if o.reply else "",
                 f"journey {o.journey}" if o.journey else "", "coupon" if o.coupon else ""]
        return f"{' '.join(json.dumps(w, ensure_ascii=False) for w in o.words)} -> {', '.join(p for p in parts if p)}"
    return (f"    replies (within {step.replies_for_hours} h of a kf send): "
            + " | ".join(does(o) for o in step.replies))


def plan_cmd(journeys: list[Journey], rules: Rules, customer: CustomerFacts | Profile | None, start: datetime,
             days: int, as_json: bool, out: TextIO = sys.stdout, tz: ZoneInfo = DEFAULT_TZ) -> int:
    """Print every touch one customer would get from `start` for `days` days, and every skip/deferral with why
    (simulation only: `print_plan` of sop.plan_view.customer_plan adds what the engine holds in Redis)."""
    profile = customer if isinstance(customer, Profile) or customer is None else profile_of(customer, tz)
    return print_plan(plan_of(journeys, rules, profile, start.astimezone(tz), days, tz), journeys, as_json, out, tz)


def print_plan(plan: CustomerPlan, journeys: list[Journey], as_json: bool, out: TextIO = sys.stdout,
               tz: ZoneInfo = DEFAULT_TZ, pending_json: bool = False) -> int:
    """Text: the engine's pending steps and stopped runs (when read from Redis), then what would follow.
    JSON: one object per line of what would follow (keys of Row.to_json), preceded, with `pending_json`, by one
    {"pending": [...], "stopped": [...]} line of the engine's part."""
    start, days = plan.start, plan.days
    if as_json:
        if pending_json:
            print(json.dumps(plan.to_json(), ensure_ascii=False), file=out)
        for row in plan.following:
            print(json.dumps(_local(row.to_json(), row, tz), ensure_ascii=False), file=out)
        return 0
    steps = {(j.id, s.id): s for j in journeys for s in j.steps}
    if plan.engine:
        print(f"pending in the engine (Redis): {len(plan.pending)}", file=out)
        for t in plan.pending:
            flight = "  (in flight)" if t.state == "inflight" else ""
            flight += "  (journey paused: resume with `wecom-bot sop resume`)" if t.reason == "paused" else ""
            print(f"{t.due.astimezone(tz):%Y-%m-%d %a %H:%M}  pending {t.channel:<9} {t.journey}/{t.step} [{t.kind}]"
                  f"  tick decides: {t.decision} {t.reason}{flight}", file=out)
        print(f"stopped journeys: {len(plan.stopped)}", file=out)
        for s in plan.stopped:
            when = f"stopped {s.at.astimezone(tz):%Y-%m-%d %H:%M}" if s.at else "skipped when its step comes due"
            name = "every journey" if s.journey == "*" else f"{s.journey}/{s.step}"
            print(f"  {name}: {s.reason} ({when})", file=out)
        print("would follow (simulated, the customer never replying; runs the engine holds left out):", file=out)
    for row in plan.following:
        print(_line(row, tz), file=out)
        if (step := steps.get((row.journey, row.step))) is not None and step.replies:
            print(_replies_line(step), file=out)
    c = plan.counts
    print(f"{c['send']} send, {c['remind']} remind, {c['defer']} defer, {c['skip']} skip "
          f"over {days} days from {start.astimezone(tz):%Y-%m-%d %H:%M %Z}", file=out)
    return 0


def _local(obj: dict[str, Any], row: Row, tz: ZoneInfo) -> dict[str, Any]:
    if obj.get("channel") == "welcome":  # the welcome-code message is a kf message (reason: welcome_code)
        obj["channel"] = "kf"
    obj["at"] = row.at.astimezone(tz).isoformat()
    obj["due"] = row.due.astimezone(tz).isoformat() if row.due else None
    return obj


def segment_cmd(journeys: list[Journey], rules: Rules, customers: Iterable[CustomerFacts | Profile], start: datetime,
                days: int, out: TextIO = sys.stdout, tz: ZoneInfo = DEFAULT_TZ,
                segment: Segment | None = None) -> int:
    """Per local day: how many touches a whole segment would get, by decision and channel."""
    per_day: dict[str, Counter] = defaultdict(Counter)
    members = 0
    for c in customers:
        p = c if isinstance(c, Profile) else profile_of(c, tz)
        if segment is not None:
            first = p.first_seen if p else start
            stage = lifecycle(first, p.last_inbound if p else None, start)
            if not segment_matches(segment, stage, set(p.tags) if p else set(), p.value if p else None):
                continue
        members += 1
        for row in simulate(journeys, rules, p, start.astimezone(tz), days, tz):
            key = row.decision if row.decision in ("defer", "skip") else f"{row.decision}:{row.channel}"
            per_day[row.at.astimezone(tz).date().isoformat()][key] += 1
    print(f"{members} customers", file=out)
    for day in sorted(per_day):
        counts = ", ".join(f"{k}={v}" for k, v in sorted(per_day[day].items()))
        print(f"{day}  {counts}", file=out)
    return 0
