"""A decrypted WeCom callback as it is queued (kf messages are in handlers/messages.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


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

    @property
    def shard_key(self) -> str:
        """Whose callbacks these are (the customer, the kf account or the sender): one inbox shard each."""
        f = self.fields
        return f.get("ExternalUserID") or f.get("OpenKfId") or f.get("FromUserName") or self.dedupe_key

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "fields": self.fields}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> Callback:
        raw = json.loads(data)
        return cls(raw["kind"], raw["fields"])
