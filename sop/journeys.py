"""SOP journeys from YAML: load and validate every file, each error naming file, line and key."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any

from bot import yamlfile
from bot.yamlfile import ConfigError, Doc, KeyPath, shown, time_problem
from bot.yamlfile import time_of_day as parse_time
from sop.replies import DEFAULT_HOURS, ReplyOption, normalise
from sop.variants import EXPERIMENT_KEYS, Experiment, parse_experiment

__all__ = [
    "ConfigError", "Journey", "ReplyOption", "Segment", "Step", "Trigger", "DEFAULT_DIR", "TRIGGERS", "STOP_FACTS",
    "load", "load_dir", "validate", "parse_duration", "parse_time",
]

DEFAULT_DIR = Path(__file__).resolve().parent / "journeys"
TRIGGERS = ("customer_added", "first_contact", "intent", "tag", "coupon_issued", "purchase", "birthday",
            "silence", "calendar")
TRIGGER_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # trigger type: (required keys, optional keys)
    "customer_added": (frozenset(), frozenset()),
    "first_contact": (frozenset(), frozenset()),
    "intent": (frozenset({"intent"}), frozenset({"no_purchase_within_hours"})),
    "tag": (frozenset({"tag"}), frozenset()),
    "coupon_issued": (frozenset(), frozenset({"remind_before_hours", "campaign"})),
    "purchase": (frozenset(), frozenset()),
    "birthday": (frozenset(), frozenset()),
    "silence": (frozenset({"days"}), frozenset()),
    "calendar": (frozenset(), frozenset({"monthday", "weekdays", "segment"})),
}
STOP_FACTS = ("replied", "purchased", "redeemed", "unsubscribed", "handed_off", "contact_deleted")
LIFECYCLES = ("new", "active", "silent")
CHANNELS = ("auto", "staff")
CONTENT_KEYS = ("text", "link", "image", "miniprogram", "coupon")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
JOURNEY_KEYS = frozenset({"id", "title", "priority", "enabled", "trigger", "stop_on", "segment", "steps"})
STEP_KEYS = frozenset({"id", "wait", "at", "window", "kind", "channel", "content", "replies", "replies_for_hours"}
                      | EXPERIMENT_KEYS)
REPLY_KEYS = ("match", "tag", "reply", "journey", "coupon")
REPLY_DOES = ("reply", "journey", "coupon", "tag")  # an option does at least one of these
MAX_REPLY_HOURS = 30 * 24
SEGMENT_KEYS = frozenset({"lifecycle", "tags", "min_value"})
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
DURATION_RE = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?")
# kf send_msg payload limits in bytes (platform notes §2.4).
LIMITS = {"text": 2048, "title": 128, "desc": 512, "url": 2048}
ATTACHMENT_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "link": (("title", "url"), ("desc", "thumb_media_id")),
    "image": (("media_id",), ()),
    "miniprogram": (("appid", "title", "pagepath"), ("thumb_media_id",)),
    "coupon": (("campaign",), ()),
}


@dataclass(frozen=True, slots=True)
class Segment:
    """Which customers a journey (or calendar broadcast) is for; empty means everyone."""

    lifecycle: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    min_value: float | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """What enrols a customer; unused parameters stay None."""

    type: str
    intent: str | None = None
    no_purchase_within_hours: int | None = None
    tag: str | None = None
    remind_before_hours: int | None = None
    campaign: str | None = None
    days: int | None = None
    monthday: int | None = None
    weekdays: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    """One touch: `wait` after the trigger, then at a local time of day or within a window."""

    id: str
    wait: timedelta
    kind: str
    channel: str
    content: dict[str, Any] = field(hash=False, compare=False)
    at: time | None = None
    window: tuple[time, time] | None = None
    replies: tuple[ReplyOption, ...] = field(default=(), hash=False, compare=False)  # answers to the step's question
    replies_for_hours: int = DEFAULT_HOURS  # how long after the step reached the customer an answer counts
    experiment: Experiment | None = field(default=None, hash=False, compare=False)  # A/B: id journey_id.step_id
    variants: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)  # name -> content

    def contents(self) -> list[dict[str, Any]]:
        """Every content the step may send: its own, or each variant's."""
        return list(self.variants.values()) if self.variants else [self.content]


@dataclass(frozen=True, slots=True)
class Journey:
    """A trigger, a segment, stop conditions and ordered steps."""

    id: str
    title: str
    priority: int
    trigger: Trigger
    steps: tuple[Step, ...]
    stop_on: frozenset[str] = frozenset()
    segment: Segment = Segment()
    enabled: bool = True
    source: str = ""

    def step(self, step_id: str) -> Step | None:
        """The step with this id, if any."""
        return next((s for s in self.steps if s.id == step_id), None)

    def after(self, step_id: str) -> Step | None:
        """The step following `step_id`, if any."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id) if step_id in ids else len(ids)
        return self.steps[i + 1] if i + 1 < len(ids) else None


def parse_duration(value: Any) -> timedelta | None:
    """0, "90m", "2h", "3d", "1d12h" -> timedelta; None if not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value == 0:
        return timedelta(0)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if text == "0":
        return timedelta(0)
    m = DURATION_RE.fullmatch(text)
    if not m or not any(m.groups()):
        return None
    d, h, mins = (int(g or 0) for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mins)


class _Checker:
    """Walks one document, collecting every error instead of stopping at the first."""

    def __init__(self, doc: Doc):
        self.doc = doc
        self.errors: list[ConfigError] = []
        self.ids: set[str] = set()  # journey ids the file declares (valid or not)
        self.enrols: list[tuple[KeyPath, str]] = []  # where an option names a journey, checked across files

    def err(self, keypath: KeyPath, message: str) -> None:
        self.errors.append(self.doc.error(keypath, message))

    def mapping(self, at: KeyPath, value: Any, allowed: Iterable[str]) -> dict | None:
        """A mapping with only `allowed` keys (unknown keys are reported, not fatal)."""
        if not isinstance(value, dict):
            self.err(at, f"expected a mapping, got {shown(value)}")
            return None
        allowed = set(allowed)
        for key in value:
            if str(key) not in allowed:
                self.err((*at, str(key)), f"unknown key (expected one of {', '.join(sorted(allowed))})")
        return value

    def text(self, at: KeyPath, data: dict, key: str, *, required: bool = True, limit: int | None = None) -> str | None:
        if key not in data:
            if required:
                self.err(at, f"missing key {key!r}")
            return None
        try:
            value = yamlfile.text(self.doc, (*at, key), data[key])
        except ConfigError as exc:
            self.errors.append(exc)
            return None
        if limit and len(value.encode()) > limit:
            self.err((*at, key), f"too long: {len(value.encode())} bytes, WeCom allows {limit}")
        return value

    def integer(self, at: KeyPath, data: dict, key: str, lo: int, hi: int | None = None,
                required: bool = True) -> int | None:
        if key not in data:
            if required:
                self.err(at, f"missing key {key!r}")
            return None
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.err((*at, key), f"expected a whole number, got {shown(value)}")
            return None
        if value < lo or (hi is not None and value > hi):
            self.err((*at, key), f"must be between {lo} and {hi}, got {value}" if hi is not None
                     else f"must be at least {lo}, got {value}")
            return None
        return value

    def ident(self, at: KeyPath, data: dict, key: str, pattern: re.Pattern = ID_RE) -> str | None:
        value = self.text(at, data, key)
        if value is not None and not pattern.fullmatch(value):
            self.err((*at, key), f"{value!r} must match {pattern.pattern}")
            return None
        return value

    def words(self, at: KeyPath, value: Any, options: tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.err(at, f"expected a list of {', '.join(options)}, got {shown(value)}")
            return ()
        out = []
        for i, v in enumerate(value):
            if v not in options:
                self.err((*at, i), f"expected one of {', '.join(options)}, got {v!r}")
            elif v not in out:
                out.append(v)
        return tuple(out)

    def segment(self, at: KeyPath, value: Any) -> Segment:
        data = self.mapping(at, value, SEGMENT_KEYS)
        if data is None:
            return Segment()
        lifecycle = self.words((*at, "lifecycle"), data["lifecycle"], LIFECYCLES) if "lifecycle" in data else ()
        tags: tuple[str, ...] = ()
        if "tags" in data:
            raw = data["tags"]
            raw = [raw] if isinstance(raw, str) else raw
            if not isinstance(raw, list) or not all(isinstance(t, str) and t.strip() for t in raw):
                self.err((*at, "tags"), f"expected a list of tag names, got {shown(data['tags'])}")
            else:
                tags = tuple(t.strip() for t in raw)
        min_value = None
        if "min_value" in data:
            v = data["min_value"]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                self.err((*at, "min_value"), f"expected a number >= 0, got {shown(v)}")
            else:
                min_value = float(v)
        return Segment(lifecycle, tags, min_value)

    def trigger(self, at: KeyPath, value: Any) -> tuple[Trigger | None, Segment | None]:
        short = isinstance(value, str)
        if short:
            value = {"type": value}
        if not isinstance(value, dict):
            self.err(at, f"expected a trigger name or a mapping with 'type', got {shown(value)}")
            return None, None
        kind = value.get("type")
        if kind not in TRIGGER_KEYS:
            self.err((*at, "type") if "type" in value and not short else at,
                     f"unknown trigger {kind!r} (expected one of {', '.join(TRIGGERS)})")
            return None, None
        required, optional = TRIGGER_KEYS[kind]
        data = self.mapping(at, value, {"type"} | required | optional) or {}
        for key in sorted(required - set(data)):
            self.err(at, f"missing key {key!r} for trigger {kind}")
        t: dict[str, Any] = {"type": kind}
        if "intent" in data:
            t["intent"] = self.text(at, data, "intent")
        if "tag" in data:
            t["tag"] = self.text(at, data, "tag")
        if "campaign" in data:
            t["campaign"] = self.text(at, data, "campaign")
        for key in ("no_purchase_within_hours", "remind_before_hours"):
            if key in data:
                t[key] = self.integer(at, data, key, 0)
        if "days" in data:
            t["days"] = self.integer(at, data, "days", 1)
        segment = None
        if kind == "calendar":
            if ("monthday" in data) == ("weekdays" in data):
                self.err(at, "a calendar trigger needs exactly one of 'monthday' or 'weekdays'")
            if "monthday" in data:
                t["monthday"] = self.integer(at, data, "monthday", 1, 31)
            if "weekdays" in data:
                names = self.words((*at, "weekdays"), data["weekdays"], WEEKDAYS)
                t["weekdays"] = tuple(sorted(WEEKDAYS.index(n) for n in names))
            if "segment" in data:
                segment = self.segment((*at, "segment"), data["segment"])
        return Trigger(**t), segment

    def content(self, at: KeyPath, value: Any) -> dict[str, Any]:
        data = self.mapping(at, value, CONTENT_KEYS)
        if data is None:
            return {}
        if not any(k in data for k in CONTENT_KEYS):
            self.err(at, f"content needs at least one of {', '.join(CONTENT_KEYS)}")
        out: dict[str, Any] = {}
        if "text" in data:
            out["text"] = self.text(at, data, "text", limit=LIMITS["text"])
        attachments = [k for k in ATTACHMENT_FIELDS if k in data]
        if len([k for k in attachments if k != "coupon"]) > 1:
            self.err(at, "at most one of link, image, miniprogram per step")
        for kind in attachments:
            required, optional = ATTACHMENT_FIELDS[kind]
            sub = self.mapping((*at, kind), data[kind], (*required, *optional))
            if sub is None:
                continue
            item = {}
            for key in (*required, *optional):
                if key in sub or key in required:
                    item[key] = self.text((*at, kind), sub, key, limit=LIMITS.get(key))
            url = item.get("url")
            if url and not url.startswith(("https://", "http://")):
                self.err((*at, kind, "url"), f"expected an http(s) URL, got {url!r}")
            out[kind] = item
        return out

    def answers(self, at: KeyPath, value: Any) -> tuple[str, ...]:
        """An option's `match`: one answer or a list of them (digits may be written unquoted)."""
        raw = value if isinstance(value, list) else [value]
        out = []
        for i, w in enumerate(raw):
            where = (*at, i) if isinstance(value, list) else at
            if isinstance(w, int) and not isinstance(w, bool):
                w = str(w)
            if not isinstance(w, str) or not normalise(w):
                self.err(where, f"expected an answer such as \"1\" or \"新品\", got {shown(w)}")
            else:
                out.append(w)
        if not raw:
            self.err(at, "expected at least one answer")
        return tuple(out)

    def option(self, at: KeyPath, value: Any) -> ReplyOption | None:
        data = self.mapping(at, value, REPLY_KEYS)
        if data is None:
            return None
        n = len(self.errors)
        words = self.answers((*at, "match"), data["match"]) if "match" in data else ()
        if "match" not in data:
            self.err(at, "missing key 'match' (the answers that choose this option)")
        if not any(k in data for k in REPLY_DOES):
            self.err(at, f"an option needs at least one of {', '.join(REPLY_DOES)}")
        tag = self.text(at, data, "tag", required=False)
        reply = self.text(at, data, "reply", required=False, limit=LIMITS["text"])
        journey = self.ident(at, data, "journey") if "journey" in data else None
        if journey is not None:
            self.enrols.append(((*at, "journey"), journey))
        coupon = data.get("coupon", False)
        if not isinstance(coupon, bool):
            self.err((*at, "coupon"), f"expected true or false, got {shown(coupon)}")
        if len(self.errors) > n:
            return None
        return ReplyOption(words, tag.strip() if tag else None, reply, journey, coupon is True)

    def replies(self, at: KeyPath, value: Any) -> tuple[ReplyOption, ...]:
        """A step's options; every answer names one option only (compared as customers' messages are)."""
        if not isinstance(value, list) or not value:
            self.err(at, f"expected a non-empty list of options (match, tag, reply, journey, coupon), got {shown(value)}")
            return ()
        options: list[ReplyOption] = []
        owner: dict[str, int] = {}
        for i, raw in enumerate(value):
            option = self.option((*at, i), raw)
            if option is None:
                continue
            for k, w in enumerate(option.words):
                key = normalise(w)
                if key in owner:
                    where = (*at, i, "match", k) if isinstance(raw["match"], list) else (*at, i, "match")
                    self.err(where, f"{w!r} reads as {key!r}, which already answers option {owner[key] + 1}")
                owner.setdefault(key, i)
            options.append(option)
        return tuple(options)

    def step(self, at: KeyPath, value: Any, journey: str | None = None) -> Step | None:
        data = self.mapping(at, value, STEP_KEYS)
        if data is None:
            return None
        n = len(self.errors)
        sid = self.ident(at, data, "id")
        wait = timedelta(0)
        if "wait" in data:
            parsed = parse_duration(data["wait"])
            if parsed is None:
                self.err((*at, "wait"), f"bad duration {data['wait']!r} (use 0, 30m, 2h, 3d or 1d12h)")
            else:
                wait = parsed
        at_time = window = None
        if "at" in data and "window" in data:
            self.err(at, "give either 'at' or 'window', not both")
        if "at" in data:
            at_time = parse_time(data["at"])
            if at_time is None:
                self.err((*at, "at"), time_problem(data["at"]))
        if "window" in data:
            raw = data["window"]
            parts = raw.split("-") if isinstance(raw, str) else []
            times = [t for t in (parse_time(p) for p in parts) if t is not None]
            if len(parts) != 2 or len(times) != 2 or times[0] >= times[1]:
                self.err((*at, "window"), f"bad window {raw!r} (use \"10:00-21:00\", start before end)")
            else:
                window = (times[0], times[1])
        kind = self.ident(at, data, "kind", KIND_RE)
        channel = data.get("channel", "auto")
        if channel not in CHANNELS:
            self.err((*at, "channel"), f"expected one of {', '.join(CHANNELS)}, got {channel!r}")
        content = self.content((*at, "content"), data["content"]) if "content" in data else {}
        declared = parse_experiment(self.doc, at, data, f"{journey}.{sid}", self.errors, self.variant, ("content",))
        if declared and kind == "welcome":
            self.err((*at, "variants"), "a welcome step goes out with the 20-second welcome code: it cannot be "
                                        "an experiment (put the variants on a later step)")
        if "variants" in data and "content" in data:
            self.err((*at, "content"), "a step with variants sends each variant's content: move it into the variants")
        elif "content" not in data and "variants" not in data:
            self.err(at, "missing key 'content'")
        experiment, variants = declared if declared else (None, {})
        replies = self.replies((*at, "replies"), data["replies"]) if "replies" in data else ()
        if replies and channel == "staff":
            self.err((*at, "replies"), "a staff step is sent by a person: answers to it never reach the bot")
        hours = self.integer(at, data, "replies_for_hours", 1, MAX_REPLY_HOURS, required=False)
        if hours is not None and "replies" not in data:
            self.err((*at, "replies_for_hours"), "replies_for_hours without replies")
        if len(self.errors) > n or sid is None or kind is None:
            return None
        if variants:
            content = next(iter(variants.values()))  # what previews show; the touch sends the customer's variant
        return Step(sid, wait, kind, channel, content, at_time, window, replies, hours or DEFAULT_HOURS,
                    experiment, variants)

    def variant(self, at: KeyPath, item: dict[str, Any]) -> dict[str, Any] | None:
        """One variant's content (an experiment's arm of a step)."""
        if "content" not in item:
            self.err(at, "missing key 'content' (each variant sends its own content)")
            return None
        n = len(self.errors)
        content = self.content((*at, "content"), item["content"])
        return content if len(self.errors) == n else None

    def journey(self, at: KeyPath, value: Any) -> Journey | None:
        data = self.mapping(at, value, JOURNEY_KEYS)
        if data is None:
            return None
        n = len(self.errors)
        jid = self.ident(at, data, "id")
        if jid is not None:
            self.ids.add(jid)
        title = self.text(at, data, "title")
        priority = self.integer(at, data, "priority", 0, 1000)
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            self.err((*at, "enabled"), f"expected true or false, got {shown(enabled)}")
        trigger, cal_segment = None, None
        if "trigger" in data:
            trigger, cal_segment = self.trigger((*at, "trigger"), data["trigger"])
        else:
            self.err(at, "missing key 'trigger'")
        stop_on = frozenset(self.words((*at, "stop_on"), data["stop_on"], STOP_FACTS)) if "stop_on" in data else frozenset()
        segment = self.segment((*at, "segment"), data["segment"]) if "segment" in data else Segment()
        if cal_segment is not None:
            if "segment" in data:
                self.err((*at, "trigger", "segment"), "give the segment once (here or at the journey level)")
            segment = cal_segment
        steps: list[Step] = []
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            self.err((*at, "steps") if "steps" in data else at, "expected a non-empty list of steps")
            raw_steps = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_steps):
            step = self.step((*at, "steps", i), raw, jid)
            if step is None:
                continue
            if step.id in seen:
                self.err((*at, "steps", i, "id"), f"duplicate step id {step.id!r}")
            seen.add(step.id)
            steps.append(step)
        if len(self.errors) > n or trigger is None or jid is None or title is None or priority is None:
            return None
        return Journey(jid, title, priority, trigger, tuple(steps), stop_on, segment, enabled, str(self.doc.path))




def load_file(path: Path | str) -> tuple[list[Journey], list[ConfigError]]:
    """Journeys of one file (a mapping, or a list of mappings under `journeys:`) and its errors."""
    found, check = _check_file(path)
    return found, check.errors


def _check_file(path: Path | str) -> tuple[list[Journey], _Checker]:
    """The valid journeys of one file, and the checker that walked it (its errors and references)."""
    try:
        doc = yamlfile.load(path)
    except ConfigError as exc:
        check = _Checker(yamlfile.Doc(Path(path), None))
        check.errors.append(exc)
        return [], check
    check = _Checker(doc)
    data = doc.data
    if isinstance(data, dict) and "journeys" in data:
        check.mapping((), data, {"journeys"})
        items = data["journeys"] if isinstance(data["journeys"], list) else None
        if items is None:
            check.err(("journeys",), "expected a list of journeys")
        found = [check.journey(("journeys", i), item) for i, item in enumerate(items or [])]
    else:
        found = [check.journey((), data)]
    return [j for j in found if j is not None], check


def _check_enrols(checks: list[_Checker], journeys: list[Journey], where: Path) -> list[ConfigError]:
    """Every journey a reply option enrols exists (in any file) and can be started without a coupon."""
    ids = set().union(*(c.ids for c in checks))
    by_id = {j.id: j for j in journeys}
    errors = []
    for check in checks:
        for keypath, name in check.enrols:
            target = by_id.get(name)
            if name not in ids:
                errors.append(check.doc.error(keypath, f"unknown journey {name!r} (no journey has this id in {where})"))
            elif target is not None and target.trigger.type == "coupon_issued":
                errors.append(check.doc.error(keypath, f"journey {name!r} follows an issued coupon (coupon_issued) "
                                                       "and cannot be started by a reply"))
    return errors


def load_dir(directory: Path | str = DEFAULT_DIR) -> tuple[list[Journey], list[ConfigError]]:
    """Every `*.yaml` under `directory` (sorted by path), with all errors, including duplicate ids."""
    directory = Path(directory)
    paths = sorted(directory.rglob("*.yaml")) if directory.is_dir() else [directory]
    if not paths:
        return [], [ConfigError(f"{directory}:1: no *.yaml journey files")]
    journeys: list[Journey] = []
    errors: list[ConfigError] = []
    checks: list[_Checker] = []
    where: dict[str, str] = {}
    for path in paths:
        found, check = _check_file(path)
        errors += check.errors
        checks.append(check)
        for j in found:
            if j.id in where:
                doc = yamlfile.load(path)
                keypath = ("id",) if isinstance(doc.data, dict) and "journeys" not in doc.data else ()
                errors.append(doc.error(keypath, f"duplicate journey id {j.id!r} (also in {where[j.id]})"))
                continue
            where[j.id] = str(path)
            journeys.append(j)
    return journeys, errors + _check_enrols(checks, journeys, directory)


def validate(directory: Path | str = DEFAULT_DIR) -> list[ConfigError]:
    """All errors of the journeys under `directory`; empty when every file is valid."""
    return load_dir(directory)[1]


def load(directory: Path | str = DEFAULT_DIR) -> tuple[Journey, ...]:
    """Valid journeys, or a ConfigError listing every problem (the first line names the first)."""
    journeys, errors = load_dir(directory)
    if errors:
        raise ConfigError("\n".join(str(e) for e in errors))
    return tuple(journeys)
