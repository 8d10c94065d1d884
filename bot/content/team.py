"""Consultants from YAML (working hours in hours.py) and the pure choice of who takes a handoff."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot import yamlfile
from bot.content.hours import DAYS, Week, in_hours, next_start, parse_hours
from bot.times import DEFAULT_TZ, aware
from bot.yamlfile import ConfigError, Doc, KeyPath, shown

__all__ = [
    "DAYS",
    "DEFAULT_TZ",
    "Assignment",
    "CardSpec",
    "ConfigError",
    "Consultant",
    "Team",
    "load_team",
    "next_on_duty",
    "on_duty",
    "pick",
    "servicer_consultant",
    "with_servicers",
]

DEFAULT_SLA_MINUTES = 5
DEFAULT_MAX_CONCURRENT = 10
SERVICER_TITLE = "顾问"  # how texts call a kf servicer missing from the YAML (YAML consultants: 专属顾问)
ALL_WEEK: Week = tuple(((0, 24 * 60),) for _ in DAYS)  # on duty whenever WeCom says they receive
# WeCom member userid: 1-64 bytes of letters, digits, _ - . @
USERID_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
ENV_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
INTENT_RE = re.compile(r"[a-z][a-z0-9_]*")
# kf send_msg link: title <=128 bytes, desc <=512 bytes, url <=2048 bytes
LINK_LIMITS = {"title": 128, "desc": 512, "url": 2048}

TOP_KEYS = frozenset({"robot_key_env", "sla_minutes", "consultants", "texts"})

# What the customer reads when handed to a person (content/consultants.yaml `texts:`): the text goes before
# the card and the transfer, because WeCom takes nothing more from the bot once the chat is handed over.
DEFAULT_TEXTS: Mapping[str, str] = MappingProxyType({
    "apology": "非常抱歉给您带来不好的体验！",
    "assigned": "已为您安排{who}，预计{minutes}分钟内回复您，这是TA的名片：",
    "queued": "顾问们都在忙，已为您排队（您前面还有{ahead}位），预计{minutes}分钟内会有顾问接待您。",
    "queued_next": "顾问们都在忙，已为您排队，您是下一位，预计{minutes}分钟内会有顾问接待您。",
    "off_hours": "现在是非工作时间，已为您登记，{when}上班后{who}会第一时间回复您，请留意消息～",
    "in_queue": "您已进入排队，顾问接入后会第一时间回复您；排队期间您发的消息顾问都能看到，不用重复发送哦。",
})
TEXT_FIELDS = {"apology": set(), "assigned": {"who", "minutes"}, "queued": {"ahead", "minutes"},
               "queued_next": {"minutes"},
               "off_hours": {"when", "who"}, "in_queue": set()}
CONSULTANT_KEYS = frozenset({"userid", "name", "title", "card", "hours", "max_concurrent", "backup", "supervisor"})
CARD_KEYS = {"business_card": frozenset({"type"}),
             "link": frozenset({"type", "url", "title", "desc", "thumb_media_id"})}

Reason = Literal["owner", "least_loaded", "priority_over_capacity",
                 "queue_off_hours", "queue_none_receiving", "queue_at_capacity", "resumed"]


@dataclass(frozen=True, slots=True)
class CardSpec:
    """What to send as the consultant's card: kf business_card, or a link to their 「联系我」 page."""

    type: Literal["business_card", "link"]
    url: str | None = None
    title: str | None = None
    desc: str | None = None
    thumb_media_id: str | None = None


@dataclass(frozen=True, slots=True)
class Consultant:
    """One consultant (a WeCom member who is a kf servicer)."""

    userid: str
    name: str
    title: str
    card: CardSpec
    hours: Week  # 7 entries, Monday first
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    backup: str | None = None
    supervisor: str | None = None
    tz: ZoneInfo = DEFAULT_TZ


@dataclass(frozen=True, slots=True)
class Team:
    """All consultants plus team-wide settings."""

    consultants: tuple[Consultant, ...]
    robot_key_env: str | None = None
    sla_minutes: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({"default": DEFAULT_SLA_MINUTES}))
    tz: ZoneInfo = DEFAULT_TZ
    texts: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TEXTS)

    def get(self, userid: str | None) -> Consultant | None:
        """The consultant with this userid, or None."""
        return next((c for c in self.consultants if c.userid == userid), None) if userid else None

    def sla_seconds(self, intent: str) -> int:
        """The SLA for an intent in seconds (falls back to `default`)."""
        minutes = self.sla_minutes.get(intent, self.sla_minutes.get("default", DEFAULT_SLA_MINUTES))
        return max(1, round(minutes * 60))

    def robot_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The group robot webhook key from the environment, or None when unset."""
        if not self.robot_key_env:
            return None
        return (os.environ if env is None else env).get(self.robot_key_env) or None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who gets a handoff: state 3 = to `userid`, state 2 = the kf queue."""

    userid: str | None
    state: Literal[2, 3]
    reason: Reason
    off_hours: bool = False
    next_available: datetime | None = None  # off hours: start of the earliest next working period
    next_userid: str | None = None  # off hours: who comes on duty at next_available (alert them then)
    supervisor: str | None = None  # priority (complaint): also alert this supervisor


def on_duty(consultant: Consultant, now: datetime) -> bool:
    """Whether `now` falls in one of the consultant's working periods."""
    return in_hours(consultant.hours, consultant.tz, now)


def next_on_duty(consultant: Consultant, now: datetime) -> datetime:
    """`now` if on duty, else the start of the next working period (local time)."""
    start = next_start(consultant.hours, consultant.tz, now)
    if start is None:
        raise ValueError(f"{consultant.userid} has no working hours")
    return start


def pick(team: Team, *, owner: str | None, receiving: Mapping[str, int], load: Mapping[str, int],
         now: datetime, exclude: set[str] | frozenset[str] = frozenset(), priority: bool = False) -> Assignment:
    """Choose a consultant: own consultant, else least loaded, else the queue.

    `receiving` is the kf servicer status (0 = receiving, 1 = stopped; missing = not a servicer),
    `load` the open handoffs per userid. `priority` (complaints) may exceed max_concurrent
    rather than wait in the queue, and names the supervisor to alert as well.
    """
    aware(now)
    pool = [c for c in team.consultants if c.userid not in exclude]
    present = [c for c in pool if receiving.get(c.userid) == 0 and on_duty(c, now)]
    free = [c for c in present if load.get(c.userid, 0) < c.max_concurrent]

    def chosen(c: Consultant, reason: Reason) -> Assignment:
        return Assignment(c.userid, 3, reason, supervisor=c.supervisor if priority else None)

    own = team.get(owner)
    if own is not None and own in free:
        return chosen(own, "owner")
    if free:
        return chosen(min(free, key=lambda c: load.get(c.userid, 0)), "least_loaded")  # min() is stable
    if priority and present:
        if own is not None and own in present:
            return chosen(own, "priority_over_capacity")
        return chosen(min(present, key=lambda c: load.get(c.userid, 0)), "priority_over_capacity")
    supervisor = _supervisor_for(own, pool) if priority else None
    if present:
        return Assignment(None, 2, "queue_at_capacity", supervisor=supervisor)
    if any(on_duty(c, now) for c in pool):
        return Assignment(None, 2, "queue_none_receiving", supervisor=supervisor)
    if not pool:
        return Assignment(None, 2, "queue_none_receiving", supervisor=supervisor)
    nexts = [(next_on_duty(c, now), c) for c in pool]
    earliest = min(t.timestamp() for t, _ in nexts)
    first = [c for t, c in nexts if t.timestamp() == earliest]
    who = own if own in first else first[0]
    return Assignment(None, 2, "queue_off_hours", off_hours=True,
                      next_available=next_on_duty(who, now).astimezone(team.tz), next_userid=who.userid,
                      supervisor=supervisor)


def servicer_consultant(userid: str, name: str, tz: ZoneInfo = DEFAULT_TZ) -> Consultant:
    """A kf servicer missing from the YAML, with the defaults: their WeCom business card, on duty at every hour
    (receiving in WeCom is what counts), DEFAULT_MAX_CONCURRENT, titled 顾问, `name` (their WeCom name)."""
    return Consultant(userid=userid, name=name or userid, title=SERVICER_TITLE, card=CardSpec("business_card"),
                      hours=ALL_WEEK, max_concurrent=DEFAULT_MAX_CONCURRENT, tz=tz)


def with_servicers(team: Team, receiving: Mapping[str, int], names: Mapping[str, str]) -> Team:
    """`team` plus a default consultant (servicer_consultant) for every receiving kf servicer (status 0 in
    kf/servicer/list) the YAML does not list, named from `names` (else the userid). They come after the YAML
    consultants, in userid order, so pick() prefers YAML people on ties."""
    known = {c.userid for c in team.consultants}
    extra = tuple(servicer_consultant(u, names.get(u) or u, team.tz) for u in sorted(receiving)
                  if receiving[u] == 0 and u not in known and USERID_RE.fullmatch(u))
    return dataclasses.replace(team, consultants=(*team.consultants, *extra)) if extra else team


def _supervisor_for(own: Consultant | None, pool: list[Consultant]) -> str | None:
    """The owner's supervisor, else the first supervisor named in the team."""
    if own is not None and own.supervisor:
        return own.supervisor
    return next((c.supervisor for c in pool if c.supervisor), None)


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_team(path: Path | str, tz: ZoneInfo = DEFAULT_TZ) -> Team:
    """Read and validate a consultants YAML file; working hours are local times in `tz`."""
    doc = yamlfile.load(path)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping with robot_key_env, sla_minutes and consultants")
    for key in data:
        if key not in TOP_KEYS:
            raise doc.error((str(key),), f"unknown key (expected {', '.join(sorted(TOP_KEYS))})")
    robot = data.get("robot_key_env")
    if robot is not None and not (isinstance(robot, str) and ENV_RE.fullmatch(robot)):
        raise doc.error(("robot_key_env",), "expected the NAME of an environment variable, e.g. WECOM_ROBOT_KEY "
                                            "(never the key itself)")
    items = data.get("consultants")
    if not isinstance(items, list) or not items:
        raise doc.error(("consultants",), "expected a non-empty list of consultants")
    consultants = [_consultant(doc, ("consultants", i), item, tz) for i, item in enumerate(items)]
    _check_refs(doc, consultants)
    return Team(tuple(consultants), robot, _sla(doc, data.get("sla_minutes")), tz, _texts(doc, data.get("texts")))


def _texts(doc: Doc, data: Any) -> Mapping[str, str]:
    """texts: the customer's handoff texts, each a template with only its own {fields}."""
    if data is None:
        return DEFAULT_TEXTS
    if not isinstance(data, dict):
        raise doc.error(("texts",), f"expected a mapping of {', '.join(TEXT_FIELDS)} to texts")
    out = dict(DEFAULT_TEXTS)
    for key, value in data.items():
        at = ("texts", str(key))
        if key not in TEXT_FIELDS:
            raise doc.error(at, f"unknown text (expected {', '.join(TEXT_FIELDS)})")
        text = _text(doc, at, value)
        try:
            text.format(**{name: "" for name in TEXT_FIELDS[key]})
        except (KeyError, IndexError, ValueError):
            allowed = ", ".join("{" + f + "}" for f in sorted(TEXT_FIELDS[key])) or "none"
            raise doc.error(at, f"bad placeholder in {shown(text)} (this text may use: {allowed})") from None
        out[str(key)] = text
    return MappingProxyType(out)


def _sla(doc: Doc, data: Any) -> Mapping[str, float]:
    """sla_minutes: intent -> minutes, with `default`."""
    out: dict[str, float] = {"default": DEFAULT_SLA_MINUTES}
    if data is None:
        return MappingProxyType(out)
    if not isinstance(data, dict):
        raise doc.error(("sla_minutes",), "expected a mapping of intent: minutes, e.g. default: 5")
    for key, value in data.items():
        at = ("sla_minutes", str(key))
        if not isinstance(key, str) or not INTENT_RE.fullmatch(key):
            raise doc.error(at, "expected an intent name (lower case), e.g. price, complaint, default")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise doc.error(at, f"expected a positive number of minutes, got {shown(value)}")
        out[key] = value
    return MappingProxyType(out)


def _consultant(doc: Doc, at: KeyPath, data: Any, tz: ZoneInfo) -> Consultant:
    """Validate one consultant mapping."""
    if not isinstance(data, dict):
        raise doc.error(at, "expected a mapping (userid, name, card, hours, ...)")
    for key in data:
        if key not in CONSULTANT_KEYS:
            raise doc.error((*at, str(key)), f"unknown key (expected {', '.join(sorted(CONSULTANT_KEYS))})")
    for key in ("userid", "name", "card", "hours"):
        if key not in data:
            raise doc.error(at, f"missing key {key!r}")
    userid = _userid(doc, (*at, "userid"), data["userid"])
    name = _text(doc, (*at, "name"), data["name"])
    title = _text(doc, (*at, "title"), data["title"]) if "title" in data else "专属顾问"
    limit = data.get("max_concurrent", DEFAULT_MAX_CONCURRENT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise doc.error((*at, "max_concurrent"), f"expected a whole number >= 1, got {shown(limit)}")
    refs = {k: _userid(doc, (*at, k), data[k]) if data.get(k) is not None else None for k in ("backup", "supervisor")}
    return Consultant(userid=userid, name=name, title=title, card=_card(doc, (*at, "card"), data["card"]),
                      hours=parse_hours(doc, (*at, "hours"), data["hours"]), max_concurrent=limit, tz=tz, **refs)


def _card(doc: Doc, at: KeyPath, data: Any) -> CardSpec:
    """card: business_card | {type: business_card} | {type: link, url, title, desc?, thumb_media_id?}."""
    if data == "business_card":
        return CardSpec("business_card")
    if not isinstance(data, dict):
        raise doc.error(at, "expected {type: business_card} or {type: link, url: ..., title: ...}")
    kind = data.get("type")
    if kind not in CARD_KEYS:
        raise doc.error((*at, "type"), f"expected business_card or link, got {shown(kind)}")
    for key in data:
        if key not in CARD_KEYS[kind]:
            raise doc.error((*at, str(key)), f"unknown key for a {kind} card")
    if kind == "business_card":
        return CardSpec("business_card")
    fields: dict[str, str | None] = {}
    for key in ("url", "title", "desc", "thumb_media_id"):
        if key not in data:
            if key in ("url", "title"):
                raise doc.error(at, f"missing key {key!r} (required for a link card)")
            fields[key] = None
            continue
        text = fields[key] = _text(doc, (*at, key), data[key])
        limit = LINK_LIMITS.get(key)
        if limit and len(text.encode()) > limit:
            raise doc.error((*at, key), f"too long: {len(text.encode())} bytes, WeCom allows {limit}")
    if not re.match(r"https?://", fields["url"] or ""):
        raise doc.error((*at, "url"), "expected an http(s) URL, e.g. the consultant's 「联系我」 link")
    return CardSpec("link", **fields)


def _check_refs(doc: Doc, consultants: list[Consultant]) -> None:
    """Unique userids; backup and supervisor exist, are not self, and supervisors form no cycle."""
    index: dict[str, int] = {}
    for i, c in enumerate(consultants):
        if c.userid in index:
            first = doc.line(("consultants", index[c.userid], "userid"))
            raise doc.error(("consultants", i, "userid"), f"duplicate userid {c.userid!r} (first on line {first})")
        index[c.userid] = i
    for i, c in enumerate(consultants):
        for key in ("backup", "supervisor"):
            ref = getattr(c, key)
            if ref is None:
                continue
            if ref == c.userid:
                raise doc.error(("consultants", i, key), f"{c.userid} cannot be their own {key}")
            if ref not in index:
                raise doc.error(("consultants", i, key), f"unknown consultant {ref!r} (not in this file)")
    by_id = {c.userid: c for c in consultants}
    for i, c in enumerate(consultants):
        seen = [c.userid]
        nxt = c.supervisor
        while nxt is not None:
            if nxt in seen:
                chain = " -> ".join([*seen, nxt])
                raise doc.error(("consultants", i, "supervisor"), f"supervisor cycle: {chain}")
            seen.append(nxt)
            nxt = by_id[nxt].supervisor


def _userid(doc: Doc, at: KeyPath, value: Any) -> str:
    """A WeCom member userid."""
    if not isinstance(value, str) or not USERID_RE.fullmatch(value):
        raise doc.error(at, f"expected a WeCom userid (letters, digits, _ . @ -), got {shown(value)}")
    return value


def _text(doc: Doc, at: KeyPath, value: Any) -> str:
    """A non-empty string, stripped."""
    return yamlfile.text(doc, at, value).strip()


