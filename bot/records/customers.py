"""Customer records in Redis: seen times, tags with their time, intents, opt-out, the kf reply budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.records import later
from bot.records.store import DELETE_IF
from sop.shards import Shards

# WeCom kf: at most 5 messages within 48 h after the customer's last message (platform notes §2.4).
KF_WINDOW_SECONDS = 48 * 3600
KF_MAX_REPLIES = 5

SAW = """
local new = redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[1])
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'last_inbound') or '0') then
  redis.call('HSET', KEYS[1], 'last_inbound', ARGV[1], 'last_seen', ARGV[1], 'sent_since_inbound', 0)
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'open_kfid', ARGV[2]) end
return new
"""

NAMES = "wecom:cust:names"  # customer id -> nickname, for search; shard 0 (shard i: wecom:cust:{names:i})
NAME_SHARDS = "wecom:cust:names:shards"  # the shard count in use (sop/shards.py)

RESERVE = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last_inbound') or '0')
if tonumber(ARGV[1]) - last > tonumber(ARGV[2]) then return -1 end
local sent = tonumber(redis.call('HGET', KEYS[1], 'sent_since_inbound') or '0')
if sent >= tonumber(ARGV[3]) then return -2 end
redis.call('HINCRBY', KEYS[1], 'sent_since_inbound', 1)
return sent + 1
"""


TURN_SECONDS = 60.0  # a customer's turn held by a worker that died frees itself after this long


# The customer's latest message and the fallbacks in a row, moved along atomically: a retried
# message keeps what came before it, a late older message never becomes the latest.
NOTE = """
if redis.call('HGET', KEYS[1], 'msgid') == ARGV[1] then return 0 end
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if tonumber(ARGV[3]) < at then return 0 end
local fallbacks = tonumber(redis.call('HGET', KEYS[1], 'fallbacks') or '0')
local now = 0
if ARGV[4] == '1' then now = fallbacks + 1 end
redis.call('HSET', KEYS[1], 'prev_text', redis.call('HGET', KEYS[1], 'text') or '', 'prev_at', at,
           'prev_fallbacks', fallbacks, 'msgid', ARGV[1], 'text', ARGV[2], 'at', ARGV[3], 'fallbacks', now)
redis.call('EXPIRE', KEYS[1], 2592000)
return 1
"""


def _key(customer: str) -> str:
    return f"wecom:cust:{{{customer}}}"


def _names(shard: int) -> str:
    """One shard of the nickname index (shard 0 keeps the unsharded name, so an upgrade loses nothing)."""
    return NAMES if shard == 0 else f"wecom:cust:{{names:{shard}}}"


@dataclass(frozen=True, slots=True)
class Customer:
    """What we know of one customer."""

    id: str
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_inbound: float = 0.0
    sent_since_inbound: int = 0
    unsubscribed: bool = False
    open_kfid: str = ""
    tags: dict[str, float] = field(default_factory=dict)
    intents: dict[str, int] = field(default_factory=dict)

    def tag_times(self, tz: ZoneInfo) -> dict[str, datetime]:
        return {t: datetime.fromtimestamp(ts, tz) for t, ts in self.tags.items()}


def _record(customer: str, h: dict[str, str], tags: dict[str, str], intents: dict[str, str]) -> Customer:
    """A Customer from its hashes."""
    return Customer(
        id=customer, first_seen=float(h.get("first_seen", 0)), last_seen=float(h.get("last_seen", 0)),
        last_inbound=float(h.get("last_inbound", 0)), sent_since_inbound=int(h.get("sent_since_inbound", 0)),
        unsubscribed=h.get("unsubscribed") == "1", open_kfid=h.get("open_kfid", ""),
        tags={k: float(v) for k, v in tags.items()}, intents={k: int(v) for k, v in intents.items()})


@dataclass(frozen=True, slots=True)
class Conversation:
    """The customer's previous message (text, time) and how many fallbacks in a row came before."""

    text: str = ""
    at: float = 0.0
    fallbacks: int = 0


class Customers:
    """Read and update customer records."""

    def __init__(self, r: redis.Redis):
        self.r = r
        self._name_shards = Shards(r, NAME_SHARDS)  # the nickname index spreads like the inbox
        self._reserve = r.register_script(RESERVE)
        self._saw = r.register_script(SAW)
        self._note = r.register_script(NOTE)
        self._end_turn = r.register_script(DELETE_IF)

    def get(self, customer: str) -> Customer:
        """The customer's record (an empty one for a customer never seen)."""
        return self.many([customer])[customer]

    def many(self, customers: Sequence[str]) -> dict[str, Customer]:
        """Several records in one round trip (after the entry's deferred writes, in it)."""
        def read(p: Any) -> None:
            for customer in customers:
                key = _key(customer)
                p.hgetall(key).hgetall(key + ":tags").hgetall(key + ":intents")

        raw = later.flush(self.r, read) if customers else []
        return {c: _record(c, *raw[3 * i:3 * i + 3]) for i, c in enumerate(customers)}

    def all(self) -> Iterator[Customer]:
        """Every customer record (SCAN over wecom:cust:{id})."""
        for key in self.r.scan_iter(match=_key("*"), count=1000):
            if key.endswith("}"):
                yield self.get(key[len(_key("")) - 1:-1])

    def first_contact(self, customer: str) -> bool:
        """True when we first learn of the customer (kf or a staff contact) — and again on a retry,
        until first_contact_done() says the new-customer work was done."""
        key = _key(customer) + ":added"
        if later.known_as(self.r, key, "done"):
            return False  # read ahead: done is for good
        was = self.r.set(key, "pending", nx=True, get=True)
        later.know(self.r, key, was or "pending")
        return was in (None, "pending")

    def held_by(self, customer: str) -> str | None:
        """Who WeCom says holds the chat (a servicer, or "queue") when no handoff of ours says so."""
        return later.get(self.r, _key(customer) + ":held")

    def hold(self, customer: str, holder: str) -> None:
        """A person (or the kf queue) has the chat: the bot stays silent until the session ends (48 h at most,
        the kf window)."""
        later.set_now(self.r, _key(customer) + ":held", holder, ex=48 * 3600)

    def release(self, customer: str) -> None:
        later.set_now(self.r, _key(customer) + ":held", None)

    def hold_welcome(self, customer: str, text: str) -> None:
        """A first contact's welcome, to open the bot's next text to this customer (one message, not two)."""
        later.set_now(self.r, _key(customer) + ":welcome", text, ex=300)

    def held_welcome(self, customer: str) -> str | None:
        return later.get(self.r, _key(customer) + ":welcome")

    def welcome_given(self, customer: str) -> None:
        key = _key(customer) + ":welcome"
        if not later.known_as(self.r, key, None):  # read ahead: no welcome held
            later.set_now(self.r, key, None)

    def is_new(self, customer: str) -> bool:
        """The new-customer work (welcome, journeys) is still to be done for this customer (reads only)."""
        return later.get(self.r, _key(customer) + ":added") != "done"

    def awaits_welcome(self, customer: str) -> bool:
        """is_new(), or a welcome held for the next text (one round trip, or none when read ahead)."""
        added, welcome = later.values(self.r, [_key(customer) + ":added", _key(customer) + ":welcome"])
        return added != "done" or welcome is not None

    def ahead(self, customer: str) -> tuple[list[str], list[str]]:
        """The keys a customer's message reads before and while it is routed (GETs, hashes): for later.ahead."""
        key = _key(customer)
        return [key + ":added", key + ":welcome", key + ":held"], [key + ":conv"]

    def claim_turn(self, customer: str, msgid: str) -> Callable[[Any], object]:
        """The command that takes the customer's turn for message `msgid` (its reply: the message whose turn it
        was, None when it was nobody's), for a round trip made anyway (later.ahead)."""
        return lambda p: p.set(_key(customer) + ":turn", msgid, nx=True, get=True, px=int(TURN_SECONDS * 1000))

    def wait_turn(self, customer: str, msgid: str, wait: float) -> bool:
        """Wait until no other message of the customer is being handled, then take the turn (True); False when
        `wait` seconds passed first (the other is slow, or its worker died: its turn expires by itself)."""
        deadline, pause = time.monotonic() + wait, 0.02
        while time.monotonic() < deadline:
            held = self.claim_turn(customer, msgid)(self.r)  # the same command, sent alone
            if held in (None, msgid):
                return True
            time.sleep(pause)
            pause = min(0.2, pause * 2)
        return False

    def end_turn(self, customer: str, msgid: str) -> None:
        """Message `msgid` is handled: the customer's next message may go (with the entry's next round trip)."""
        later.call(self.r, self._end_turn, [_key(customer) + ":turn"], [msgid])

    def first_contact_done(self, customer: str) -> None:
        later.set_now(self.r, _key(customer) + ":added", "done")

    def set_name(self, customer: str, name: str) -> None:
        """The customer's WeChat nickname, also indexed for the console's search."""
        with self.r.pipeline(transaction=False) as p:
            p.hset(_key(customer), "name", name)
            p.hset(_names(self._name_shards.of(customer)), customer, name)
            p.execute()

    def name(self, customer: str) -> str | None:
        return self.r.hget(_key(customer), "name") or None

    def find_by_name(self, query: str, limit: int = 20) -> list[str]:
        """Customer ids whose nickname contains `query`."""
        found = []
        for shard in self._name_shards.all():
            for customer, name in self.r.hscan_iter(_names(shard), count=1000):
                if query in name:
                    found.append(customer)
                    if len(found) >= limit:
                        return found
        return found

    def set_owner(self, customer: str, userid: str) -> None:
        """The staff member the customer added as a contact (sender of mass tasks)."""
        self.r.hset(_key(customer), "owner", userid)

    def owner(self, customer: str) -> str | None:
        return self.r.hget(_key(customer), "owner") or None

    def exists(self, customer: str) -> bool:
        return bool(self.r.exists(_key(customer)))

    def saw_message(self, customer: str, at: float, open_kfid: str = "") -> None:
        """A customer-initiated message: a fresh kf reply budget, unless a newer message already opened
        one (replays and late messages must not reset it). With the entry's next round trip."""
        later.call(self.r, self._saw, [_key(customer)], [at, open_kfid])

    def remember(self, customer: str, line: str, keep: int = 6) -> None:
        """Keep the last few lines of the conversation (for staff alerts)."""
        key = _key(customer) + ":recent"

        def keep_last(p: Any) -> None:
            p.rpush(key, line[:200])
            p.ltrim(key, -keep, -1)
            p.expire(key, 30 * 86400)

        later.write(self.r, keep_last)

    def recent(self, customer: str) -> list[str]:
        """The remembered lines, oldest first."""
        return self.r.lrange(_key(customer) + ":recent", 0, -1)

    def conversation(self, customer: str, msgid: str) -> Conversation:
        """What came before message `msgid`: the customer's previous text and the fallbacks in a row."""
        h = later.hgetall(self.r, _key(customer) + ":conv")
        if h.get("msgid") == msgid:  # a retried message: what came before it, not itself
            return Conversation(h.get("prev_text", ""), float(h.get("prev_at", 0)), int(h.get("prev_fallbacks", 0)))
        return Conversation(h.get("text", ""), float(h.get("at", 0)), int(h.get("fallbacks", 0)))

    def note_message(self, customer: str, msgid: str, text: str, at: float, fell_back: bool) -> None:
        """Message `msgid` is the latest; `fell_back`: the bot could only answer it with the fallback (with the
        entry's next round trip)."""
        later.call(self.r, self._note, [_key(customer) + ":conv"], [msgid, text[:200], at, "1" if fell_back else "0"])
        later.forget(self.r, _key(customer) + ":conv")

    def saw_intent(self, customer: str, intent: str) -> None:
        later.write(self.r, lambda p: p.hincrby(_key(customer) + ":intents", intent, 1))

    def tag(self, customer: str, tag: str, at: float) -> None:
        self.r.hset(_key(customer) + ":tags", tag, at)

    def set_unsubscribed(self, customer: str, value: bool = True) -> None:
        self.r.hset(_key(customer), "unsubscribed", "1" if value else "0")

    def reserve_reply(self, customer: str, now: float) -> str | None:
        """Take one slot of the kf reply budget; None when taken, else why not ('window' or 'budget')."""
        res = int(later.flush(self.r, later.Call(self._reserve, [_key(customer)],
                                                 [now, KF_WINDOW_SECONDS, KF_MAX_REPLIES]))[0])
        return {-1: "window", -2: "budget"}.get(res)

    def release_reply(self, customer: str) -> None:
        """Give back a reserved slot whose send failed in a way that will be retried."""
        self.r.eval("local n = tonumber(redis.call('HGET', KEYS[1], 'sent_since_inbound') or '0') "
                    "if n > 0 then redis.call('HINCRBY', KEYS[1], 'sent_since_inbound', -1) end return 0",
                    1, _key(customer))

    def exhaust_budget(self, customer: str) -> None:
        """WeCom said no more messages (95001/95002/msg_send_fail): stop until the customer writes."""
        self.r.hset(_key(customer), "sent_since_inbound", KF_MAX_REPLIES)
