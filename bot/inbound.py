"""Typed records for what arrives: decrypted callbacks (kf messages are in handlers/messages.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from xml.etree import ElementTree

from bot.crypto import BadPayload


def parse_xml(text: str | bytes) -> dict[str, str]:
    """The children of the <xml> root as tag -> text. WeCom never sends a DTD, so any DOCTYPE or
    entity declaration is refused before parsing (no entity expansion, no external entities)."""
    data = text.encode() if isinstance(text, str) else text
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadPayload("DOCTYPE or entity declarations are not allowed")
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, ValueError):
        raise BadPayload("malformed XML") from None
    if root.tag != "xml":
        raise BadPayload("XML without an <xml> root")
    return {child.tag: (child.text or "").strip() if len(child) == 0 else "" for child in root}


@dataclass(frozen=True, slots=True)
class Callback:
    """A decrypted WeCom callback, reduced to flat string fields."""

    kind: str  # kf_notice | app_message | contact_change | card_event | event
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """Identity of this callback across WeCom's retries (see platform notes §1.7)."""
        f = self.fields
        if f.get("MsgId"):
            parts = ["msg", f["MsgId"]]
        elif self.kind == "kf_notice":
            parts = ["kf", f.get("OpenKfId", ""), f.get("Token", ""), f.get("CreateTime", "")]
        elif self.kind == "contact_change":
            parts = ["contact", f.get("ExternalUserID", ""), f.get("UserID", ""),
                     f.get("ChangeType", ""), f.get("CreateTime", "")]
        elif self.kind == "card_event":
            parts = ["card", f.get("FromUserName", ""), f.get("TaskId", ""),
                     f.get("EventKey", ""), f.get("CreateTime", "")]
        else:
            parts = ["event", f.get("FromUserName", ""), f.get("Event", ""), f.get("CreateTime", "")]
        return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "fields": self.fields}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> "Callback":
        raw = json.loads(data)
        return cls(raw["kind"], raw["fields"])


KINDS = {"kf_msg_or_event": "kf_notice", "change_external_contact": "contact_change",
         "template_card_event": "card_event"}


def parse_callback(plain_xml: str, corp_id: str) -> Callback:
    """Decrypted plaintext -> Callback; raises BadPayload on anything we cannot read."""
    fields = parse_xml(plain_xml)
    if fields.get("ToUserName") and fields["ToUserName"] != corp_id:
        raise BadPayload("ToUserName is not our CorpID")
    msg_type = fields.get("MsgType", "")
    if not msg_type:
        raise BadPayload("callback without MsgType")
    if msg_type != "event":
        kind = "app_message"
    else:
        kind = KINDS.get(fields.get("Event", ""), "event")
    if kind == "kf_notice" and not fields.get("OpenKfId"):
        raise BadPayload("kf_msg_or_event without OpenKfId")
    return Callback(kind, fields)
