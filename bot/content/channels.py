"""Channels (渠道活码) from YAML: where a customer came from, who receives them, what they get first."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot import yamlfile
from bot.content.team import USERID_RE
from bot.yamlfile import ConfigError, Doc, KeyPath, shown

__all__ = ["Channel", "ChannelFile", "ConfigError", "load_channels", "parse_channels", "UNKNOWN"]

# The contact way `state` is at most 30 characters, the kf `scene` at most 32 bytes of [0-9a-zA-Z_-]
# (platform notes §2.7, §3.6): a channel id must fit both.
ID_RE = re.compile(r"[0-9A-Za-z_-]{1,30}")
REMARK_MAX = 30  # contact way remark: at most 30 characters
WELCOME_MAX_BYTES = 4000  # send_welcome_msg text.content
TAG_MAX = 30  # a corp tag name: at most 30 characters
MAX_STAFF = 100  # a multi-member contact way takes at most 100 members
UNKNOWN = "unknown"  # the channel of a state no channel in YAML has
DEFAULT_ATTRIBUTION_HOURS = 72
KEYS = frozenset({"id", "name", "staff", "kf", "tags", "welcome", "journey", "skip_verify", "remark"})


@dataclass(frozen=True, slots=True)
class Channel:
    """One 活码: a staff contact way (`staff`) or a kf link with a scene (`kf`)."""

    id: str
    name: str
    staff: tuple[str, ...] = ()
    kf: str = ""  # "" for a staff channel; "default" (the configured kf account) or an open_kfid
    tags: tuple[str, ...] = ()
    welcome: str = ""
    journey: str = ""
    skip_verify: bool = True
    remark: str = ""
    line: int = 1  # where it is defined in its file

    @property
    def kind(self) -> str:
        """"kf" or "staff"."""
        return "kf" if self.kf else "staff"

    def fingerprint(self) -> str:
        """What the contact way on WeCom must match: a change means `channels sync` updates it."""
        shape = {k: v for k, v in asdict(self).items() if k in ("staff", "kf", "skip_verify", "remark", "id")}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ChannelFile:
    """content/channels.yaml: the channels, and how long after a touch or coupon a purchase is credited to it."""

    channels: tuple[Channel, ...] = ()
    attribution_hours: int = DEFAULT_ATTRIBUTION_HOURS

    def find(self, state: str) -> Channel | None:
        """The channel whose code carries `state` (a contact way state or a kf scene)."""
        return next((c for c in self.channels if c.id == state), None)


def load_channels(path: Path | str, journeys: frozenset[str] | None = None) -> ChannelFile:
    """Read and validate content/channels.yaml; `journeys`: the journey ids a channel may enrol."""
    return parse_channels(yamlfile.load(path), journeys)


def parse_channels(doc: Doc, journeys: frozenset[str] | None = None) -> ChannelFile:
    """Validate a parsed channels file; every error names file, line and key."""
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict) or set(data) - {"channels", "attribution_hours"}:
        extra = sorted(set(map(str, data)) - {"channels", "attribution_hours"}) if isinstance(data, dict) else []
        raise doc.error((extra[0],) if extra else (), "expected channels: (a list of channels) and optionally "
                                                      "attribution_hours: (a whole number of hours)")
    hours = int(yamlfile.number(doc, ("attribution_hours",), data.get("attribution_hours", DEFAULT_ATTRIBUTION_HOURS),
                                minimum=1, maximum=90 * 24, whole=True))
    items = data.get("channels") or []
    if not isinstance(items, list):
        raise doc.error(("channels",), f"expected a list of channels, got {shown(items)}")
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        channel = _channel(doc, ("channels", i), item, journeys)
        if channel.id in seen:
            raise doc.error(("channels", i, "id"), f"channel {channel.id!r} is defined twice (first at line "
                                                   f"{seen[channel.id]})")
        seen[channel.id] = channel.line
        out.append(channel)
    return ChannelFile(tuple(out), hours)


def _channel(doc: Doc, at: KeyPath, item: Any, journeys: frozenset[str] | None) -> Channel:
    if not isinstance(item, dict):
        raise doc.error(at, f"expected a channel (id, name, staff or kf, ...), got {shown(item)}")
    unknown = sorted(set(map(str, item)) - KEYS)
    if unknown:
        raise doc.error((*at, unknown[0]), f"unknown key (known: {', '.join(sorted(KEYS))})")
    cid = item.get("id")
    if not isinstance(cid, str) or not ID_RE.fullmatch(cid) or cid == UNKNOWN:
        raise doc.error((*at, "id"), f"expected 1-30 letters, digits, _ or - (it becomes the QR code's state / "
                                     f"the kf scene), not {UNKNOWN!r}; got {shown(cid)}")
    name = yamlfile.text(doc, (*at, "name"), item.get("name"))
    staff = _staff(doc, (*at, "staff"), item.get("staff"))
    kf = item.get("kf")
    if kf is True:
        kf = "default"
    if kf is not None and (not isinstance(kf, str) or not kf.strip()):
        raise doc.error((*at, "kf"), f"expected true (the configured kf account) or an open_kfid, got {shown(kf)}")
    if bool(staff) == bool(kf):
        raise doc.error(at, "a channel routes to staff (staff: [userid, ...]) or to the kf account (kf: true), "
                            "exactly one of them")
    tags = item.get("tags") or []
    if not isinstance(tags, list) or any(not isinstance(t, str) or not t.strip() or len(t) > TAG_MAX for t in tags):
        raise doc.error((*at, "tags"), f"expected a list of tag names (1-{TAG_MAX} characters), got {shown(tags)}")
    welcome = item.get("welcome") or ""
    if welcome:
        welcome = yamlfile.text(doc, (*at, "welcome"), welcome)
        if len(welcome.encode()) > WELCOME_MAX_BYTES:
            raise doc.error((*at, "welcome"), f"at most {WELCOME_MAX_BYTES} bytes (WeCom's welcome limit), got "
                                              f"{len(welcome.encode())}")
    journey = item.get("journey") or ""
    if journey and (not isinstance(journey, str) or (journeys is not None and journey not in journeys)):
        known = ", ".join(sorted(journeys or ())) or "none"
        raise doc.error((*at, "journey"), f"unknown journey {shown(journey)} (configured: {known})")
    skip_verify = item.get("skip_verify", True)
    if not isinstance(skip_verify, bool):
        raise doc.error((*at, "skip_verify"), f"expected true or false, got {shown(skip_verify)}")
    remark = item.get("remark") or ""
    if remark and (not isinstance(remark, str) or len(remark) > REMARK_MAX):
        raise doc.error((*at, "remark"), f"expected text of at most {REMARK_MAX} characters, got {shown(remark)}")
    return Channel(cid, name.strip(), staff, (kf or "").strip(), tuple(t.strip() for t in tags), welcome,
                   journey, skip_verify, remark, doc.line(at))


def _staff(doc: Doc, at: KeyPath, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_STAFF:
        raise doc.error(at, f"expected a list of 1-{MAX_STAFF} member userids, got {shown(value)}")
    for i, userid in enumerate(value):
        if not isinstance(userid, str) or not USERID_RE.fullmatch(userid):
            raise doc.error((*at, i), f"expected a member userid (letters, digits, _ . @ -), got {shown(userid)}")
    if len(set(value)) != len(value):
        raise doc.error(at, "a member is listed twice")
    return tuple(value)
