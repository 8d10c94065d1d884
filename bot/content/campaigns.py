"""Coupon campaigns: the grammar of content/coupons.yaml, its loader, and what a coupon is worth in words."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot import yamlfile
from bot.times import DEFAULT_TZ
from bot.yamlfile import ConfigError, Doc, KeyPath, shown
from sop.variants import EXPERIMENT_KEYS, HOLDOUT, Experiment, parse_experiment

__all__ = ["Campaign", "DEFAULT_EXHAUSTED_REPLY", "load_campaigns", "describe_value", "local_time"]

DEFAULT_EXHAUSTED_REPLY = "本期优惠券已经发完啦，顾问稍后为您争取专属优惠"
DEFAULT_REPLY = "🎁 送您一张「{title}」：{value}\n券码：{code}\n{expires} 前有效，下单时填写券码即可使用～"
# A repeated ask: the customer already holds the coupon, so no "欢迎您" a second time (`again_reply`).
DEFAULT_AGAIN_REPLY = "您已经领过「{title}」啦，还没使用哦～\n券码：{code}\n{expires} 前有效，下单时填写券码即可使用～"
LIMIT_REPLY = "您已经领取过「{title}」啦，每位客户限领{limit}张。有新的优惠活动会第一时间告诉您～"
INELIGIBLE_REPLY = "暂时没有您可以领取的优惠券哦，有新的优惠活动会第一时间告诉您～"

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
    "eligible", "tags", "reply", "again_reply", "on_exhausted", "exhausted_reply", "in_chat", "holdout_reply",
}) | EXPERIMENT_KEYS
# What a variant of a campaign may set (the rest is the campaign's: budget, limits, validity, eligibility).
VARIANT_KEYS = ("shape", *sorted(SHAPE_KEYS), "title", "reply", "again_reply")
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
    again_reply: str = DEFAULT_AGAIN_REPLY  # to a customer who already holds the coupon
    experiment: Experiment | None = None  # A/B: id coupon:<name>; the variants share budget, limits and codes
    variants: tuple[Campaign, ...] = ()  # each variant as a campaign of the same name with its own shape and reply
    variant: str | None = None  # the variant this is (None: the campaign itself)
    holdout_reply: str = INELIGIBLE_REPLY  # to a customer of the experiment's holdout, who gets no coupon

    def arm(self, name: str | None) -> Campaign:
        """The variant called `name`; the campaign itself for None, the holdout or a name since removed from the YAML."""
        return next((v for v in self.variants if v.variant == name), self) if name and name != HOLDOUT else self

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
    if name is None or not NAME_RE.fullmatch(name):
        raise doc.error((*at, "name"), "must be 1-64 characters of a-z, 0-9, '_' or '-'")
    shape = _choice(doc, at, data, "shape", tuple(SHAPES), required=True)
    fields: dict[str, Any] = {"name": name, "shape": shape, "title": _text(doc, at, data, "title", required=True)}
    fields.update(_shape_fields(doc, at, data, shape))
    fields["budget"] = _integer(doc, at, data, "budget", required=True, minimum=1)
    fields["per_customer"] = _integer(doc, at, data, "per_customer", minimum=1) or 1
    fields.update(_validity(doc, at, data, tz))
    fields.update(_eligibility(doc, at, data))
    fields["reply"] = _template(doc, at, data)
    fields["again_reply"] = _template(doc, at, data, "again_reply", DEFAULT_AGAIN_REPLY)
    fields["on_exhausted"] = _choice(doc, at, data, "on_exhausted", ON_EXHAUSTED) or "reply"
    fields["exhausted_reply"] = _text(doc, at, data, "exhausted_reply") or DEFAULT_EXHAUSTED_REPLY
    in_chat = data.get("in_chat", True)
    if not isinstance(in_chat, bool):
        raise doc.error((*at, "in_chat"), "must be true or false")
    fields["in_chat"] = in_chat
    fields["holdout_reply"] = _text(doc, at, data, "holdout_reply") or INELIGIBLE_REPLY
    errors: list[ConfigError] = []
    declared = parse_experiment(doc, at, data, f"coupon:{name}", errors,
                                lambda where, item: _variant(doc, where, item, data, fields), VARIANT_KEYS)
    if errors:
        raise errors[0]
    if "holdout_reply" in data and not (declared and declared[0].holdout):
        raise doc.error((*at, "holdout_reply"), "only used with variants and a holdout share")
    campaign = Campaign(**fields)
    if declared is None:
        return campaign
    experiment, variants = declared
    return replace(campaign, experiment=experiment,
                   variants=tuple(replace(campaign, variant=arm, **variants[arm]) for arm in variants))


def _variant(doc: Doc, at: KeyPath, item: dict, data: dict, parent: dict[str, Any]) -> dict[str, Any]:
    """A variant's own fields: its shape (default the campaign's, whose numbers it may override), title, replies."""
    shape = _choice(doc, at, item, "shape", tuple(SHAPES)) or parent["shape"]
    numbers = {k: item[k] for k in SHAPE_KEYS if k in item}
    source = numbers if "shape" in item else {k: v for k, v in data.items() if k in SHAPE_KEYS} | numbers
    out: dict[str, Any] = dict.fromkeys(SHAPE_KEYS) | {"shape": shape}
    out.update(_shape_fields(doc, at, source, shape))
    out["title"] = _text(doc, at, item, "title") or parent["title"]
    out["reply"] = _template(doc, at, item, "reply", parent["reply"])
    out["again_reply"] = _template(doc, at, item, "again_reply", parent["again_reply"])
    return out


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


def _template(doc: Doc, at: KeyPath, data: dict, key: str = "reply", default: str = DEFAULT_REPLY) -> str:
    """A reply template: only known placeholders, and it must show the code."""
    text = _text(doc, at, data, key)
    if text is None:
        return default
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise doc.error((*at, key), f"bad placeholder: {exc} (write {{{{ and }}}} for literal braces)") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise doc.error((*at, key), f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{code}} {{value}} {{expires}} {{title}}")
    if "code" not in names:
        raise doc.error((*at, key), "must contain {code}")
    return text


def _missing(doc: Doc, at: KeyPath, key: str) -> ConfigError:
    """Error for a required key that is absent (points at the campaign's line)."""
    return doc.error(at, f"missing key {key!r}")


def _present(doc: Doc, at: KeyPath, data: dict, key: str, required: bool) -> bool:
    """Whether `key` is given; a required key that is not is a ConfigError."""
    if key in data:
        return True
    if required:
        raise _missing(doc, at, key)
    return False


def _text(doc: Doc, at: KeyPath, data: dict, key: str, *, required: bool = False) -> str | None:
    """A non-empty string value."""
    if not _present(doc, at, data, key, required):
        return None
    value = yamlfile.text(doc, (*at, key), data[key])
    return value.strip() if key not in ("reply", "again_reply") else value.rstrip("\n")


def _choice(doc: Doc, at: KeyPath, data: dict, key: str, options: tuple[str, ...], *, required: bool = False) -> Any:
    """One of a fixed set of words."""
    if not _present(doc, at, data, key, required):
        return None
    return yamlfile.choice(doc, (*at, key), data[key], options)


def _integer(doc: Doc, at: KeyPath, data: dict, key: str, *, required: bool = False, minimum: int = 0) -> int | None:
    """A whole number >= minimum."""
    if not _present(doc, at, data, key, required):
        return None
    return int(yamlfile.number(doc, (*at, key), data[key], minimum=minimum, whole=True))


def _number(doc: Doc, at: KeyPath, data: dict, key: str, *, required: bool = False) -> Number | None:
    """A positive number with at most two decimals (yuan, hours, days, percent)."""
    if not _present(doc, at, data, key, required):
        return None
    value = data[key]
    yamlfile.number(doc, (*at, key), value)
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
        raise doc.error(keypath, f"expected an ISO datetime like 2024-12-01 20:00, got {shown(value)}")
    return value.replace(tzinfo=tz) if value.tzinfo is None else value




# ---------------------------------------------------------------------------------------------
# Rendering


def _num(x: Number) -> str:
    """199 -> '199', 9.9 -> '9.9', 10.0 -> '10'."""
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0").rstrip(".")


def describe_value(campaign: Campaign) -> str:
    """What a coupon is worth, in Chinese: 无门槛减10元, 满199减30, 8.5折, 免运费, 赠品：xxx."""
    spend = f"满{_num(campaign.threshold)}" if campaign.threshold else ""
    amount, percent = campaign.amount or 0, campaign.pay_percent or 0  # the loader requires them for their shapes
    match campaign.shape:
        case "amount":
            return f"无门槛减{_num(amount)}元"
        case "spend_save":
            return f"{spend}减{_num(amount)}"
        case "percent":
            return f"{spend}享{_num(percent / 10)}折" if spend else f"{_num(percent / 10)}折"
        case "free_shipping":
            return f"{spend}免运费"
        case "gift":
            return f"{spend}赠品：{campaign.gift}"
    raise ValueError(f"unknown shape {campaign.shape!r}")


def local_time(moment: datetime, tz: ZoneInfo, reference: datetime) -> str:
    """'12月1日 20:00', with the year when it differs from `reference`."""
    local = moment.astimezone(tz)
    year = f"{local.year}年" if local.year != reference.astimezone(tz).year else ""
    return f"{year}{local.month}月{local.day}日 {local:%H:%M}"
