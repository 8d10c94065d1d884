"""Handoff records in Redis: open, claim, first human reply, close, SLA escalation, numbers.

Each handoff also gets a short number of its local day (#1, #2, ... from the day's first handoff, in the
book's timezone), which staff read on the card and type on a phone (`接待 12`); the long id still works.

Escalation ladder (the caller sends the alerts; this module keeps the record and the clock):
  level 0  the assigned consultant gets the alert card when the handoff opens (off hours: at
           `queued_until`, see `due_for_alert`);
  level 1  unclaimed or unanswered `sla_seconds` after the start -> the consultant's backup;
  level 2  still unanswered one more `sla_seconds` later -> the consultant's supervisor;
  level 3  still unanswered one more `sla_seconds` later -> the team group robot; the ladder ends.
A level with nobody configured is recorded with the next target (the caller decides) and still
pushes the deadline, so the ladder never stalls. The SLA clock starts at `created_at`, or at
`queued_until` (start of the next working period) for off-hours handoffs.

Redis keys (the {...} hash tag keeps each Lua script's keys in one cluster slot):
  wecom:handoff:{<id>}                   hash, one handoff
  wecom:handoff:open:{<customer>}        id of the customer's handoff that is not closed
  wecom:handoff:cause:{<customer>}:<msgid>  id opened for that message (replays), 7 days
  wecom:handoff:owner:{<customer>}       userid who served the customer last
  wecom:handoff:due / queued / active / all   sorted sets: next deadline, off-hours alert time,
                                          not closed (by creation), every handoff (by creation)
  wecom:handoff:day:{<yymmdd>}           counter of the day's numbers (INCR at open), NUMBER_TTL
  wecom:handoff:day:{<yymmdd>}:ids       hash number -> id, NUMBER_TTL
"""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import redis

from bot.records import later
from bot.records.store import DeleteIf
from bot.times import DEFAULT_TZ, aware

__all__ = ["DEFAULT_TZ", "MAX_LEVEL", "ClaimResult", "Escalation", "Handoff", "Handoffs"]

PREFIX = "wecom:handoff"
DUE, QUEUED, ACTIVE, ALL = (f"{PREFIX}:{k}" for k in ("due", "queued", "active", "all"))
CAUSE_TTL = 7 * 24 * 3600
OWNER_TTL = 365 * 24 * 3600
RETENTION = 180 * 24 * 3600  # closed handoffs are kept this long (stats window)
NUMBER_TTL = 8 * 24 * 3600  # a day's numbers are kept a little longer than they are looked up
LOOKUP_DAYS = 7  # `接待 12`: today's #12, else the newest of the last 7 days that is still open
MAX_LEVEL = 3  # 1 backup, 2 supervisor, 3 team robot
LIVE = ("open", "claimed")  # states that still wait for a human reply

State = Literal["open", "claimed", "answered", "closed"]
ClaimStatus = Literal["claimed", "already_yours", "taken_by_other", "unknown", "closed"]

# KEYS: cause, open pointer. ARGV: new id, cause ttl.
OPEN_LUA = """
local got = redis.call('GET', KEYS[1])
if got then return {'cause', got} end
local cur = redis.call('GET', KEYS[2])
if cur then
  redis.call('SET', KEYS[1], cur, 'EX', ARGV[2])
  return {'open', cur}
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'new', ARGV[1]}
"""

# KEYS: handoff hash. ARGV: field, value, field, value, ...
CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: handoff hash. ARGV: userid, now iso.
CLAIM_LUA = """
local h = redis.call('HMGET', KEYS[1], 'state', 'claimed_by')
if not h[1] then return {'unknown', ''} end
local by = h[2] or ''
if h[1] == 'closed' then return {'closed', by} end
if by ~= '' then
  if by == ARGV[1] then return {'already_yours', by} end
  return {'taken_by_other', by}
end
redis.call('HSET', KEYS[1], 'claimed_by', ARGV[1], 'claimed_at', ARGV[2])
if h[1] == 'open' then redis.call('HSET', KEYS[1], 'state', 'claimed') end
return {'claimed', ARGV[1]}
"""

# KEYS: handoff hash. ARGV: servicer, at iso. A reply also claims an unclaimed handoff.
FIRST_REPLY_LUA = """
local h = redis.call('HMGET', KEYS[1], 'state', 'claimed_by', 'first_reply_at')
if not h[1] then return 'unknown' end
if h[1] == 'closed' then return 'closed' end
if h[3] and h[3] ~= '' then return 'already' end
redis.call('HSET', KEYS[1], 'first_reply_at', ARGV[2], 'first_reply_by', ARGV[1], 'state', 'answered')
if not h[2] or h[2] == '' then redis.call('HSET', KEYS[1], 'claimed_by', ARGV[1], 'claimed_at', ARGV[2]) end
return 'answered'
"""

# KEYS: handoff hash. ARGV: at iso, reason, retention seconds.
CLOSE_LUA = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'unknown' end
if st == 'closed' then return 'already' end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', ARGV[1], 'close_reason', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'closed'
"""


# KEYS: handoff hash. ARGV: level, to, at iso. One record per level.
ESCALATE_LUA = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'unknown' end
if st ~= 'open' and st ~= 'claimed' then return 'skipped' end
local esc = cjson.decode(redis.call('HGET', KEYS[1], 'escalations') or '[]')
for _, e in ipairs(esc) do
  if tonumber(e['level']) == tonumber(ARGV[1]) then return 'already' end
end
table.insert(esc, {level = tonumber(ARGV[1]), to = ARGV[2], at = ARGV[3]})
redis.call('HSET', KEYS[1], 'escalations', cjson.encode(esc))
return 'recorded'
"""

# KEYS: handoff hash. ARGV: task_id, response_code, to, card json.
SET_CARD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cards = cjson.decode(redis.call('HGET', KEYS[1], 'cards') or '[]')
for _, c in ipairs(cards) do
  if c['task_id'] == ARGV[1] then return 1 end
end
table.insert(cards, cjson.decode(ARGV[4]))
redis.call('HSET', KEYS[1], 'cards', cjson.encode(cards))
if (redis.call('HGET', KEYS[1], 'task_id') or '') == '' then
  redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'response_code', ARGV[2])
end
return 1
"""

# KEYS: handoff hash. ARGV: number, day. The first number given to a handoff stays (a race wastes one).
NUMBER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local no = redis.call('HGET', KEYS[1], 'no')
if no and no ~= '' and no ~= '0' then return tonumber(no) end
redis.call('HSET', KEYS[1], 'no', ARGV[1], 'day', ARGV[2])
return tonumber(ARGV[1])
"""

# KEYS: handoff hash. ARGV: userid. Hand an unanswered handoff to someone else (releases a claim).
REASSIGN_LUA = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'open' and st ~= 'claimed' then return 0 end
redis.call('HSET', KEYS[1], 'consultant', ARGV[1], 'state', 'open', 'claimed_by', '', 'claimed_at', '')
return 1
"""


def _hkey(hid: str) -> str:
    """The hash of one handoff."""
    return f"{PREFIX}:{{{hid}}}"


def _ckey(kind: str, customer: str, *rest: str) -> str:
    """A per-customer key in the customer's slot."""
    return ":".join((PREFIX, kind, "{" + customer + "}", *rest))


def _dkey(day: str, *rest: str) -> str:
    """A key of one local day's numbers, in the day's slot."""
    return ":".join((PREFIX, "day", "{" + day + "}", *rest))


@dataclass(frozen=True, slots=True)
class Escalation:
    """One rung of the ladder: level 1 backup, 2 supervisor, 3 team robot."""

    level: int
    to: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Handoff:
    """One handoff of a customer to a human."""

    id: str
    customer: str
    open_kfid: str
    intent: str
    matched: tuple[str, ...]
    text: str
    consultant: str | None
    state: State
    created_at: datetime
    claimed_at: datetime | None
    claimed_by: str | None
    first_reply_at: datetime | None
    closed_at: datetime | None
    escalations: tuple[Escalation, ...]
    task_id: str | None
    response_code: str | None
    sla_seconds: int
    off_hours: bool
    queued_until: datetime | None
    cause_msgid: str = ""
    first_reply_by: str | None = None
    close_reason: str | None = None
    cards: tuple[dict[str, Any], ...] = ()  # every alert card sent: {task_id, response_code, to, at}
    no: int = 0  # the number of its local day (0: opened before numbers existed)
    day: str = ""  # that day, yymmdd in the book's timezone

    @property
    def ref(self) -> str:
        """How staff name it: '#12', or the id when it has no number."""
        return f"#{self.no}" if self.no else self.id

    @property
    def sla_start(self) -> datetime:
        """When the SLA clock starts: creation, or the start of working hours for off-hours handoffs."""
        if self.queued_until and self.queued_until > self.created_at:
            return self.queued_until
        return self.created_at

    @property
    def deadline(self) -> datetime:
        """When the first human reply is due."""
        return self.sla_start + timedelta(seconds=self.sla_seconds)

    @property
    def level(self) -> int:
        """Highest escalation level reached (0 = none)."""
        return max((e.level for e in self.escalations), default=0)

    @property
    def holder(self) -> str | None:
        """Who has the customer: the replier, else the claimer, else the assigned consultant."""
        return self.first_reply_by or self.claimed_by or self.consultant


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Outcome of a claim; `handoff` is None only for unknown ids."""

    status: ClaimStatus
    handoff: Handoff | None = None


class Handoffs:
    """The handoff book in Redis (decode_responses=True client)."""

    def __init__(self, r: redis.Redis, tz: ZoneInfo = DEFAULT_TZ) -> None:
        self.r = r
        self.tz = tz
        self._open = r.register_script(OPEN_LUA)
        self._create = r.register_script(CREATE_LUA)
        self._claim = r.register_script(CLAIM_LUA)
        self._first = r.register_script(FIRST_REPLY_LUA)
        self._close = r.register_script(CLOSE_LUA)
        self._del_if = DeleteIf(r)
        self._escalate = r.register_script(ESCALATE_LUA)
        self._set_card = r.register_script(SET_CARD_LUA)
        self._reassign = r.register_script(REASSIGN_LUA)
        self._set_number = r.register_script(NUMBER_LUA)

    # -- writing ---------------------------------------------------------------------------

    def open(self, customer: str, open_kfid: str, intent: str, matched: Iterable[str], text: str,
             consultant: str | None, sla_seconds: int, now: datetime, cause_msgid: str, *,
             off_hours: bool = False, queued_until: datetime | None = None) -> Handoff:
        """Open a handoff, or return the customer's open one (same message or not).

        Replaying `cause_msgid` returns the same handoff; while one is not closed, a new request
        returns that one (compare `cause_msgid` to tell). `queued_until`: off hours, when the
        alert is due and the SLA clock starts.
        """
        aware(now)
        if not customer or not cause_msgid:
            raise ValueError("customer and cause_msgid must be non-empty")
        if queued_until is not None:
            aware(queued_until, "queued_until")
        for _ in range(3):
            new_id = f"{now.astimezone(self.tz):%y%m%d}{secrets.token_hex(5)}"
            how, hid = self._open(keys=[_ckey("cause", customer, cause_msgid), _ckey("open", customer)],
                                  args=[new_id, CAUSE_TTL])
            later.forget(self.r, _ckey("open", customer))
            existing = self.get(hid)
            if how == "open" and existing is not None and existing.state == "closed":  # unfinished close
                self._del_if(_ckey("open", customer), hid)
                self.r.delete(_ckey("cause", customer, cause_msgid))
                continue
            if existing is None:  # new, or a pointer left by a crash before the hash was written
                fields = self._fields(hid, customer, open_kfid, intent, tuple(matched), text, consultant,
                                      sla_seconds, now, cause_msgid, off_hours, queued_until)
                self._create(keys=[_hkey(hid)], args=[x for kv in fields.items() for x in kv])
                existing = self.get(hid)
            if existing is None:
                raise RuntimeError(f"handoff {hid} vanished while it was opened")
            if not existing.no and existing.state != "closed":  # new, or numbering cut short by a crash
                existing = self._number(existing)
            self._index(existing, now)
            return existing
        raise RuntimeError(f"could not open a handoff for {customer}")

    def _fields(self, hid: str, customer: str, open_kfid: str, intent: str, matched: tuple[str, ...], text: str,
                consultant: str | None, sla_seconds: int, now: datetime, cause: str, off_hours: bool,
                queued_until: datetime | None) -> dict[str, str]:
        """The hash fields of a new handoff."""
        return {"id": hid, "customer": customer, "open_kfid": open_kfid or "", "intent": intent,
                "matched": json.dumps(list(matched), ensure_ascii=False), "text": text or "",
                "consultant": consultant or "", "state": "open", "created_at": now.isoformat(),
                "sla_seconds": str(int(sla_seconds)), "off_hours": "1" if off_hours else "0",
                "queued_until": queued_until.isoformat() if queued_until else "", "cause_msgid": cause,
                "escalations": "[]", "cards": "[]"}

    def _number(self, h: Handoff) -> Handoff:
        """Give the handoff the next number of its local day (atomic INCR; the number -> id map is written
        first, so a lookup only trusts it when the handoff carries that number)."""
        day = self.day_of(h.created_at)
        counter, ids = _dkey(day), _dkey(day, "ids")
        with self.r.pipeline() as p:  # one slot: the day's
            p.incr(counter).expire(counter, NUMBER_TTL)
            no = int(p.execute()[0])
            p.hset(ids, str(no), h.id).expire(ids, NUMBER_TTL)
            p.execute()
        self._set_number(keys=[_hkey(h.id)], args=[no, day])
        return self.get(h.id) or h

    def day_of(self, moment: datetime) -> str:
        """The local day (yymmdd) that numbers a handoff opened at `moment`."""
        return f"{aware(moment).astimezone(self.tz):%y%m%d}"

    def _index(self, h: Handoff, now: datetime) -> None:
        """Add a handoff to the sorted sets (idempotent; safe to repeat after a crash)."""
        created = h.created_at.timestamp()
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(ALL, {h.id: created}, nx=True)
        if h.state != "closed":
            pipe.zadd(ACTIVE, {h.id: created}, nx=True)
        if h.state in LIVE and h.first_reply_at is None:
            pipe.zadd(DUE, {h.id: h.deadline.timestamp()}, nx=True)
            if h.queued_until and not h.task_id:
                pipe.zadd(QUEUED, {h.id: h.queued_until.timestamp()}, nx=True)
        pipe.zremrangebyscore(ALL, "-inf", f"({now.timestamp() - RETENTION!r}")
        pipe.execute()

    def claim(self, hid: str, userid: str, now: datetime) -> ClaimResult:
        """Claim atomically: the first claimer wins; others learn who has it."""
        aware(now)
        status, _ = self._claim(keys=[_hkey(hid)], args=[userid, now.isoformat()])
        return ClaimResult(status, self.get(hid))

    def set_card(self, hid: str, task_id: str, response_code: str | None, to: str | None = None,
                 at: datetime | None = None) -> Handoff | None:
        """Record an alert card sent for the handoff (the first one is the primary card); `at`, when it was
        sent, tells whether its response_code (single-use, 72 h) can still update it."""
        card = {"task_id": task_id, "response_code": response_code or "", "to": to or "",
                "at": aware(at, "at").isoformat() if at else ""}
        if not self._set_card(keys=[_hkey(hid)], args=[task_id, response_code or "", to or "", json.dumps(card)]):
            return None
        self.r.zrem(QUEUED, hid)
        return self.get(hid)

    def reassign(self, hid: str, userid: str, now: datetime) -> Handoff | None:
        """Give an unanswered handoff to another consultant (e.g. 转给同事, or 95019); None if too late."""
        aware(now)
        if not self._reassign(keys=[_hkey(hid)], args=[userid]):
            return None
        return self.get(hid)

    def first_reply(self, customer: str, servicer: str, at: datetime) -> Handoff | None:
        """Record the first human reply (kf origin 5) to the customer's open handoff; stops the SLA clock."""
        aware(at, "at")
        h = self.open_for(customer)
        # send_time has 1 s resolution: allow a reply stamped in the same second as the handoff
        if h is None or at < h.created_at - timedelta(seconds=1):
            return None
        status = self._first(keys=[_hkey(h.id)], args=[servicer, at.isoformat()])
        if status == "answered":
            pipe = self.r.pipeline(transaction=False)
            pipe.zrem(DUE, h.id)
            pipe.zrem(QUEUED, h.id)
            pipe.set(_ckey("owner", customer), servicer, ex=OWNER_TTL)
            pipe.execute()
        return self.get(h.id)

    def close(self, customer: str, at: datetime, reason: str) -> Handoff | None:
        """Close the customer's open handoff (session ended, state 4, idle, staff); None if none."""
        h = self.open_for(customer)
        return self.close_id(h.id, at, reason) if h else None

    def close_id(self, hid: str, at: datetime, reason: str) -> Handoff | None:
        """Close a handoff by id (staff command); closing twice keeps the first close."""
        aware(at, "at")
        status = self._close(keys=[_hkey(hid)], args=[at.isoformat(), reason, RETENTION])
        if status == "unknown":
            return None
        h = self.get(hid)
        if h is None:
            return None
        self._del_if(_ckey("open", h.customer), hid)
        later.forget(self.r, _ckey("open", h.customer))
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(DUE, hid)
        pipe.zrem(QUEUED, hid)
        pipe.zrem(ACTIVE, hid)
        if status == "closed" and h.holder and (h.first_reply_by or h.claimed_by):
            pipe.set(_ckey("owner", h.customer), h.first_reply_by or h.claimed_by, ex=OWNER_TTL)
        pipe.execute()
        return h

    def escalate(self, hid: str, level: int, to: str, now: datetime,
                 next_in: timedelta | None = None) -> Handoff | None:
        """Record an escalation step and push the next deadline (`next_in`, default the SLA).

        Repeating a level records nothing new. After level MAX_LEVEL the handoff leaves the
        deadline set. Returns None for unknown handoffs.
        """
        aware(now)
        if not 1 <= level <= MAX_LEVEL:
            raise ValueError(f"level must be 1..{MAX_LEVEL}")
        status = self._escalate(keys=[_hkey(hid)], args=[level, to, now.isoformat()])
        h = self.get(hid)
        if h is None:
            return None
        if status == "skipped" or level >= MAX_LEVEL:
            self.r.zrem(DUE, hid)
        elif status == "recorded":
            step = next_in if next_in is not None else timedelta(seconds=h.sla_seconds)
            self.r.zadd(DUE, {hid: (now + step).timestamp()}, xx=True)  # xx: not if answered meanwhile
        return h

    def postpone(self, hid: str, until: datetime) -> None:
        """Move the next escalation deadline (e.g. nobody is at work until `until`)."""
        self.r.zadd(DUE, {hid: aware(until, "until").timestamp()}, xx=True)

    # -- reading ---------------------------------------------------------------------------

    def get(self, hid: str | None) -> Handoff | None:
        """One handoff by id."""
        if not hid:
            return None
        data = self.r.hgetall(_hkey(hid))
        return self._handoff(data) if data.get("id") else None

    def _many(self, ids: list[str]) -> list[Handoff]:
        """Handoffs for ids, in order; missing ones skipped."""
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for hid in ids:
            pipe.hgetall(_hkey(hid))
        return [self._handoff(d) for d in pipe.execute() if d.get("id")]

    def find(self, ref: str, now: datetime) -> Handoff | None:
        """The handoff staff mean by `ref`: its long id, or a day's number ('12', '#12'): today's, else the
        newest of the past week with that number that is not closed, else the newest closed one."""
        ref = ref.strip().lstrip("#＃")
        if not (ref.isascii() and ref.isdigit() and len(ref) <= 6):
            return self.get(ref)
        no = int(ref)
        today = aware(now).astimezone(self.tz)
        days = [self.day_of(today - timedelta(days=i)) for i in range(LOOKUP_DAYS)]
        pipe = self.r.pipeline(transaction=False)
        for day in days:
            pipe.hget(_dkey(day, "ids"), str(no))
        found = [h for day, h in zip(days, (self.get(hid) for hid in pipe.execute()), strict=True)
                 if h is not None and h.no == no and h.day == day]
        live = [h for h in found if h.state != "closed"]
        return live[0] if live else (found[0] if found else None)

    def open_for(self, customer: str) -> Handoff | None:
        """The customer's handoff that is not closed, or None."""
        h = self.get(later.get(self.r, _ckey("open", customer)))
        return h if h is not None and h.state != "closed" else None

    def ahead(self, customer: str) -> list[str]:
        """The keys open_for reads first (for later.ahead)."""
        return [_ckey("open", customer)]

    def owner_of(self, customer: str) -> str | None:
        """Userid of the human who served the customer last, or None."""
        return self.r.get(_ckey("owner", customer))

    def due_for_escalation(self, now: datetime) -> list[Handoff]:
        """Unclaimed or unanswered handoffs past their current deadline, earliest first."""
        aware(now)
        ids = self.r.zrangebyscore(DUE, "-inf", repr(now.timestamp()))
        out: list[Handoff] = []
        stale: list[Handoff] = []
        for h in self._many(ids):
            (out if h.state in LIVE and h.first_reply_at is None else stale).append(h)
        missing = set(ids) - {h.id for h in out} - {h.id for h in stale}
        if stale or missing:
            self.r.zrem(DUE, *({h.id for h in stale} | missing))
        return out

    def due_for_alert(self, now: datetime) -> list[Handoff]:
        """Off-hours handoffs whose first alert is due (queued_until reached, no card yet)."""
        aware(now)
        ids = self.r.zrangebyscore(QUEUED, "-inf", repr(now.timestamp()))
        return [h for h in self._many(ids) if h.state in LIVE and not h.task_id]

    def load(self) -> dict[str, int]:
        """Handoffs not closed per userid who holds them (replier, claimer or assigned)."""
        out: dict[str, int] = {}
        for h in self._many(self.r.zrange(ACTIVE, 0, -1)):
            if h.state != "closed" and h.holder:
                out[h.holder] = out.get(h.holder, 0) + 1
        return out

    def list(self, state: State | Literal["active"] | None = None, limit: int | None = None) -> list[Handoff]:
        """Handoffs, newest first, optionally of one state ("active": every one not closed)."""
        key = ACTIVE if state in ("open", "claimed", "answered", "active") else ALL
        if state == "active":
            state = None
        found = [h for h in self._many(self.r.zrevrange(key, 0, -1)) if state is None or h.state == state]
        return found[:limit] if limit is not None else found

    def created_between(self, since: datetime, now: datetime) -> builtins.list[Handoff]:
        """Every handoff opened from `since` to `now` (closed ones are kept RETENTION)."""
        aware(now)
        aware(since, "since")
        return self._many(self.r.zrangebyscore(ALL, repr(since.timestamp()), repr(now.timestamp())))

    # -- decoding --------------------------------------------------------------------------

    def _at(self, value: str) -> datetime:
        """A stored ISO time that is always there, in the book's timezone."""
        return datetime.fromisoformat(value).astimezone(self.tz)

    def _time(self, value: str | None) -> datetime | None:
        """A stored ISO time in the book's timezone."""
        return datetime.fromisoformat(value).astimezone(self.tz) if value else None

    def _handoff(self, d: dict[str, str]) -> Handoff:
        """A Handoff from its hash."""
        escalations = tuple(Escalation(int(e["level"]), e["to"], self._at(e["at"]))
                            for e in _json_list(d.get("escalations")))
        return Handoff(
            id=d["id"], customer=d["customer"], open_kfid=d.get("open_kfid", ""), intent=d.get("intent", ""),
            matched=tuple(_json_list(d.get("matched"))), text=d.get("text", ""),
            consultant=d.get("consultant") or None, state=cast(State, d["state"]), created_at=self._at(d["created_at"]),
            claimed_at=self._time(d.get("claimed_at")), claimed_by=d.get("claimed_by") or None,
            first_reply_at=self._time(d.get("first_reply_at")), closed_at=self._time(d.get("closed_at")),
            escalations=escalations, task_id=d.get("task_id") or None, response_code=d.get("response_code") or None,
            sla_seconds=int(d.get("sla_seconds") or 0), off_hours=d.get("off_hours") == "1",
            queued_until=self._time(d.get("queued_until")), cause_msgid=d.get("cause_msgid", ""),
            first_reply_by=d.get("first_reply_by") or None, close_reason=d.get("close_reason") or None,
            cards=tuple(_json_list(d.get("cards"))), no=int(d.get("no") or 0), day=d.get("day", ""))


def _json_list(raw: str | None) -> list[Any]:
    """A JSON list field; Lua's cjson writes an empty list as {}."""
    value = json.loads(raw) if raw else []
    return value if isinstance(value, list) else []
