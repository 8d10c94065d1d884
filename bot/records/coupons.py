"""Coupon campaigns from YAML and an atomic, idempotent coupon book in Redis."""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import redis

from bot.times import DEFAULT_TZ, aware
from bot import yamlfile
from bot.yamlfile import ConfigError, Doc, KeyPath

__all__ = [
    "Campaign", "ConfigError", "Coupon", "CouponBook", "IssueResult", "RedeemResult",
    "DEFAULT_TZ", "DEFAULT_EXHAUSTED_REPLY", "load_campaigns", "describe_value", "normalize_code",
]

DEFAULT_EXHAUSTED_REPLY = "本期优惠券已经发完啦，顾问稍后为您争取专属优惠"
DEFAULT_REPLY = "🎁 送您一张「{title}」：{value}\n券码：{code}\n{expires} 前有效，下单时填写券码即可使用～"
EXISTING_PREFIX = "您已经领过这张券啦，还没使用哦～\n"
LIMIT_REPLY = "您已经领取过「{title}」啦，每位客户限领{limit}张。有新的优惠活动会第一时间告诉您～"
INELIGIBLE_REPLY = "暂时没有您可以领取的优惠券哦，有新的优惠活动会第一时间告诉您～"

# No 0/O/1/I/L: codes are read aloud and typed by hand. 31**8 ≈ 8.5e11 codes.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_ATTEMPTS = 8
CAUSE_TTL = 7 * 24 * 3600  # seconds a message id is remembered for replays

Shape = Literal["amount", "spend_save", "percent", "free_shipping", "gift"]
Number = int | float
SHAPES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # shape: (required keys, optional keys)
    "amount": (frozenset({"amount"}), frozenset()),
    "spend_save": (frozenset({"threshold", "amount"}), frozenset()),
    "percent": (frozenset({"pay_percent"}), frozenset({"threshold"})),
    "free_shipping": (frozenset(), frozenset({"threshold"})),
    "gift": (frozenset({"gift"}), frozenset({"threshold"})),
}
SHAPE_KEYS = frozenset({"amount", "threshold", "pay_percent", "gift"})
COMMON_KEYS = frozenset({
    "name", "title", "shape", "budget", "per_customer", "valid_hours", "valid_days", "ends_at",
    "eligible", "tags", "reply", "on_exhausted", "exhausted_reply", "in_chat",
})
ELIGIBLE = ("everyone", "new", "tag")
ON_EXHAUSTED = ("reply", "handoff")
PLACEHOLDERS = frozenset({"code", "value", "expires", "title"})
NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Campaign:
    """One coupon campaign as configured in content/coupons.yaml."""

    name: str
    title: str
    shape: Shape
    budget: int
    amount: Number | None = None  # yuan off (amount, spend_save)
    threshold: Number | None = None  # minimum spend in yuan (满X)
    pay_percent: Number | None = None  # share of the price paid: 85 = 85折 = 8.5折
    gift: str | None = None
    per_customer: int = 1
    valid_for: timedelta | None = None
    ends_at: datetime | None = None
    eligible: Literal["everyone", "new", "tag"] = "everyone"
    tags: frozenset[str] = frozenset()
    reply: str = DEFAULT_REPLY
    on_exhausted: Literal["reply", "handoff"] = "reply"
    in_chat: bool = True  # offered when a customer asks in chat; False: only SOP journeys issue it
    exhausted_reply: str = DEFAULT_EXHAUSTED_REPLY

    def admits(self, is_new: bool, tags: frozenset[str]) -> bool:
        """Whether a customer with these facts may get this campaign's coupon."""
        if self.eligible == "new":
            return is_new
        if self.eligible == "tag":
            return bool(self.tags & tags)
        return True

    def open_at(self, now: datetime) -> bool:
        """Whether the campaign still issues coupons at `now`."""
        return self.ends_at is None or now < self.ends_at

    def expiry_for(self, issued_at: datetime) -> datetime:
        """Expiry of a coupon issued at `issued_at`: the earlier of the relative and fixed ends."""
        ends = [e for e in (self.valid_for and issued_at + self.valid_for, self.ends_at) if e]
        return min(ends)


@dataclass(frozen=True, slots=True)
class Coupon:
    """One issued coupon code."""

    code: str
    campaign: str
    customer: str
    issued_at: datetime
    expires_at: datetime
    cause_msgid: str
    status: Literal["issued", "redeemed", "expired"]
    redeemed_at: datetime | None = None
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssueResult:
    """Outcome of asking for a coupon."""

    status: Literal["issued", "existing", "exhausted", "ineligible"]
    coupon: Coupon | None = None
    # issued/existing: the coupon's campaign; exhausted: the first eligible campaign out of codes;
    # ineligible: the first campaign whose per-customer limit is used up, or None if none applies.
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


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_campaigns(path: Path | str, tz: ZoneInfo = DEFAULT_TZ) -> tuple[Campaign, ...]:
    """Read and validate a coupons YAML file; naive `ends_at` values are taken in `tz`."""
    doc = yamlfile.load(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "expected a mapping with a 'campaigns' list")
    for key in doc.data:
        if key != "campaigns":
            raise doc.error((str(key),), "unknown key (expected only 'campaigns')")
    items = doc.data.get("campaigns")
    if not isinstance(items, list) or not items:
        raise doc.error(("campaigns",), "expected a non-empty list of campaigns")
    campaigns: list[Campaign] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        campaign = _campaign(doc, ("campaigns", i), item, tz)
        if campaign.name in seen:
            first = doc.line(("campaigns", seen[campaign.name], "name"))
            raise doc.error(("campaigns", i, "name"), f"duplicate campaign name {campaign.name!r} (first on line {first})")
        seen[campaign.name] = i
        campaigns.append(campaign)
    return tuple(campaigns)


def _campaign(doc: Doc, at: KeyPath, data: Any, tz: ZoneInfo) -> Campaign:
    """Validate one campaign mapping."""
    if not isinstance(data, dict):
        raise doc.error(at, "expected a mapping (name, title, shape, ...)")
    for key in data:
        if key not in COMMON_KEYS | SHAPE_KEYS:
            raise doc.error((*at, str(key)), "unknown key")
    name = _text(doc, at, data, "name", required=True)
    if not NAME_RE.fullmatch(name):
        raise doc.error((*at, "name"), "must be 1-64 characters of a-z, 0-9, '_' or '-'")
    shape = _choice(doc, at, data, "shape", tuple(SHAPES), required=True)
    fields: dict[str, Any] = {"name": name, "shape": shape, "title": _text(doc, at, data, "title", required=True)}
    fields.update(_shape_fields(doc, at, data, shape))
    fields["budget"] = _integer(doc, at, data, "budget", required=True, minimum=1)
    fields["per_customer"] = _integer(doc, at, data, "per_customer", minimum=1) or 1
    fields.update(_validity(doc, at, data, tz))
    fields.update(_eligibility(doc, at, data))
    fields["reply"] = _template(doc, at, data)
    fields["on_exhausted"] = _choice(doc, at, data, "on_exhausted", ON_EXHAUSTED) or "reply"
    fields["exhausted_reply"] = _text(doc, at, data, "exhausted_reply") or DEFAULT_EXHAUSTED_REPLY
    in_chat = data.get("in_chat", True)
    if not isinstance(in_chat, bool):
        raise doc.error((*at, "in_chat"), "must be true or false")
    fields["in_chat"] = in_chat
    return Campaign(**fields)


def _shape_fields(doc: Doc, at: KeyPath, data: dict, shape: str) -> dict[str, Any]:
    """The numbers (or gift name) of a shape; keys of other shapes are errors."""
    required, optional = SHAPES[shape]
    for key in sorted(SHAPE_KEYS & (data.keys() - required - optional)):
        raise doc.error((*at, key), f"not used by shape {shape!r}")
    out: dict[str, Any] = {}
    for key in sorted(required | optional):
        if key == "gift":
            out[key] = _text(doc, at, data, key, required=True)
        else:
            out[key] = _number(doc, at, data, key, required=key in required)
    if shape == "spend_save" and out["amount"] >= out["threshold"]:
        raise doc.error((*at, "amount"), f"must be less than threshold {_num(out['threshold'])} (满X减Y with Y < X)")
    pay = out.get("pay_percent")
    if pay is not None and not 10 <= pay <= 99:
        raise doc.error((*at, "pay_percent"),
                        "must be 10..99, the share of the price paid: 85 means 8.5折, 80 means 8折")
    return out


def _validity(doc: Doc, at: KeyPath, data: dict, tz: ZoneInfo) -> dict[str, Any]:
    """valid_hours or valid_days and/or ends_at; at least one is required."""
    hours = _number(doc, at, data, "valid_hours")
    days = _number(doc, at, data, "valid_days")
    if hours is not None and days is not None:
        raise doc.error((*at, "valid_days"), "give valid_hours or valid_days, not both")
    valid_for = timedelta(hours=hours) if hours is not None else timedelta(days=days) if days is not None else None
    ends_at = _datetime(doc, (*at, "ends_at"), data["ends_at"], tz) if "ends_at" in data else None
    if valid_for is None and ends_at is None:
        raise doc.error(at, "missing key 'valid_hours', 'valid_days' or 'ends_at'")
    return {"valid_for": valid_for, "ends_at": ends_at}


def _eligibility(doc: Doc, at: KeyPath, data: dict) -> dict[str, Any]:
    """eligible: everyone | new | tag (with tags)."""
    eligible = _choice(doc, at, data, "eligible", ELIGIBLE) or "everyone"
    tags = data.get("tags")
    if eligible != "tag":
        if tags is not None:
            raise doc.error((*at, "tags"), "only used with eligible: tag")
        return {"eligible": eligible}
    if tags is None:
        raise doc.error(at, "missing key 'tags' (required with eligible: tag)")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t.strip() for t in tags):
        raise doc.error((*at, "tags"), "expected a non-empty list of tag names")
    return {"eligible": eligible, "tags": frozenset(t.strip() for t in tags)}


def _template(doc: Doc, at: KeyPath, data: dict) -> str:
    """The reply template: only known placeholders, and it must show the code."""
    text = _text(doc, at, data, "reply")
    if text is None:
        return DEFAULT_REPLY
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise doc.error((*at, "reply"), f"bad placeholder: {exc} (write {{{{ and }}}} for literal braces)") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise doc.error((*at, "reply"), f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{code}} {{value}} {{expires}} {{title}}")
    if "code" not in names:
        raise doc.error((*at, "reply"), "must contain {code}")
    return text


def _missing(doc: Doc, at: KeyPath, key: str) -> ConfigError:
    """Error for a required key that is absent (points at the campaign's line)."""
    return doc.error(at, f"missing key {key!r}")


def _text(doc: Doc, at: KeyPath, data: dict, key: str, *, required: bool = False) -> str | None:
    """A non-empty string value."""
    if key not in data:
        if required:
            raise _missing(doc, at, key)
        return None
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise doc.error((*at, key), f"expected non-empty text, got {_kind(value)}")
    return value.strip() if key != "reply" else value.rstrip("\n")


def _choice(doc: Doc, at: KeyPath, data: dict, key: str, options: tuple[str, ...], *, required: bool = False) -> Any:
    """One of a fixed set of words."""
    if key not in data:
        if required:
            raise _missing(doc, at, key)
        return None
    value = data[key]
    if value not in options:
        raise doc.error((*at, key), f"expected one of {', '.join(options)}, got {value!r}")
    return value


def _integer(doc: Doc, at: KeyPath, data: dict, key: str, *, required: bool = False, minimum: int = 0) -> int | None:
    """A whole number >= minimum."""
    if key not in data:
        if required:
            raise _missing(doc, at, key)
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise doc.error((*at, key), f"expected a whole number, got {_kind(value)}")
    if value < minimum:
        raise doc.error((*at, key), f"must be at least {minimum}, got {value}")
    return value


def _number(doc: Doc, at: KeyPath, data: dict, key: str, *, required: bool = False) -> Number | None:
    """A positive number with at most two decimals (yuan, hours, days, percent)."""
    if key not in data:
        if required:
            raise _missing(doc, at, key)
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise doc.error((*at, key), f"expected a number, got {_kind(value)}")
    if not value > 0 or round(value, 2) != value:
        raise doc.error((*at, key), f"must be a positive number with at most 2 decimals, got {value}")
    return value


def _datetime(doc: Doc, keypath: KeyPath, value: Any, tz: ZoneInfo) -> datetime:
    """An ISO datetime; naive ones are local time in `tz`."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise doc.error(keypath, f"expected an ISO datetime like 2024-12-01 20:00, got {value!r}") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise doc.error(keypath, "give a time too, e.g. 2024-12-01 23:59")
    if not isinstance(value, datetime):
        raise doc.error(keypath, f"expected an ISO datetime like 2024-12-01 20:00, got {_kind(value)}")
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def _kind(value: Any) -> str:
    """A value's type and repr, for error messages."""
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


# ---------------------------------------------------------------------------------------------
# Rendering


def _num(x: Number) -> str:
    """199 -> '199', 9.9 -> '9.9', 10.0 -> '10'."""
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0").rstrip(".")


def describe_value(campaign: Campaign) -> str:
    """What a coupon is worth, in Chinese: 无门槛减10元, 满199减30, 8.5折, 免运费, 赠品：xxx."""
    spend = f"满{_num(campaign.threshold)}" if campaign.threshold else ""
    match campaign.shape:
        case "amount":
            return f"无门槛减{_num(campaign.amount)}元"
        case "spend_save":
            return f"{spend}减{_num(campaign.amount)}"
        case "percent":
            return f"{spend}享{_num(campaign.pay_percent / 10)}折" if spend else f"{_num(campaign.pay_percent / 10)}折"
        case "free_shipping":
            return f"{spend}免运费"
        case "gift":
            return f"{spend}赠品：{campaign.gift}"
    raise ValueError(f"unknown shape {campaign.shape!r}")


def _local_time(moment: datetime, tz: ZoneInfo, reference: datetime) -> str:
    """'12月1日 20:00', with the year when it differs from `reference`."""
    local = moment.astimezone(tz)
    year = f"{local.year}年" if local.year != reference.astimezone(tz).year else ""
    return f"{year}{local.month}月{local.day}日 {local:%H:%M}"


def normalize_code(code: str) -> str:
    """What a customer typed -> a code: upper case, no spaces or dashes."""
    return re.sub(r"[\s\-_]", "", code).upper()


# ---------------------------------------------------------------------------------------------
# Redis

PREFIX = "wecom:coupon"

# KEYS: issued counter, customer's codes (zset by expiry), redeemed set, cause key, new code hash,
# expiry zset. ARGV: budget, per_customer, now_ts, exp_ts, code, customer, cause, campaign,
# issued_at iso, expires_at iso, cause ttl.
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

    def __init__(self, redis_client: redis.Redis, campaigns: Iterable[Campaign], tz: ZoneInfo = DEFAULT_TZ) -> None:
        self.r = redis_client
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
            status = "issued" if held.cause_msgid == cause else "existing"
            return IssueResult(status, held, self.by_name[held.campaign])
        exhausted: Campaign | None = None
        limited: Campaign | None = None
        for campaign in eligible:
            outcome, coupon = self._try(campaign, customer, cause, now)
            if coupon is not None:
                return IssueResult(outcome, coupon, campaign)
            if outcome == "exhausted":
                exhausted = exhausted or campaign
            else:
                limited = limited or campaign
        if exhausted is not None:
            return IssueResult("exhausted", None, exhausted)
        return IssueResult("ineligible", None, limited)

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
                    code, customer, cause, campaign.name, now.isoformat(), expires_at.isoformat(), CAUSE_TTL]
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
        status = h["status"]
        if status == "issued" and expires_at <= now:
            status = "expired"
        return Coupon(code=h["code"], campaign=h["campaign"], customer=h["customer"],
                      issued_at=self._time(h["issued_at"]), expires_at=expires_at, cause_msgid=h["cause_msgid"],
                      status=status, redeemed_at=self._time(h["redeemed_at"]) if h.get("redeemed_at") else None,
                      order_id=h.get("order_id"))

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
        if result.status in ("issued", "existing") and campaign and coupon:
            text = campaign.reply.format(code=coupon.code, value=describe_value(campaign), title=campaign.title,
                                         expires=_local_time(coupon.expires_at, self.tz, coupon.issued_at))
            return EXISTING_PREFIX + text if result.status == "existing" else text
        if result.status == "exhausted" and campaign:
            return campaign.exhausted_reply
        if result.status == "ineligible" and campaign:
            return LIMIT_REPLY.format(title=campaign.title, limit=campaign.per_customer)
        if result.status == "exhausted":
            return DEFAULT_EXHAUSTED_REPLY
        return INELIGIBLE_REPLY
