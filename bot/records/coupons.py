"""The coupon book: atomic, idempotent issuing and redemption of coupon codes in Redis."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast
from zoneinfo import ZoneInfo

import redis

from bot.content.campaigns import (
    DEFAULT_EXHAUSTED_REPLY,
    INELIGIBLE_REPLY,
    LIMIT_REPLY,
    Campaign,
    describe_value,
    local_time,
)
from bot.times import DEFAULT_TZ, aware
from sop.variants import HOLDOUT, Experiment

__all__ = ["Coupon", "CouponBook", "IssueResult", "RedeemResult", "normalize_code"]

# No 0/O/1/I/L: codes are read aloud and typed by hand. 31**8 ≈ 8.5e11 codes.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_ATTEMPTS = 8
CAUSE_TTL = 7 * 24 * 3600  # seconds a message id is remembered for replays


CouponStatus = Literal["issued", "redeemed", "expired"]


@dataclass(frozen=True, slots=True)
class Coupon:
    """One issued coupon code."""

    code: str
    campaign: str
    customer: str
    issued_at: datetime
    expires_at: datetime
    cause_msgid: str
    status: CouponStatus
    redeemed_at: datetime | None = None
    order_id: str | None = None
    variant: str | None = None  # the campaign's variant this coupon is of (an A/B experiment)


class Assigner(Protocol):
    """Which arm of an experiment a customer is in (bot.records.experiments.Experiments)."""

    def assign(self, experiment: Experiment, customer: str, at: datetime, arm: str | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class IssueResult:
    """Outcome of asking for a coupon."""

    status: Literal["issued", "existing", "exhausted", "ineligible", "holdout"]
    coupon: Coupon | None = None
    # issued/existing: the coupon's campaign; exhausted: the first eligible campaign out of codes;
    # ineligible: the first campaign whose per-customer limit is used up, or None if none applies;
    # holdout: the campaign whose experiment keeps this customer without a coupon.
    campaign: Campaign | None = None

    @property
    def handoff(self) -> bool:
        """Whether a human should take over (exhausted campaign configured with on_exhausted: handoff)."""
        return self.status == "exhausted" and self.campaign is not None and self.campaign.on_exhausted == "handoff"


@dataclass(frozen=True, slots=True)
class RedeemResult:
    """Outcome of redeeming a code."""

    status: Literal["redeemed", "already", "unknown", "expired"]
    coupon: Coupon | None = None

    @property
    def redeemed_at(self) -> datetime | None:
        """When the code was (first) redeemed."""
        return self.coupon.redeemed_at if self.coupon else None



def normalize_code(code: str) -> str:
    """What a customer typed -> a code: upper case, no spaces or dashes."""
    return re.sub(r"[\s\-_]", "", code).upper()


# ---------------------------------------------------------------------------------------------
# Redis

PREFIX = "wecom:coupon"

# KEYS: issued counter, customer's codes (zset by expiry), redeemed set, cause key, new code hash,
# expiry zset. ARGV: budget, per_customer, now_ts, exp_ts, code, customer, cause, campaign,
# issued_at iso, expires_at iso, cause ttl, variant ('' for none).
ISSUE_LUA = """
local cause = redis.call('GET', KEYS[4])
if cause then return {'issued', cause} end
local held = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[3], '+inf')
for _, code in ipairs(held) do
  if redis.call('SISMEMBER', KEYS[3], code) == 0 then return {'existing', code} end
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return {'limit', ''} end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return {'exhausted', ''} end
if redis.call('EXISTS', KEYS[5]) == 1 then return {'collision', ''} end
redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[5], 'code', ARGV[5], 'campaign', ARGV[8], 'customer', ARGV[6],
  'issued_at', ARGV[9], 'expires_at', ARGV[10], 'exp', ARGV[4], 'cause_msgid', ARGV[7], 'status', 'issued')
if ARGV[12] ~= '' then redis.call('HSET', KEYS[5], 'variant', ARGV[12]) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[5])
redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[11])
return {'issued', ARGV[5]}
"""

# KEYS: code hash, expiry zset, redeemed set. ARGV: code, now_ts, now iso, order id ('' for none).
REDEEM_LUA = """
local h = redis.call('HMGET', KEYS[1], 'status', 'exp')
if not h[1] then return 'unknown' end
if h[1] == 'redeemed' then return 'already' end
if tonumber(h[2]) <= tonumber(ARGV[2]) then return 'expired' end
redis.call('HSET', KEYS[1], 'status', 'redeemed', 'redeemed_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'order_id', ARGV[4]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 'redeemed'
"""


def _key(campaign: str, *parts: str) -> str:
    """A key in the campaign's Redis Cluster slot ({campaign} is the hash tag)."""
    return ":".join((PREFIX, "{" + campaign + "}", *parts))




class CouponBook:
    """Issues, records and redeems coupon codes for a list of campaigns."""

    def __init__(self, redis_client: redis.Redis, campaigns: Iterable[Campaign], tz: ZoneInfo = DEFAULT_TZ,
                 experiments: Assigner | None = None) -> None:
        self.r = redis_client
        self.experiments = experiments  # where A/B arms are recorded (None: variants and holdouts are not run)
        self.campaigns = tuple(campaigns)
        self.by_name = {c.name: c for c in self.campaigns}
        self.tz = tz
        self._issue = self.r.register_script(ISSUE_LUA)
        self._redeem = self.r.register_script(REDEEM_LUA)

    # -- issuing ---------------------------------------------------------------------------

    def issue(self, customer: str, cause_msgid: str, now: datetime, *, is_new: bool = False,
              tags: Iterable[str] = (), campaign: str | None = None) -> IssueResult:
        """Give `customer` a coupon (or the one they hold); replaying `cause_msgid` gives the same result.

        Without `campaign` (a chat request) the campaigns offered in chat are walked in order; with it
        (an SOP step) only that campaign is considered, eligibility rules aside."""
        aware(now)
        if not customer or not cause_msgid:
            raise ValueError("customer and cause_msgid must be non-empty")
        cause_key = f"{PREFIX}:cause:{customer}:{cause_msgid}"
        replayed = self._replayed(cause_key, now)
        if replayed is not None:
            return replayed
        result = self._decide(customer, cause_msgid, now, is_new, frozenset(tags), campaign)
        return self._remember(cause_key, result, now)

    def _decide(self, customer: str, cause: str, now: datetime, is_new: bool, tags: frozenset[str],
                only: str | None = None) -> IssueResult:
        """Walk the eligible campaigns in order: held coupon first, then the first with budget."""
        if only is not None:
            eligible = [c for c in self.campaigns if c.name == only and c.open_at(now)]
        else:
            eligible = [c for c in self.campaigns if c.in_chat and c.open_at(now) and c.admits(is_new, tags)]
        if not eligible:
            return IssueResult("ineligible")
        held = self._held(customer, eligible, now)
        if held is not None:
            self._held_arm(held)
            return IssueResult("issued" if held.cause_msgid == cause else "existing", held, self.by_name[held.campaign])
        exhausted: Campaign | None = None
        limited: Campaign | None = None
        for campaign in eligible:
            why = self._room(campaign, customer) if self._runs(campaign) else None
            if why is None:
                arm = self._arm(campaign, customer, now)
                if arm == HOLDOUT:  # the experiment's untouched group: no coupon, and no other campaign's either
                    return IssueResult("holdout", None, campaign)
                outcome, coupon = self._try(campaign.arm(arm), customer, cause, now)
                if coupon is not None:
                    return IssueResult("issued" if outcome == "issued" else "existing", coupon, campaign)
                why = outcome
            if why == "exhausted":
                exhausted = exhausted or campaign
            else:
                limited = limited or campaign
        if exhausted is not None:
            return IssueResult("exhausted", None, exhausted)
        return IssueResult("ineligible", None, limited)

    def holds_out(self, name: str, customer: str, now: datetime) -> bool:
        """Whether a step's coupon of `name` is withheld: holdout, and a coupon otherwise (arm recorded, as `issue`)."""
        aware(now)
        campaign = self.by_name.get(name)
        if campaign is None or not self._runs(campaign) or not campaign.open_at(now):
            return False
        held = self._held(customer, [campaign], now)
        if held is not None:
            self._held_arm(held)
            return False
        return self._room(campaign, customer) is None and self._arm(campaign, customer, now) == HOLDOUT

    def _runs(self, campaign: Campaign) -> bool:
        """Whether the campaign's experiment is run (it declares one, and arms are recorded)."""
        return campaign.experiment is not None and self.experiments is not None

    def _room(self, campaign: Campaign, customer: str) -> str | None:
        """Why `customer` would get no new coupon of `campaign` in any arm ("limit", "exhausted"), else None."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(_key(campaign.name, "cust", customer))
        pipe.get(_key(campaign.name, "issued"))
        held, issued = pipe.execute()
        if held >= campaign.per_customer:
            return "limit"
        return "exhausted" if int(issued or 0) >= campaign.budget else None

    def _arm(self, campaign: Campaign, customer: str, now: datetime) -> str | None:
        """The customer's arm of the campaign's experiment (None without one), recorded from `now` if it is not."""
        if campaign.experiment is None or self.experiments is None:
            return None
        return self.experiments.assign(campaign.experiment, customer, now)

    def _held_arm(self, coupon: Coupon) -> None:
        """Record the arm of a held variant coupon, if it is not (a crash between issuing and recording it)."""
        campaign = self.by_name.get(coupon.campaign)
        if coupon.variant and campaign is not None and campaign.experiment is not None and self.experiments:
            self.experiments.assign(campaign.experiment, coupon.customer, coupon.issued_at, coupon.variant)

    def _held(self, customer: str, campaigns: list[Campaign], now: datetime) -> Coupon | None:
        """The customer's first unexpired, unredeemed coupon among `campaigns`."""
        for campaign in campaigns:
            codes = self.r.zrangebyscore(_key(campaign.name, "cust", customer), f"({now.timestamp()!r}", "+inf")
            for coupon in self._load(campaign.name, codes, now):
                if coupon.status == "issued":
                    return coupon
        return None

    def _try(self, campaign: Campaign, customer: str, cause: str, now: datetime) -> tuple[str, Coupon | None]:
        """Run the issue script for one campaign; retries on the (rare) code collision."""
        expires_at = campaign.expiry_for(now)
        for _ in range(CODE_ATTEMPTS):
            code = self._reserve(campaign.name)
            keys = [_key(campaign.name, "issued"), _key(campaign.name, "cust", customer),
                    _key(campaign.name, "redeemed"), _key(campaign.name, "cause", customer, cause),
                    _key(campaign.name, "code", code), _key(campaign.name, "expiry")]
            args = [campaign.budget, campaign.per_customer, repr(now.timestamp()), repr(expires_at.timestamp()),
                    code, customer, cause, campaign.name, now.isoformat(), expires_at.isoformat(), CAUSE_TTL,
                    campaign.variant or ""]
            outcome, got = self._issue(keys=keys, args=args)
            if got != code:
                self.r.delete(f"{PREFIX}:code:{code}")
            if outcome in ("issued", "existing"):
                return outcome, self._load_one(campaign.name, got, now)
            if outcome != "collision":
                return outcome, None
        raise RuntimeError(f"could not allocate a unique coupon code for {campaign.name}")

    def _reserve(self, campaign: str) -> str:
        """A fresh code, registered globally (code -> campaign) so codes are unique across campaigns."""
        for _ in range(CODE_ATTEMPTS):
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if self.r.set(f"{PREFIX}:code:{code}", campaign, nx=True):
                return code
        raise RuntimeError("could not reserve a unique coupon code")

    def _remember(self, cause_key: str, result: IssueResult, now: datetime) -> IssueResult:
        """Record the result for a message; if a concurrent replay recorded first, return that one."""
        record = {"status": result.status, "campaign": result.campaign.name if result.campaign else None,
                  "code": result.coupon.code if result.coupon else None}
        if self.r.set(cause_key, json.dumps(record), nx=True, ex=CAUSE_TTL):
            return result
        return self._replayed(cause_key, now) or result

    def _replayed(self, cause_key: str, now: datetime) -> IssueResult | None:
        """The recorded result of an earlier call for the same customer and message id."""
        raw = self.r.get(cause_key)
        if raw is None:
            return None
        record = json.loads(raw)
        coupon = self.get(record["code"], now=now) if record["code"] else None
        return IssueResult(record["status"], coupon, self.by_name.get(record["campaign"] or ""))

    # -- redeeming and reading -------------------------------------------------------------

    def redeem(self, code: str, now: datetime, order_id: str | None = None) -> RedeemResult:
        """Mark a code used; redeeming again answers 'already' with the first redemption."""
        aware(now)
        code = normalize_code(code)
        campaign = self.r.get(f"{PREFIX}:code:{code}") if code else None
        if campaign is None:
            return RedeemResult("unknown")
        keys = [_key(campaign, "code", code), _key(campaign, "expiry"), _key(campaign, "redeemed")]
        status = self._redeem(keys=keys, args=[code, repr(now.timestamp()), now.isoformat(), order_id or ""])
        return RedeemResult(status, self._load_one(campaign, code, now) if status != "unknown" else None)

    def get(self, code: str, *, now: datetime | None = None) -> Coupon | None:
        """The coupon with this code (status as of `now`, default the current time)."""
        code = normalize_code(code)
        campaign = self.r.get(f"{PREFIX}:code:{code}") if code else None
        return self._load_one(campaign, code, self._now(now)) if campaign else None

    def coupons_of(self, customer: str, *, now: datetime | None = None) -> list[Coupon]:
        """All coupons ever issued to `customer` by the configured campaigns, oldest first."""
        now = self._now(now)
        out: list[Coupon] = []
        for campaign in self.campaigns:
            out += self._load(campaign.name, self.r.zrange(_key(campaign.name, "cust", customer), 0, -1), now)
        return sorted(out, key=lambda c: (c.issued_at, c.code))

    def expiring_between(self, start: datetime, end: datetime) -> list[Coupon]:
        """Unredeemed coupons expiring in [start, end), soonest first (for reminder SOPs)."""
        aware(start, "start")
        aware(end, "end")
        out: list[Coupon] = []
        for campaign in self.campaigns:
            codes = self.r.zrangebyscore(_key(campaign.name, "expiry"), repr(start.timestamp()), f"({end.timestamp()!r}")
            out += self._load(campaign.name, codes, start)
        return sorted(out, key=lambda c: (c.expires_at, c.code))

    def stats(self, now: datetime) -> list[dict[str, Any]]:
        """Per campaign: budget, issued, remaining, redeemed, expired (unredeemed past expiry at `now`)."""
        aware(now)
        pipe = self.r.pipeline(transaction=False)
        for c in self.campaigns:
            pipe.get(_key(c.name, "issued"))
            pipe.scard(_key(c.name, "redeemed"))
            pipe.zcount(_key(c.name, "expiry"), "-inf", repr(now.timestamp()))
        values = pipe.execute()
        out = []
        for i, c in enumerate(self.campaigns):
            issued, redeemed, expired = int(values[3 * i] or 0), values[3 * i + 1], values[3 * i + 2]
            out.append({"campaign": c.name, "budget": c.budget, "issued": issued,
                        "remaining": max(0, c.budget - issued), "redeemed": redeemed, "expired": expired})
        return out

    def _load(self, campaign: str, codes: list[str], now: datetime) -> list[Coupon]:
        """Coupons for codes of one campaign (missing hashes are skipped)."""
        pipe = self.r.pipeline(transaction=False)
        for code in codes:
            pipe.hgetall(_key(campaign, "code", code))
        return [self._coupon(h, now) for h in pipe.execute() if h] if codes else []

    def _load_one(self, campaign: str, code: str, now: datetime) -> Coupon | None:
        """One coupon of a campaign, or None."""
        found = self._load(campaign, [code], now)
        return found[0] if found else None

    def _coupon(self, h: dict[str, str], now: datetime) -> Coupon:
        """A coupon from its Redis hash, times in the book's timezone."""
        expires_at = self._time(h["expires_at"])
        status = cast(CouponStatus, h["status"])  # written by ISSUE_LUA / REDEEM_LUA
        if status == "issued" and expires_at <= now:
            status = "expired"
        return Coupon(code=h["code"], campaign=h["campaign"], customer=h["customer"],
                      issued_at=self._time(h["issued_at"]), expires_at=expires_at, cause_msgid=h["cause_msgid"],
                      status=status, redeemed_at=self._time(h["redeemed_at"]) if h.get("redeemed_at") else None,
                      order_id=h.get("order_id"), variant=h.get("variant") or None)

    def _time(self, iso: str) -> datetime:
        """A stored ISO time in the book's timezone."""
        return datetime.fromisoformat(iso).astimezone(self.tz)

    def _now(self, now: datetime | None) -> datetime:
        """`now` checked, or the current time."""
        return datetime.now(self.tz) if now is None else aware(now)

    # -- replies ---------------------------------------------------------------------------

    def reply_text(self, result: IssueResult) -> str:
        """The Chinese reply to the customer for an issue result."""
        campaign, coupon = result.campaign, result.coupon
        if result.status == "holdout" and campaign:
            return campaign.holdout_reply
        if result.status in ("issued", "existing") and campaign and coupon:
            campaign = campaign.arm(coupon.variant)
            template = campaign.again_reply if result.status == "existing" else campaign.reply
            return template.format(code=coupon.code, value=describe_value(campaign), title=campaign.title,
                                   expires=local_time(coupon.expires_at, self.tz, coupon.issued_at))
        if result.status == "exhausted" and campaign:
            return campaign.exhausted_reply
        if result.status == "ineligible" and campaign:
            return LIMIT_REPLY.format(title=campaign.title, limit=campaign.per_customer)
        if result.status == "exhausted":
            return DEFAULT_EXHAUSTED_REPLY
        return INELIGIBLE_REPLY
