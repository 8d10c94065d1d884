"""A/B experiments in Redis: each customer's arm, recorded once, and the outcomes within each arm's window.

Keys of an experiment, per shard of its customers (sop/shards.py: 1 on a single server, 16 on a cluster; shard 0
tagged {<id>}, shard i {<id>:i}, each in its own Redis Cluster slot), so a large experiment spreads over the nodes:
  wecom:exp:{<id>}:arms    customer -> "arm|assigned_ts|window_end_ts"   (HSETNX: the first assignment stays)
  wecom:exp:{<id>}:seen    "customer|outcome" -> ts of the first such outcome in the window
  wecom:exp:{<id>}:counts  "arm|assigned", "arm|<outcome>" (customers), "arm|revenue", "arm|orders" (summed over shards)
  wecom:exp:{<id>}:until   the latest window end of its customers (ts): windows are open while it is ahead
and per customer:
  wecom:exp:c:{<customer>} experiment id -> "arm|assigned_ts|window_end_ts" (the customer's experiments)

An outcome counts in the window [assigned, window end): from the assignment on, the window's end excluded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import redis

from bot.content.campaigns import Campaign, describe_value
from bot.records import later
from bot.times import aware, from_ts
from sop.journeys import Journey, Step
from sop.shards import Shards
from sop.variants import HOLDOUT, OUTCOMES, Experiment

__all__ = ["Assignment", "Declared", "Experiments", "arms_of", "declared"]

PREFIX = "wecom:exp"
SHARDS = "wecom:exp:shards"  # the shard count in use (sop/shards.py)

# KEYS: arms, counts, until. ARGV: customer, "arm|ts|end", arm, end ts. The recorded value (the first one stays).
ASSIGN_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then return cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[3] .. '|assigned', 1)
if tonumber(ARGV[4]) > tonumber(redis.call('GET', KEYS[3]) or '0') then redis.call('SET', KEYS[3], ARGV[4]) end
return ARGV[2]
"""

# KEYS: seen, counts. ARGV: customer, outcome, arm, ts, amount ('' for none). 1 when the customer's first of its kind.
OUTCOME_LUA = """
if ARGV[5] ~= '' then
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[3] .. '|revenue', ARGV[5])
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. '|orders', 1)
end
if redis.call('HSETNX', KEYS[1], ARGV[1] .. '|' .. ARGV[2], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. '|' .. ARGV[2], 1)
  return 1
end
return 0
"""


def _key(experiment: str, part: str, shard: int = 0) -> str:
    """A key of one shard of an experiment, in its own Redis Cluster slot (shard 0 keeps the unsharded name)."""
    return f"{PREFIX}:{{{experiment}}}:{part}" if shard == 0 else f"{PREFIX}:{{{experiment}:{shard}}}:{part}"


def _customer_key(customer: str) -> str:
    """The customer's index of their experiments."""
    return f"{PREFIX}:c:{{{customer}}}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """A customer's recorded arm of one experiment, and the window its outcomes count in."""

    experiment: str
    arm: str
    at: datetime
    until: datetime

    @classmethod
    def parse(cls, experiment: str, value: str, tz: ZoneInfo) -> Assignment:
        """From the stored "arm|assigned_ts|window_end_ts"."""
        arm, at, until = value.split("|")
        return cls(experiment, arm, from_ts(float(at), tz), from_ts(float(until), tz))


class Experiments:
    """Records arms (once per customer and experiment) and outcomes; an outcome recorder of bot.records.outcomes."""

    def __init__(self, r: redis.Redis, tz: ZoneInfo) -> None:
        self.r = r
        self.tz = tz
        self._assign = r.register_script(ASSIGN_LUA)
        self._outcome = r.register_script(OUTCOME_LUA)
        self._shards = Shards(r, SHARDS)

    def peek(self, experiment: Experiment, customer: str) -> tuple[str, bool]:
        """The customer's arm and whether it is recorded (else the arm they would get with the current weights)."""
        value = self.r.hget(_customer_key(customer), experiment.id) or self.r.hget(
            _key(experiment.id, "arms", self._shards.of(customer)), customer)
        return (str(value).split("|")[0], True) if value else (experiment.pick(customer), False)

    def assign(self, experiment: Experiment, customer: str, at: datetime, arm: str | None = None) -> str:
        """The customer's arm: the recorded one, else `arm` (default: by the current weights), recorded from `at`."""
        aware(at, "at")
        recorded = self.r.hget(_customer_key(customer), experiment.id)
        if recorded:  # also when the shard count changed since (the customer's index is in the customer's slot)
            return str(recorded).split("|")[0]
        arm = arm or experiment.pick(customer)
        until = at + timedelta(days=experiment.window_days)
        value = f"{arm}|{at.timestamp()!r}|{until.timestamp()!r}"
        shard = self._shards.of(customer)
        got = str(self._assign(keys=[_key(experiment.id, "arms", shard), _key(experiment.id, "counts", shard),
                                     _key(experiment.id, "until", shard)],
                               args=[customer, value, arm, repr(until.timestamp())]))
        # The customer's index is in the customer's slot, not the experiment's, so it cannot be in the script: it is
        # written on every call, recorded before or not, and a call retried after a crash between the two repairs it.
        self.r.hsetnx(_customer_key(customer), experiment.id, got)
        later.forget(self.r, _customer_key(customer))
        return got.split("|")[0]

    def ahead(self, customer: str) -> list[str]:
        """The hash `of` reads (for later.ahead)."""
        return [_customer_key(customer)]

    def of(self, customer: str) -> list[Assignment]:
        """Every recorded assignment of `customer`, by experiment id."""
        found = later.hgetall(self.r, _customer_key(customer))
        return [Assignment.parse(e, v, self.tz) for e, v in sorted(found.items())]

    def record(self, customer: str, kind: str, at: datetime, amount: float | None = None) -> None:
        """An outcome of `customer` at `at` (bot.records.outcomes kinds): counted once per customer and kind in
        every experiment whose window it falls in; a purchase's amount adds to the arm's revenue."""
        if kind not in OUTCOMES:
            raise ValueError(f"unknown outcome {kind!r} (expected one of {', '.join(OUTCOMES)})")
        aware(at, "at")
        shard = self._shards.of(customer)
        for a in self.of(customer):
            if a.at <= at < a.until:
                money = repr(float(amount)) if kind == "purchased" and amount is not None else ""
                self._outcome(keys=[_key(a.experiment, "seen", shard), _key(a.experiment, "counts", shard)],
                              args=[customer, kind, a.arm, repr(at.timestamp()), money])

    def counts(self, experiment: str) -> dict[str, float]:
        """The experiment's counters, summed over its shards: "arm|assigned", "arm|<outcome>", "arm|revenue",
        "arm|orders"."""
        with self.r.pipeline(transaction=False) as p:
            for shard in self._shards.all():
                p.hgetall(_key(experiment, "counts", shard))
            found: Counter[str] = Counter()
            for counts in p.execute():
                found.update({k: float(v) for k, v in counts.items()})
        return dict(found)

    def open_until(self, experiment: str) -> datetime | None:
        """The end of the latest window of the experiment's customers (None: nobody assigned)."""
        ends = [end for shard in self._shards.all() if (end := self._until(experiment, shard)) is not None]
        return from_ts(max(ends), self.tz) if ends else None

    def _until(self, experiment: str, shard: int) -> float | None:
        """The latest window end in one shard."""
        raw = self.r.get(_key(experiment, "until", shard))
        if raw is None:  # assigned before this key was kept: the latest of the recorded windows, once
            ends = [float(v.split("|")[2]) for v in self.r.hvals(_key(experiment, "arms", shard))]
            if not ends:
                return None
            self.r.set(_key(experiment, "until", shard), repr(max(ends)), nx=True)
            return max(ends)
        return float(raw)


@dataclass(frozen=True, slots=True)
class Declared:
    """An experiment as the operator files declare it: where, its title and what each arm sends."""

    experiment: Experiment
    kind: Literal["step", "coupon"]
    title: str  # the journey's title and step, or the campaign's title
    arms: dict[str, str]  # arm -> what it sends, in a few words (the holdout: nothing)


def _clip(text: str, n: int = 24) -> str:
    """`text`, cut to `n` characters with …."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _sends(content: dict[str, Any]) -> str:
    """A step content in a few words."""
    parts = [_clip(str(content["text"]))] if content.get("text") else []
    parts += [f"[{k}]" for k in ("link", "image", "miniprogram") if k in content]
    if coupon := content.get("coupon"):
        parts.append(f"[券 {coupon.get('campaign', '')}]")
    return " ".join(parts) or "—"


def _step(journey: Journey, step: Step) -> Declared | None:
    """The experiment of a journey step, if it declares one."""
    if step.experiment is None:
        return None
    arms = {HOLDOUT: "不发送"} if step.experiment.holdout else {}
    return Declared(step.experiment, "step", f"{journey.title}·{step.id}",
                    arms | {a: _sends(c) for a, c in step.variants.items()})


def _campaign(c: Campaign) -> Declared | None:
    """The experiment of a coupon campaign, if it declares one."""
    if c.experiment is None:
        return None
    arms = {HOLDOUT: "不发券"} if c.experiment.holdout else {}
    return Declared(c.experiment, "coupon", c.title,
                    arms | {v.variant or "": f"{v.title}：{describe_value(v)}" for v in c.variants})


def declared(journeys: Iterable[Journey] | None, campaigns: Iterable[Campaign] | None) -> list[Declared]:
    """Every experiment the journeys' steps and the coupon campaigns declare, journeys first."""
    found = [_step(j, s) for j in journeys or () for s in j.steps]
    found += [_campaign(c) for c in campaigns or ()]
    return [d for d in found if d is not None]


def arms_of(experiments: Experiments | None, found: Iterable[Declared],
            customer: str) -> list[tuple[Declared, str, Assignment | None]]:
    """The customer's arm of each experiment: (experiment, arm, its recorded assignment or None when the arm is the
    one they would get with the current weights; always None without `experiments`, i.e. without Redis)."""
    mine = {a.experiment: a for a in experiments.of(customer)} if experiments is not None else {}
    out = []
    for d in found:
        got = mine.get(d.experiment.id)
        out.append((d, got.arm if got else d.experiment.pick(customer), got))
    return out
