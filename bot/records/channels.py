"""Channels in Redis: the contact ways `channels sync` made, who came from which channel, what they did."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.content.channels import DEFAULT_ATTRIBUTION_HOURS, UNKNOWN, ChannelFile
from bot.records import later
from bot.times import DEFAULT_TZ
from sop.shards import Shards

WAYS = "wecom:ch:ways"  # channel id -> JSON of its contact way on WeCom (ChannelWay)
TAG_IDS = "wecom:ch:tag_ids"  # tag name -> WeCom corp tag id (resolved by `channels sync`)
SEEN = "wecom:ch:seen"  # every channel id that has brought a customer (kept when YAML drops the channel)
CREDITS = "wecom:ch:credits"  # shard 0 of the purchases credited to a touch (see _credits)
SHARDS = "wecom:ch:shards"  # the shard count of the per-channel and credit sets (sop/shards.py)
CREDITS_DAYS = 400
OUTCOMES = ("replied", "coupon", "redeemed", "purchased", "unsubscribed", "lost")
REPLY_HOURS = 24  # "replied" counts a first message within this many hours of being added
DEFAULT_WINDOW_HOURS = DEFAULT_ATTRIBUTION_HOURS

# KEYS: the customer's channel hash. ARGV: channel, at, state. The first channel wins; every channel the
# customer comes through is kept once. Returns {first arrival at all, first arrival through this channel,
# the customer's first channel}.
ATTRIBUTE = """
local first = redis.call('HSETNX', KEYS[1], 'first', ARGV[1])
if first == 1 then
  redis.call('HSET', KEYS[1], 'first_at', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[3]) end
end
local new = redis.call('HSETNX', KEYS[1], 'via:' .. ARGV[1], ARGV[2])
return {first, new, redis.call('HGET', KEYS[1], 'first')}
"""
# KEYS: the customer's channel hash. ARGV: field, value. Only a customer attributed to a channel gets it.
SET_IF_ATTRIBUTED = """
if redis.call('HEXISTS', KEYS[1], 'first') == 1 then return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""
# KEYS: the customer's channel hash. ARGV: order amount, time. Orders of an attributed customer add up.
ADD_ORDER = """
if redis.call('HEXISTS', KEYS[1], 'first') == 0 then return -1 end
redis.call('HSETNX', KEYS[1], 'purchased', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'orders', 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'amount', ARGV[1])
return 1
"""


def _customer(customer: str) -> str:
    return f"wecom:ch:cust:{{{customer}}}"


def _members(channel: str, shard: int = 0) -> str:
    """Customers whose first channel this is, scored by when they came (one shard of them)."""
    return f"wecom:ch:members:{{{channel}}}" if shard == 0 else f"wecom:ch:members:{{{channel}:{shard}}}"


def _last(customer: str) -> str:
    """The last touch or coupon the customer got: JSON {ref, at}, kept for the attribution window."""
    return f"wecom:ch:last:{{{customer}}}"


def _also(channel: str, shard: int = 0) -> str:
    """Customers who came through this channel after another one had brought them (one shard of them)."""
    return f"wecom:ch:also:{{{channel}}}" if shard == 0 else f"wecom:ch:also:{{{channel}:{shard}}}"


def _credits(shard: int) -> str:
    """One shard of the purchases credited to a touch: "ref|amount|customer|at", scored by purchase time."""
    return CREDITS if shard == 0 else f"wecom:ch:{{credits:{shard}}}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one arrival through a code was: the customer's first arrival at all (`first`: this channel is
    theirs), their first through this channel (`new`), and the channel that brought them."""

    first: bool
    new: bool
    channel: str


@dataclass(frozen=True, slots=True)
class ChannelWay:
    """A channel's code on WeCom: the config_id of a 「联系我」 way (staff) or the kf link."""

    kind: str
    url: str
    config_id: str = ""
    fingerprint: str = ""
    synced_at: float = 0.0
    name: str = ""


@dataclass(slots=True)
class ChannelStats:
    """One channel over a period: customers it brought and what they did (each outcome once per customer)."""

    channel: str
    added: int = 0
    also: int = 0  # came again through this channel, first brought by another one
    replied: int = 0  # wrote within REPLY_HOURS of being added
    coupon: int = 0
    redeemed: int = 0
    purchased: int = 0  # customers with at least one order
    orders: int = 0
    amount: float = 0.0
    unsubscribed: int = 0
    lost: int = 0
    daily: dict[str, int] = field(default_factory=dict)  # local date -> customers added

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["amount"] = round(self.amount, 2)
        data["rates"] = {name: round(getattr(self, name) / self.added, 4) if self.added else None
                         for name in OUTCOMES}
        return data


class ChannelBook:
    """Every channel record: one owner for the wecom:ch: keys."""

    def __init__(self, r: redis.Redis, tz: ZoneInfo = DEFAULT_TZ,
                 window_hours: Callable[[], int] = lambda: DEFAULT_WINDOW_HOURS) -> None:
        self.r = r
        self.tz = tz
        self.window_hours = window_hours  # a purchase this soon after a touch or coupon is credited to it
        self._shards = Shards(r, SHARDS)  # a channel's customers spread like the inbox: no set holds them all
        self._attribute = r.register_script(ATTRIBUTE)
        self._set = r.register_script(SET_IF_ATTRIBUTED)
        self._order = r.register_script(ADD_ORDER)

    # ---- contact ways ------------------------------------------------------------------------

    def way(self, channel: str) -> ChannelWay | None:
        raw = self.r.hget(WAYS, channel)
        return ChannelWay(**json.loads(raw)) if raw else None

    def ways(self) -> dict[str, ChannelWay]:
        return {cid: ChannelWay(**json.loads(raw)) for cid, raw in sorted(self.r.hgetall(WAYS).items())}

    def save_way(self, channel: str, way: ChannelWay) -> None:
        self.r.hset(WAYS, channel, json.dumps(asdict(way), ensure_ascii=False))

    def tag_ids(self) -> dict[str, str]:
        return dict(self.r.hgetall(TAG_IDS))

    def save_tag_ids(self, ids: dict[str, str]) -> None:
        if ids:
            self.r.hset(TAG_IDS, mapping=ids)

    # ---- attribution -------------------------------------------------------------------------

    def attribute(self, customer: str, channel: str, at: float, state: str = "") -> Arrival:
        """The customer came through `channel` at `at` (the callback's time: a retry repeats it). The first
        channel wins; later ones are recorded too. `state`: what the code carried (kept for an unknown one)."""
        first, new, theirs = self._attribute(keys=[_customer(customer)], args=[channel, at, state])
        # Set members are written after the customer's hash (another slot); a retry after a crash between
        # the two writes them again, with the same scores.
        shard = self._shards.of(customer)
        if theirs == channel:
            self.r.zadd(_members(channel, shard), {customer: at}, nx=True)
            self.r.sadd(SEEN, channel)
        elif new:
            self.r.zadd(_also(channel, shard), {customer: at}, nx=True)
        return Arrival(bool(first), bool(new), str(theirs))

    def channel_of(self, customer: str) -> str | None:
        """The channel that brought the customer (None: none did)."""
        return self.r.hget(_customer(customer), "first") or None

    def note(self, customer: str, outcome: str, at: datetime, amount: float | None = None) -> None:
        """An outcome of an attributed customer (replied, coupon, redeemed, purchased, unsubscribed, lost: the
        customer deleted the staff member); the first of each kind is kept, orders add up. Others (e.g.
        contact_deleted, which a staff member's deletion also is) are ignored."""
        if outcome == "purchased":
            self._order(keys=[_customer(customer)], args=[float(amount or 0), at.timestamp()])
            self._credit(customer, at, float(amount or 0))
        elif outcome in OUTCOMES:
            later.call(self.r, self._set, [_customer(customer)], [outcome, at.timestamp()])

    # ---- what touches earned --------------------------------------------------------------------

    def touched(self, customer: str, ref: str, at: float) -> None:
        """The customer got a touch (ref "journey.step") or a coupon (ref "coupon:campaign") at `at`."""
        self.r.set(_last(customer), json.dumps({"ref": ref, "at": at}), ex=int(self.window_hours() * 3600))

    def _credit(self, customer: str, at: datetime, amount: float) -> None:
        """A purchase: credited to the customer's last touch or coupon when it came within the window before."""
        raw = self.r.get(_last(customer))
        last = json.loads(raw) if raw else None
        if not last or not 0 <= at.timestamp() - float(last["at"]) <= self.window_hours() * 3600:
            return
        key = _credits(self._shards.of(customer))
        with self.r.pipeline(transaction=False) as p:
            p.zadd(key, {f"{last['ref']}|{amount}|{customer}|{at.timestamp()}": at.timestamp()})
            p.zremrangebyscore(key, 0, at.timestamp() - CREDITS_DAYS * 86400)
            p.execute()

    def earned(self, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
        """ref -> {orders, amount} of the purchases in [start, end) credited to a touch, largest amount first."""
        out: dict[str, dict[str, float]] = {}
        for member in self._each(lambda shard: self.r.zrangebyscore(_credits(shard), start.timestamp(),
                                                                      f"({end.timestamp()}")):
            ref, amount, _ = member.split("|", 2)
            row = out.setdefault(ref, {"orders": 0, "amount": 0.0})
            row["orders"] += 1
            row["amount"] += float(amount)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["amount"]))

    def unknown_states(self) -> dict[str, int]:
        """The states no channel had, with how many customers came with each."""
        members = self._each(lambda shard: self.r.zrange(_members(UNKNOWN, shard), 0, -1))
        with self.r.pipeline(transaction=False) as p:
            for customer in members:
                p.hget(_customer(customer), "state")
            states = p.execute() if members else []
        return dict(sorted(Counter(s or "" for s in states).items()))

    # ---- numbers -----------------------------------------------------------------------------

    def stats(self, channels: Iterable[str], start: datetime, end: datetime, batch: int = 500) -> list[ChannelStats]:
        """Per channel: customers it first brought in [start, end) and what each did (outcomes at any time
        after; "replied" within REPLY_HOURS of being added)."""
        out = []
        for channel in channels:
            s = ChannelStats(channel)
            members = self._between(_members, channel, start, end, scores=True)
            s.also = len(self._between(_also, channel, start, end))
            for i in range(0, len(members), batch):
                chunk = members[i:i + batch]
                with self.r.pipeline(transaction=False) as p:
                    for customer, _ in chunk:
                        p.hgetall(_customer(customer))
                    records = p.execute()
                for (_, added_at), h in zip(chunk, records, strict=True):
                    self._count(s, float(h.get("first_at") or added_at), h, start.tzinfo)
            out.append(s)
        return out

    def _between(self, key: Callable[[str, int], str], channel: str, start: datetime, end: datetime,
                 scores: bool = False) -> list[Any]:
        """The members of a channel's sets scored in [start, end), over every shard."""
        lo, hi = start.timestamp(), f"({end.timestamp()}"
        return self._each(lambda shard: self.r.zrangebyscore(key(channel, shard), lo, hi, withscores=scores))

    def _each(self, read: Callable[[int], list[Any]]) -> list[Any]:
        """What `read(shard)` gives, over every shard."""
        return [item for shard in self._shards.all() for item in read(shard)]

    @staticmethod
    def _count(s: ChannelStats, added_at: float, h: dict[str, str], tz: tzinfo | None) -> None:
        s.added += 1
        day = datetime.fromtimestamp(added_at, tz).date().isoformat()
        s.daily[day] = s.daily.get(day, 0) + 1
        replied = float(h.get("replied") or 0)
        if replied and replied - added_at <= REPLY_HOURS * 3600:
            s.replied += 1
        for name in ("coupon", "redeemed", "purchased", "unsubscribed", "lost"):
            if h.get(name):
                setattr(s, name, getattr(s, name) + 1)
        s.orders += int(h.get("orders") or 0)
        s.amount += float(h.get("amount") or 0)

    def seen_channels(self) -> list[str]:
        """Every channel id that has brought a customer (also ones no longer in YAML)."""
        return sorted(self.r.smembers(SEEN))


def channel_stats(book: ChannelBook, current: ChannelFile | None, start: datetime, end: datetime) -> list[ChannelStats]:
    """Stats of every channel in `current` (a ChannelFile, or None), then of those no longer in it that brought
    customers (the unknown channel included)."""
    ids = [c.id for c in current.channels] if current else []
    ids += [cid for cid in book.seen_channels() if cid not in ids]
    return book.stats(ids, start, end)
