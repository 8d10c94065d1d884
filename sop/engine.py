"""The SOP engine on Redis: enrol, claim due touches atomically, decide with plan.py, emit what to perform.

It owns the wecom:sop:* keys (the open questions of steps with replies through sop/replies.py); customers
are read through a CustomerReader and touches leave through `emit`, so the engine knows nothing of the
inbox or of how customer records are stored."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import redis

from bot.times import aware, from_ts
from sop import journeys as journeys_mod
from sop.journeys import ConfigError, Journey, Step
from sop.plan import (
    BY_NAME,
    Decision,
    History,
    Rules,
    Touch,
    anchor_for,
    decide,
    lifecycle,
    month_key,
    segment_matches,
    step_due,
    touch_for,
    trigger_matches,
    wall,
)
from sop.replies import OFFER, Answer, Offers
from sop.shards import Shards

__all__ = ["Engine", "TickResult", "CustomerFacts", "CustomerReader", "Emit", "DUE", "INFLIGHT", "ENROLLED",
           "PENDING", "COUNTERS", "FATIGUED", "SKIPS", "EMIT_TTL", "EngineState", "PendingTouch", "StoppedRun",
           "birthday_of", "engine_state", "PAUSED", "pause", "resume", "paused", "SHARDS", "sharded", "shards",
           "pending_counts", "due_until"]

# The keys that grow with the customers are sharded by customer (sop/shards.py): shard 0 keeps the names below
# ({sop}), shard i the tag {sop:i}; one script or transaction touches the keys of one shard (one cluster slot).


def sharded(key: str, shard: int) -> str:
    """Shard `shard`'s copy of DUE, INFLIGHT, ENROLLED, PENDING or HELD."""
    return key if shard == 0 else key.replace("{sop}", f"{{sop:{shard}}}")


SHARDS = "wecom:sop:shards"  # the shard count in use
DUE = "wecom:sop:{sop}:due"  # member -> due time
INFLIGHT = "wecom:sop:{sop}:inflight"  # member -> lease deadline
ENROLLED = "wecom:sop:{sop}:enrolled"  # journey|customer[|key] -> anchor of the live enrolment
PENDING = "wecom:sop:{sop}:pending"  # journey|customer[|key] -> the member of its pending step (while one is)
COUNTERS = "wecom:sop:{sop}:counters"
FATIGUED = "wecom:sop:{sop}:fatigued"  # customer|kind -> when the kind was stopped (before it moved: read only)
SKIPS = "wecom:sop:{sop}:skips"  # recent skips with reasons, capped
PAUSED = "wecom:sop:{sop}:paused"  # journey id -> JSON {by, at}: paused by an operator
HELD = "wecom:sop:{sop}:held"  # members tick deferred because their journey is paused
PAUSE_RECHECK = timedelta(minutes=5)  # a paused journey's due touch is looked at again this much later
# per customer: d:<day> m:<month> k:<last_in> i:<kind>, stop facts, e:<journey>|<key> (enrolled, the anchor)
# and s:<journey>|<key> (the run was stopped: JSON reason, step, at)
HIST = "wecom:sop:h:{%s}"
Defer = Callable[[Any, list[Any], list[Any]], None]  # (script, keys, args): a script call sent later
BIRTHDAYS = "wecom:sop:bday:%s"  # MM-DD -> set of customers

LEASE = timedelta(seconds=60)
EMIT_TTL = 8 * 86400  # how long an emitted "touch:<id>" key must stay deduplicated: longer than any deferral
SKIPS_MAX = 10000
FACTS = ("purchased", "redeemed", "handed_off", "contact_deleted", "unsubscribed")

# the customer's latest message time, moved forward only (a late older message leaves it)
LAST_IN = """
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'last_in') or '0') then
  redis.call('HSET', KEYS[1], 'last_in', ARGV[1])
end
return 0
"""

CLAIM = """
local n = tonumber(ARGV[3])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, n)
if #out < n then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, n - #out)
  if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
  for _, m in ipairs(due) do out[#out + 1] = m end
end
for _, m in ipairs(out) do redis.call('ZADD', KEYS[2], ARGV[2], m) end
return out
"""

# Every in-flight claim due again now (its lease ends); returns how many.
RELEASE = """
local out = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, m in ipairs(out) do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], m) end
return #out
"""

# One enrolment per journey|customer[|key] is live at a time: while its pending step is due or in flight, a new
# trigger changes nothing (asking about the price twice keeps one follow-up); once the run ended, a newer trigger
# starts it again. A pending step written before PENDING existed is still superseded by a newer anchor (tick).
ENROL = """
local res = {}
for i = 1, #ARGV, 4 do
  local f = ARGV[i]
  local cur = redis.call('HGET', KEYS[3], f)
  if cur and (redis.call('ZSCORE', KEYS[1], cur) or redis.call('ZSCORE', KEYS[4], cur)) then
    res[#res + 1] = 0
  else
    local prev = tonumber(redis.call('HGET', KEYS[2], f) or '-1')
    if tonumber(ARGV[i + 1]) > prev then
      redis.call('HSET', KEYS[2], f, ARGV[i + 1])
      if ARGV[i + 2] ~= '' then
        redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 3], ARGV[i + 2])
        redis.call('HSET', KEYS[3], f, ARGV[i + 2])
      elseif cur then
        redis.call('HDEL', KEYS[3], f)
      end
      res[#res + 1] = 1
    else
      res[#res + 1] = 0
    end
  end
end
return res
"""


class CustomerFacts(Protocol):
    """What the engine reads of a customer (bot.records.customers.Customer has it)."""

    @property
    def id(self) -> str: ...

    @property
    def first_seen(self) -> float: ...

    @property
    def last_inbound(self) -> float: ...

    @property
    def sent_since_inbound(self) -> int: ...

    @property
    def unsubscribed(self) -> bool: ...

    @property
    def tags(self) -> Mapping[str, float]: ...


class CustomerReader(Protocol):
    """Where the engine reads customers from (bot.records.customers.Customers)."""

    def get(self, customer: str) -> CustomerFacts: ...

    def many(self, customers: Sequence[str]) -> Mapping[str, CustomerFacts]: ...

    def all(self) -> Iterator[CustomerFacts]: ...


# Where due touches go: (dedupe key, JSON entry) pairs and how long a key stays deduplicated;
# returns how many were new.
Emit = Callable[[list[tuple[str, str]], int], int]


@dataclass
class TickResult:
    """What one tick did."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    reminded: int = 0
    emitted: int = 0  # new inbox entries (re-emissions of the same touch are deduped)
    reasons: Counter = field(default_factory=Counter)

    def add(self, other: TickResult) -> None:
        """Count another shard's tick in."""
        for name in ("claimed", "sent", "deferred", "skipped", "reminded", "emitted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)


@dataclass(frozen=True, slots=True)
class Ref:
    """A pending touch as stored in Redis: enough to rebuild it from the current journey version."""

    journey: str
    step: str
    customer: str
    anchor: int
    since: int
    key: str = ""

    def member(self) -> str:
        tail = f"|{self.since}" if self.since != self.anchor or self.key else ""
        return f"{self.journey}|{self.step}|{self.customer}|{self.anchor}{tail}" + (f"|{self.key}" if self.key else "")

    @classmethod
    def parse(cls, member: str) -> Ref:
        parts = member.split("|")
        anchor = int(parts[3])
        return cls(parts[0], parts[1], parts[2], anchor, int(parts[4]) if len(parts) > 4 else anchor,
                   parts[5] if len(parts) > 5 else "")

    def enrolment(self) -> str:
        """Field of the enrolment record: a 72-bit digest keeps it at ~50 bytes for millions of customers."""
        raw = f"{self.journey}|{self.customer}" + (f"|{self.key}" if self.key else "")
        return base64.b64encode(hashlib.blake2b(raw.encode(), digest_size=9).digest()).decode()


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _kind_of(touch: Touch | Mapping[str, Any]) -> str:
    return touch["kind"] if isinstance(touch, Mapping) else touch.kind


class Engine:
    """Runs journeys for every customer; the decisions themselves live in plan.py."""

    def __init__(self, r: redis.Redis, journeys: Iterable[Journey], rules: Rules, tz: ZoneInfo, *,
                 customers: CustomerReader, emit: Emit, lease: timedelta = LEASE, shards: int = 0) -> None:
        self.r = r
        self.shards = Shards(r, SHARDS, shards)  # 0: as recorded, else 1 (single server) or 16 (cluster)
        self._next = 0  # the shard the next tick starts with
        self.rules = rules
        self.tz = tz
        self.emit = emit
        self.lease = lease
        self.customers = customers
        self.journeys: dict[str, Journey] = {j.id: j for j in journeys}
        self._claim = r.register_script(CLAIM)
        self._last_in = r.register_script(LAST_IN)
        self._enrol = r.register_script(ENROL)
        self._release = r.register_script(RELEASE)
        self.offers = Offers(r)

    # --- journeys -----------------------------------------------------------------------------

    def use(self, journeys: Iterable[Journey]) -> None:
        """Run these journeys from now on; pending touches name journey and step ids, so they continue on
        the new version by step id."""
        self.journeys = {j.id: j for j in journeys}

    def reload(self, directory: Path | str) -> list[ConfigError]:
        """Swap in the journeys under `directory`; on any error keep the running ones and return the errors."""
        found, errors = journeys_mod.load_dir(directory)
        if not errors:
            self.use(found)
        return errors

    # --- enrolment ----------------------------------------------------------------------------

    def enroll(self, customer: str, trigger: str, at: datetime, **facts: Any) -> int:
        """Enrol a customer into every journey this trigger starts; returns how many enrolments were new."""
        return len(self._enroll([(customer, trigger, at, facts)])[0])

    def enroll_journey(self, customer: str, journey: str, at: datetime) -> int:
        """Enrol a customer into one journey by its id, whatever its trigger (segment and timing still apply)."""
        return self.enroll(customer, BY_NAME, at, journey=journey)

    def enroll_many(self, events: Iterable[tuple[str, str, datetime, dict[str, Any]]]) -> int:
        """Bulk `enroll` of (customer, trigger, at, facts) events."""
        return len(self._enroll(list(events))[0])

    def welcome(self, customer: str, trigger: str, at: datetime, **facts: Any) -> list[Touch]:
        """Enrol and return the immediate welcome touches for the 20-second welcome-code fast path.

        The caller sends them at once (send_welcome_msg / send_msg_on_event); the journey continues
        with its next step. Counts towards the day like any touch that reaches the customer.
        """
        _, welcomes = self._enroll([(customer, trigger, at, facts)], welcome=True)
        if welcomes:
            for t in welcomes:
                self.note_sent(customer, t, at, "welcome")
            self.r.hincrby(COUNTERS, "sent", len(welcomes))
            self.r.hincrby(COUNTERS, "sent:welcome_code", len(welcomes))
        return welcomes

    def _enroll(self, events: list[tuple[str, str, datetime, dict[str, Any]]], welcome: bool = False,
                records: dict[str, CustomerFacts] | None = None,
                only: set[str] | None = None) -> tuple[list[str], list[Touch]]:
        args: list[Any] = []
        touches: list[Touch | None] = []
        runs: list[tuple[str, str]] = []  # (customer, "journey|key") of each enrolment in args
        records = {} if records is None else records
        for customer, trigger, at, facts in events:
            at = aware(at, "at").astimezone(self.tz)
            for j in self.journeys.values():
                if only is not None and j.id not in only:
                    continue
                if not trigger_matches(j, trigger, facts) or not self._in_segment(j, customer, at, facts, records):
                    continue
                anchor = anchor_for(j, at, facts)
                if anchor is None:
                    continue
                key = str(facts.get("key", ""))
                first: Step | None = j.steps[0]
                greet = None
                if (welcome and first is not None and first.kind == "welcome" and not first.wait and not first.at
                        and not first.window):
                    greet = touch_for(j, first, customer, anchor, self.tz, since=at, key=key)
                    first = j.after(first.id)
                ref = Ref(j.id, first.id if first else "", customer, _ts(anchor), _ts(at), key)
                member = ref.member() if first else ""
                score = _ts(step_due(first, anchor, self.tz)) if first else 0
                args += [ref.enrolment(), ref.anchor, member, score]
                touches.append(greet)
                runs.append((customer, f"{j.id}|{key}"))
        if not args:
            return [], []
        added: list[str] = []
        greets: list[Touch] = []
        by_shard: dict[int, list[int]] = {}  # shard -> the enrolments (indexes into runs) of its customers
        for n, (customer, _) in enumerate(runs):
            by_shard.setdefault(self.shards.of(customer), []).append(n)
        for shard, ns in by_shard.items():
            keys = [sharded(k, shard) for k in (DUE, ENROLLED, PENDING, INFLIGHT)]
            for i in range(0, len(ns), 1000):
                chunk = ns[i:i + 1000]
                flags = self._enrol(keys=keys, args=[a for n in chunk for a in args[4 * n:4 * n + 4]])
                with self.r.pipeline(transaction=False) as p:
                    for n, flag in zip(chunk, flags, strict=True):
                        if flag:
                            added.append(args[4 * n])
                            if (g := touches[n]) is not None:
                                greets.append(g)
                            customer, run = runs[n]
                            # The customer's own index of their runs (what `sop plan` reads), a stop of the last
                            # one gone.
                            p.hset(HIST % customer, f"e:{run}", args[4 * n + 1])
                            p.hdel(HIST % customer, f"s:{run}")
                    p.execute()
        if added:
            self.r.hincrby(COUNTERS, "enrolled", len(added))
        return added, greets

    def _in_segment(self, j: Journey, customer: str, at: datetime, facts: dict[str, Any],
                    records: dict[str, CustomerFacts]) -> bool:
        seg = j.segment
        if not (seg.lifecycle or seg.tags or seg.min_value is not None):
            return True
        rec = records.get(customer) or records.setdefault(customer, self.customers.get(customer))
        return self._matches(j, rec, at, facts.get("value"))

    def _matches(self, j: Journey, rec: CustomerFacts, at: datetime, value: float | None) -> bool:
        first = from_ts(rec.first_seen, self.tz) if rec.first_seen else None
        last = from_ts(rec.last_inbound, self.tz) if rec.last_inbound else None
        return segment_matches(j.segment, lifecycle(first, last, at), set(rec.tags), value)

    # --- replies to steps ------------------------------------------------------------------------

    def offer_replies(self, touch: Mapping[str, Any], at: datetime) -> bool:
        """A touch reached the customer over kf at `at`: if its step declares replies, its question is open
        for the step's replies_for_hours (a later step with replies replaces it). True when newly opened."""
        j = self.journeys.get(str(touch.get("journey", "")))
        step = j.step(str(touch.get("step", ""))) if j else None
        if j is None or step is None or not step.replies:
            return False
        return self.offers.offer(str(touch["customer"]), j.id, step.id, str(touch["touch_id"]), step.replies,
                                 at.timestamp(), step.replies_for_hours)

    def answer(self, customer: str, msgid: str, text: str, at: datetime,
               offer: Mapping[str, str] | None = None) -> Answer | None:
        """The option customer message `msgid` chooses of their open question (closing it), if any; `offer`: the
        question's hash when the caller read it already (HGETALL of offer_key)."""
        return self.offers.answer(customer, msgid, text, at.timestamp(), offer)

    @staticmethod
    def offer_key(customer: str) -> str:
        """The hash of the customer's open question."""
        return OFFER % customer

    # --- scans ----------------------------------------------------------------------------------

    def scan_calendar(self, now: datetime, customers: Iterable[CustomerFacts] | None = None) -> int:
        """Enrol today's calendar broadcasts (segment members) and birthdays; idempotent within the day."""
        local = now.astimezone(self.tz)
        midnight = wall(local.date(), time(0), self.tz)
        cal = [j for j in self.journeys.values() if j.enabled and j.trigger.type == "calendar" and (
            (j.trigger.monthday and j.trigger.monthday == local.day) or local.weekday() in j.trigger.weekdays)]
        n = 0
        if cal:
            only = {j.id for j in cal}
            for chunk in _chunks(customers if customers is not None else self.customers.all(), 1000):
                records = {rec.id: rec for rec in chunk}
                events: list[tuple[str, str, datetime, dict[str, Any]]] = [
                    (rec.id, "calendar", midnight, {}) for rec in chunk]
                n += len(self._enroll(events, records=records, only=only)[0])
        born = self.r.smembers(BIRTHDAYS % local.strftime("%m-%d"))
        n += self.enroll_many((c, "birthday", midnight, {}) for c in born)
        return n

    def scan_silence(self, now: datetime, customers: Iterable[CustomerFacts] | None = None,
                     lookback: timedelta = timedelta(days=1)) -> int:
        """Enrol customers whose silence reached a journey's N days within `lookback` (run it at least daily)."""
        sil = sorted((j for j in self.journeys.values() if j.enabled and j.trigger.type == "silence"),
                     key=lambda j: j.trigger.days or 0)
        if not sil:
            return 0
        n = 0
        for chunk in _chunks(customers if customers is not None else self.customers.all(), 1000):
            events: list[tuple[str, str, datetime, dict[str, Any]]] = []
            for rec in chunk:
                last = max(rec.last_inbound, rec.first_seen)
                for j in sil if last else ():
                    at = from_ts(last, self.tz) + timedelta(days=j.trigger.days or 0)
                    if now - lookback <= at <= now:
                        events.append((rec.id, "silence", at, {"days": j.trigger.days}))
            n += len(self._enroll(events, records={rec.id: rec for rec in chunk})[0])
        return n

    def scan_coupons(self, now: datetime, book: Any, horizon: timedelta = timedelta(days=1)) -> int:
        """Enrol reminders for unredeemed coupons (CouponBook.expiring_between) expiring soon enough."""
        hours = [j.trigger.remind_before_hours or 0 for j in self.journeys.values()
                 if j.enabled and j.trigger.type == "coupon_issued"]
        if not hours:
            return 0
        coupons = book.expiring_between(now, now + timedelta(hours=max(hours)) + horizon)
        return self.enroll_many((c.customer, "coupon_issued", c.issued_at,
                                 {"expires_at": c.expires_at, "campaign": c.campaign, "key": c.code})
                                for c in coupons)

    def set_birthday(self, customer: str, birthday: date) -> None:
        """Remember a birthday (WeCom has none: collect it via form, CRM or CLI)."""
        for key in self.r.scan_iter(match=BIRTHDAYS % "*"):
            self.r.srem(key, customer)
        self.r.sadd(BIRTHDAYS % birthday.strftime("%m-%d"), customer)

    # --- history --------------------------------------------------------------------------------

    def note_customer_message(self, customer: str, at: datetime, defer: Defer | None = None) -> None:
        """The customer wrote: replied-stops and the ignored counts key off this time. `defer(script, keys, args)`
        takes the script call to send with a later round trip (bot/records/later.call) instead of now."""
        keys, args = [HIST % customer], [at.timestamp()]
        if defer is not None:
            defer(self._last_in, keys, args)
        else:
            self._last_in(keys=keys, args=args)

    def note_fact(self, customer: str, fact: str, at: datetime) -> None:
        """A stop fact: purchased, redeemed, handed_off, contact_deleted or unsubscribed."""
        if fact not in FACTS:
            raise ValueError(f"unknown fact {fact!r} (expected one of {', '.join(FACTS)})")
        self.r.hset(HIST % customer, fact, at.timestamp())

    def note_sent(self, customer: str, touch: Touch | Mapping[str, Any], at: datetime, channel: str = "manual") -> None:
        """A touch reached the customer outside tick's own count: a staff member sent the reminded material
        ("manual"), or the fast-path welcome ("welcome"). Tick already counts the entries it emits as "send"."""
        h = self.history(customer)
        h.record(channel, at, _kind_of(touch), self.tz)
        with self.r.pipeline(transaction=False) as p:
            self._write(p, customer, h, {channel}, at)
            p.execute()

    def note_failed(self, customer: str, touch: Touch | Mapping[str, Any], at: datetime, channel: str) -> None:
        """A "send" entry could not be delivered (kf 95001/95002, mass task fail_list/41048): give the slot back."""
        local = at.astimezone(self.tz)
        kind = _kind_of(touch)
        key = HIST % customer
        with self.r.pipeline(transaction=False) as p:
            p.hincrby(key, f"d:{local.date().isoformat()}", -1)
            if channel == "mass_task":
                p.hincrby(key, f"m:{month_key(local)}", -1)
            p.execute()
        h = self.history(customer)
        if h.ignored.get(kind):
            h.ignored[kind] -= 1
            self.r.hset(key, f"i:{kind}", f"{self._last_in_ts(h)}:{h.ignored[kind]}")

    def history(self, customer: str) -> History:
        """The History plan.decide needs, from the customer record and the SOP history hash."""
        return self._history(self.customers.get(customer), self.r.hgetall(HIST % customer))

    def _history(self, rec: CustomerFacts, hist: dict[str, str]) -> History:
        return _history_of(rec, hist, self.tz)

    @staticmethod
    def _last_in_ts(h: History) -> str:
        return str(int(h.last_customer_message.timestamp())) if h.last_customer_message else "0"

    def _write(self, p: Any, customer: str, h: History, channels: set[str], now: datetime) -> None:
        """Persist the counters `record` changed (today's count, this month's tasks, kf since, ignored)."""
        key = HIST % customer
        local = now.astimezone(self.tz)
        today = local.date()
        li = self._last_in_ts(h)
        fields: dict[str, Any] = {f"d:{today.isoformat()}": h.sent_by_day.get(today, 0)}
        if "mass_task" in channels:
            fields[f"m:{month_key(local)}"] = h.mass_by_month.get(month_key(local), 0)
        if "kf" in channels:
            fields[f"k:{li}"] = h.bot_since
        fields.update({f"i:{k}": f"{li}:{n}" for k, n in h.ignored.items()})
        p.hset(key, mapping=fields)
        stale = [f"d:{d.isoformat()}" for d in h.sent_by_day if d < today - timedelta(days=1)]
        stale += [f"m:{m}" for m in h.mass_by_month if m < month_key(local)]
        if stale:
            p.hdel(key, *stale)

    # --- tick -----------------------------------------------------------------------------------

    def tick(self, now: datetime, batch: int = 200) -> TickResult:
        """Claim up to `batch` due touches over the shards, from a rotating first one (leased, so a crash
        re-delivers them), decide, emit, reschedule."""
        res = TickResult()
        shards = list(self.shards.all())
        start, self._next = self._next, (self._next + 1) % len(shards)
        for shard in shards[start:] + shards[:start]:
            if res.claimed >= batch:
                break
            res.add(self._tick(shard, now, batch - res.claimed))
        return res

    def release_claims(self, now: datetime) -> int:
        """End every in-flight lease now (a scheduler that takes over: the claims are a dead holder's), so the
        next tick claims those touches again at once instead of after `lease`; the inbox dedupes a second emit."""
        return sum(int(self._release(keys=[sharded(INFLIGHT, shard)], args=[_ts(now)])) for shard in self.shards.all())

    def _tick(self, shard: int, now: datetime, batch: int) -> TickResult:
        """Tick one shard."""
        res = TickResult()
        due_key, inflight, enrolled, pending_key, held_key = (
            sharded(k, shard) for k in (DUE, INFLIGHT, ENROLLED, PENDING, HELD))
        members = self._claim(keys=[due_key, inflight], args=[_ts(now), _ts(now + self.lease), batch])
        if not members:
            return res
        res.claimed = len(members)
        refs = [Ref.parse(m) for m in members]
        customers = sorted({ref.customer for ref in refs})
        records = self.customers.many(customers)
        with self.r.pipeline(transaction=False) as p:
            for c in customers:
                p.hgetall(HIST % c)
            p.hmget(enrolled, [ref.enrolment() for ref in refs])
            p.hmget(pending_key, [ref.enrolment() for ref in refs])
            p.hgetall(PAUSED)
            raw = p.execute()
        hists = {c: self._history(records[c], raw[i]) for i, c in enumerate(customers)}
        live = dict(zip(members, raw[-3], strict=True))
        pointers = dict(zip(members, raw[-2], strict=True))
        stopped_journeys = raw[-1]  # paused by an operator: due touches wait, unsent, until resume
        moved: dict[str, str] = {}  # enrolment -> the member of its next pending step
        ended: list[str] = []  # enrolments whose run has no pending step any more
        work: list[tuple[str, Ref, Touch | None, str]] = []
        for m, ref in zip(members, refs, strict=True):
            touch, why = self._touch(ref, now, live[m])
            work.append((m, ref, touch, why))
        work.sort(key=lambda w: (w[1].customer, -(w[2].priority if w[2] else 0), w[2].due if w[2] else now))
        items: list[tuple[str, str]] = []
        counts: Counter = Counter()
        skips: list[dict[str, Any]] = []
        touched: dict[str, set[str]] = {}
        nexts: dict[str, int] = {}
        defers: dict[str, int] = {}
        held: list[str] = []
        with self.r.pipeline(transaction=False) as p:
            for m, ref, touch, why in work:
                if ref.journey in stopped_journeys:
                    defers[m] = _ts(now + PAUSE_RECHECK)
                    held.append(m)
                    continue
                mine = pointers[m] in (m, None)  # this member is its enrolment's pending step (None: older data)
                if touch is None:
                    if pointers[m] == m:
                        ended.append(ref.enrolment())
                    counts.update(["skipped", f"skipped:{why}"])
                    skips.append({"customer": ref.customer, "journey": ref.journey, "step": ref.step, "reason": why})
                    continue
                h = hists[ref.customer]
                d = decide(touch, h, now, self.rules, self.tz)
                outcome = {"send": "sent", "defer": "deferred", "skip": "skipped", "remind": "reminded"}[d.decision]
                counts.update([outcome, f"{outcome}:{d.channel if outcome == 'sent' else d.reason}",
                               f"j:{touch.journey}:{outcome}"])
                if d.decision in ("send", "remind"):
                    items.append(("touch:" + touch.touch_id, self._entry(touch, d)))
                if d.decision == "send":
                    h.record(d.channel, now, touch.kind, self.tz)
                    touched.setdefault(ref.customer, set()).add(d.channel)
                if d.decision == "defer":
                    defers[m] = _ts(d.at)
                    continue
                if d.decision == "skip":
                    skips.append({"customer": ref.customer, "journey": ref.journey, "step": ref.step,
                                  "reason": d.reason})
                    if d.reason.startswith("ignored:"):
                        p.hsetnx(HIST % ref.customer, f"f:{touch.kind}", now.isoformat())
                    if d.reason.startswith("stopped:"):
                        p.hset(HIST % ref.customer, f"s:{ref.journey}|{ref.key}", json.dumps(
                            {"reason": d.reason.partition(":")[2], "step": touch.step, "at": now.isoformat()}))
                        if pointers[m] == m:
                            ended.append(ref.enrolment())
                        continue
                nxt = self._chain(nexts, ref, touch.step, now)
                if nxt is not None and mine:
                    moved[ref.enrolment()] = nxt
                elif nxt is None and pointers[m] == m:
                    ended.append(ref.enrolment())
            if nexts:
                p.zadd(due_key, nexts, nx=True)
            if moved:
                p.hset(pending_key, mapping=moved)
            if ended:
                p.hdel(pending_key, *ended)
            if defers:
                p.zadd(due_key, defers)
            if held:
                p.sadd(held_key, *held)
            for c, channels in touched.items():
                self._write(p, c, hists[c], channels, now)
            for s in skips:
                p.xadd(SKIPS, {k: str(v) for k, v in s.items()}, maxlen=SKIPS_MAX, approximate=True)
            for name, n in counts.items():
                p.hincrby(COUNTERS, name, n)
            # Emit before releasing the lease: a crash in between re-delivers; the inbox dedupes on touch_id.
            res.emitted = self.emit(items, EMIT_TTL) if items else 0
            p.zrem(inflight, *members)
            p.execute()
        for name in ("sent", "deferred", "skipped", "reminded"):
            setattr(res, name, counts[name])
        res.deferred += len(held)
        res.reasons = Counter({k: v for k, v in counts.items() if ":" in k and not k.startswith("j:")})
        return res

    def _touch(self, ref: Ref, now: datetime, live_anchor: str | None) -> tuple[Touch | None, str]:
        """Rebuild a pending touch from the current journey version (by step id), or say why not."""
        j = self.journeys.get(ref.journey)
        if j is None or not j.enabled:
            return None, "journey_removed"
        if live_anchor is not None and int(live_anchor) > ref.anchor:
            return None, "superseded"
        anchor = from_ts(ref.anchor, self.tz)
        since = from_ts(ref.since, self.tz)
        step = j.step(ref.step)
        if step is None:
            # The step was removed in a new version: continue with the first step not yet due.
            step = next((s for s in j.steps if step_due(s, anchor, self.tz) >= now), None)
            if step is None:
                return None, "step_removed"
        return touch_for(j, step, ref.customer, anchor, self.tz, since=since, key=ref.key), ""

    def _chain(self, nexts: dict[str, int], ref: Ref, step: str, now: datetime) -> str | None:
        """Schedule the journey's next step after `step` (in the current version); its member, if any."""
        j = self.journeys.get(ref.journey)
        nxt = j.after(step) if j else None
        if nxt is None:
            return None
        anchor = from_ts(ref.anchor, self.tz)
        member = Ref(ref.journey, nxt.id, ref.customer, ref.anchor, ref.since, ref.key).member()
        nexts[member] = max(_ts(step_due(nxt, anchor, self.tz)), _ts(now))
        return member

    def _entry(self, touch: Touch, d: Decision) -> str:
        """The inbox entry the worker executes."""
        return json.dumps({**touch.to_json(), "channel": d.channel, "decision": d.decision, "reason": d.reason,
                           "at": d.at.isoformat()}, ensure_ascii=False, separators=(",", ":"))

    # --- numbers --------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Outcome counters: sent, sent:<channel>, deferred:<reason>, skipped:<reason>, reminded:<reason>..."""
        return {k: int(v) for k, v in self.r.hgetall(COUNTERS).items()}

    def pending(self) -> dict[str, int]:
        """Touches waiting and in flight."""
        return pending_counts(self.r)

    def fatigued(self, customers: Iterable[str] | None = None) -> dict[str, str]:
        """customer|kind -> when that kind was stopped after being ignored in a row (for the operator): kept in
        each customer's SOP history (no key grows with the customers); without `customers`, every history
        is scanned, and the old shared hash read too."""
        found = dict(self.r.hgetall(FATIGUED))  # written before the stop marks moved into the histories
        keys = [HIST % c for c in customers] if customers is not None else \
            list(self.r.scan_iter(match=HIST % "*", count=1000))
        with self.r.pipeline(transaction=False) as p:
            for key in keys:
                p.hgetall(key)
            histories = p.execute() if keys else []
        head, _, tail = HIST.partition("%s")
        for key, h in zip(keys, histories, strict=True):
            customer = key[len(head):len(key) - len(tail)]
            found.update({f"{customer}|{f[2:]}": at for f, at in h.items() if f.startswith("f:")})
        return found


def shards(r: redis.Redis) -> range:
    """Every shard of the SOP keys, as recorded (for readers without an Engine)."""
    return Shards(r, SHARDS).all()


def pending_counts(r: redis.Redis) -> dict[str, int]:
    """Touches waiting and in flight, over every shard."""
    with r.pipeline(transaction=False) as p:
        for shard in shards(r):
            p.zcard(sharded(DUE, shard)).zcard(sharded(INFLIGHT, shard))
        counts = p.execute()
    return {"due": sum(counts[0::2]), "inflight": sum(counts[1::2])}


def due_until(r: redis.Redis, end: datetime) -> list[tuple[str, float]]:
    """(member, due time) of every pending step due by `end`, over every shard."""
    return [(m, score) for shard in shards(r)
            for m, score in r.zrangebyscore(sharded(DUE, shard), "-inf", end.timestamp(), withscores=True)]


def pause(r: redis.Redis, journey: str, by: str, at: datetime) -> bool:
    """Pause a journey: tick defers its due touches (unsent, re-checked every PAUSE_RECHECK) until resume.
    False when it was already paused."""
    return bool(r.hsetnx(PAUSED, journey, json.dumps({"by": by, "at": aware(at, "at").isoformat()})))


def resume(r: redis.Redis, journey: str, at: datetime) -> int | None:
    """Resume a paused journey: the touches tick held for it are due again at `at`. None when it was not paused,
    else how many touches were held."""
    if not r.hdel(PAUSED, journey):
        return None
    n = 0
    for shard in shards(r):
        held = sharded(HELD, shard)
        mine = [m for m in r.sscan_iter(held, match=f"{journey}|*", count=1000)]
        if mine:
            with r.pipeline(transaction=True) as p:  # one shard's keys: one slot
                p.zadd(sharded(DUE, shard), {m: _ts(at) for m in mine}, xx=True)  # only those still pending
                p.srem(held, *mine)
                p.execute()
        n += len(mine)
    return n


def paused(r: redis.Redis) -> dict[str, dict[str, str]]:
    """Paused journeys: id -> {by, at}."""
    return {j: json.loads(v) for j, v in r.hgetall(PAUSED).items()}


def _history_of(rec: CustomerFacts, hist: dict[str, str], tz: ZoneInfo) -> History:
    """The History plan.decide needs, from the customer record and the SOP history hash."""
    last = max(rec.last_inbound, float(hist.get("last_in", 0)))
    last_in = from_ts(last, tz) if last else None
    li = str(int(last))
    ignored: dict[str, int] = {}
    for f, v in hist.items():
        if f.startswith("i:"):
            base, _, n = v.partition(":")
            if base == li:
                ignored[f[2:]] = int(n)

    def at(name: str) -> datetime | None:
        return from_ts(float(hist[name]), tz) if name in hist else None

    return History(
        sent_by_day={date.fromisoformat(f[2:]): int(v) for f, v in hist.items() if f.startswith("d:")},
        last_customer_message=last_in,
        bot_since=max(rec.sent_since_inbound, int(hist.get(f"k:{li}", 0))),
        mass_by_month={f[2:]: int(v) for f, v in hist.items() if f.startswith("m:")},
        ignored=ignored, purchased_at=at("purchased"), redeemed_at=at("redeemed"),
        handed_off_at=at("handed_off"),
        unsubscribed=rec.unsubscribed or "unsubscribed" in hist, deleted="contact_deleted" in hist)


# --- what the engine holds for one customer (sop plan, the console's plan) ------------------------------------


@dataclass(frozen=True, slots=True)
class PendingTouch:
    """A step the engine holds in Redis for a customer, with what tick would decide at its due time now."""

    journey: str
    step: str
    kind: str
    due: datetime  # local
    channel: str  # kf | mass_task | staff, as the history stands now
    decision: str  # send | defer | remind | skip
    reason: str
    state: str  # due | inflight (a tick holds it right now)
    touch_id: str

    def to_json(self) -> dict[str, Any]:
        """The keys of one entry of `sop plan --json --pending`'s "pending" list."""
        return {"journey": self.journey, "step": self.step, "kind": self.kind, "due": self.due.isoformat(),
                "channel": self.channel, "decision": self.decision, "reason": self.reason, "state": self.state,
                "touch_id": self.touch_id}


@dataclass(frozen=True, slots=True)
class StoppedRun:
    """A journey run the engine stopped (or will skip at its pending step's due time) for a customer, and why."""

    journey: str
    step: str  # the step that was (or will be) skipped
    reason: str  # the stop fact: handed_off, purchased, redeemed, replied, unsubscribed, contact_deleted
    at: datetime | None  # when tick stopped it (None: the pending step is skipped when it comes due)

    def to_json(self) -> dict[str, Any]:
        """The keys of one entry of `sop plan --json --pending`'s "stopped" list."""
        return {"journey": self.journey, "step": self.step, "reason": self.reason,
                "at": self.at.isoformat() if self.at else None}


@dataclass(frozen=True, slots=True)
class EngineState:
    """What the engine holds for one customer: pending steps, stopped runs, the anchors of its enrolments."""

    pending: list[PendingTouch]
    stopped: list[StoppedRun]
    anchors: dict[str, datetime]  # journey id -> anchor of the customer's (keyless) enrolment
    history: History
    birthday: date | None


def birthday_of(r: redis.Redis, customer: str) -> date | None:
    """The birthday Engine.set_birthday stored (in leap year 2000), if any."""
    for key in r.scan_iter(match=BIRTHDAYS % "*"):
        if r.sismember(key, customer):
            month, _, day = str(key).rsplit(":", 1)[1].partition("-")
            return date(2000, int(month), int(day))
    return None


def engine_state(r: redis.Redis, journeys: Iterable[Journey], rules: Rules, tz: ZoneInfo, customers: CustomerReader,
                 customer: str, now: datetime) -> EngineState:
    """Read what the engine holds for `customer`: each pending step (journey, step, due, channel and tick's
    decision as the history stands at `now`), each stopped run and why. Steps are found through the customer's
    enrolment index (e: fields of their history hash) and PENDING, so this costs one customer, not the due set."""
    by_id = {j.id: j for j in journeys}
    now = aware(now, "now").astimezone(tz)
    hist = r.hgetall(HIST % customer)
    stopped_by_operator = paused(r)
    h = _history_of(customers.get(customer), hist, tz)
    runs = sorted(f[2:] for f in hist if f.startswith("e:"))
    refs = [Ref(run.partition("|")[0], "", customer, 0, 0, run.partition("|")[2]) for run in runs]
    shard = Shards(r, SHARDS).of(customer)
    pointers = r.hmget(sharded(PENDING, shard), [ref.enrolment() for ref in refs]) if refs else []
    members = [m for m in pointers if m]
    with r.pipeline(transaction=False) as p:
        for m in members:
            p.zscore(sharded(DUE, shard), m)
            p.zscore(sharded(INFLIGHT, shard), m)
        scores = p.execute()
    pending: list[PendingTouch] = []
    stopped: list[StoppedRun] = []
    held: set[str] = set()
    for n, m in enumerate(members):
        due_at, lease = scores[2 * n], scores[2 * n + 1]
        if due_at is None and lease is None:
            continue
        ref = Ref.parse(m)
        j = by_id.get(ref.journey)
        step = j.step(ref.step) if j else None
        if j is None or step is None:
            continue
        held.add(f"{ref.journey}|{ref.key}")
        anchor = from_ts(ref.anchor, tz)
        touch = touch_for(j, step, customer, anchor, tz, since=from_ts(ref.since, tz), key=ref.key)
        due = from_ts(due_at, tz) if due_at is not None else touch.due
        d = decide(touch, h, max(due, now), rules, tz)
        if ref.journey in stopped_by_operator:
            d = dataclasses.replace(d, decision="defer", reason="paused")
        if d.decision == "skip" and d.reason.startswith("stopped:"):
            stopped.append(StoppedRun(ref.journey, ref.step, d.reason.partition(":")[2], None))
            continue
        pending.append(PendingTouch(ref.journey, ref.step, step.kind, due, d.channel, d.decision, d.reason,
                                    "due" if due_at is not None else "inflight", touch.touch_id))
    for run in runs:
        if run in held or f"s:{run}" not in hist:
            continue
        info = json.loads(hist[f"s:{run}"])
        stopped.append(StoppedRun(run.partition("|")[0], str(info.get("step", "")), str(info.get("reason", "")),
                                  datetime.fromisoformat(info["at"]).astimezone(tz) if info.get("at") else None))
    if h.unsubscribed or h.deleted:  # every journey, pending or not
        stopped.append(StoppedRun("*", "", "unsubscribed" if h.unsubscribed else "contact_deleted", None))
    anchors = {run.partition("|")[0]: from_ts(float(hist[f"e:{run}"]), tz) for run in runs if run.endswith("|")}
    pending.sort(key=lambda t: (t.due, t.journey, t.step))
    stopped.sort(key=lambda s: (s.journey, s.step))
    return EngineState(pending, stopped, anchors, h, birthday_of(r, customer))
