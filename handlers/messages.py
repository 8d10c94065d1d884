"""A kf message as the worker pulled it with sync_msg: what handlers decide on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class KfMessage:
    """One item of a kf/sync_msg msg_list."""

    msgid: str
    open_kfid: str
    external_userid: str
    send_time: int
    origin: int  # 3 customer, 4 system event, 5 staff member in the WeCom client
    msgtype: str
    servicer_userid: str = ""
    text: str = ""
    event: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_customer(self) -> bool:
        return self.origin == 3

    @property
    def is_staff(self) -> bool:
        return self.origin == 5

    @property
    def backlog(self) -> bool:
        """History from before the bot's first pull of this account: recorded, not answered."""
        return bool(self.raw.get("backlog"))

    @classmethod
    def from_api(cls, item: dict[str, Any], open_kfid: str = "") -> KfMessage:
        """Build from sync_msg JSON; event fields are also lifted for convenience."""
        event: dict[str, Any] = item["event"] if isinstance(item.get("event"), dict) else {}
        text: dict[str, Any] = item["text"] if isinstance(item.get("text"), dict) else {}
        return cls(
            msgid=str(item.get("msgid", "")),
            open_kfid=str(item.get("open_kfid") or event.get("open_kfid") or open_kfid),
            external_userid=str(item.get("external_userid") or event.get("external_userid") or ""),
            send_time=int(item.get("send_time") or 0),
            origin=int(item.get("origin") or 0),
            msgtype=str(item.get("msgtype", "")),
            servicer_userid=str(item.get("servicer_userid", "")),
            text=str(text.get("content") or "") if item.get("msgtype") == "text" else "",
            event=event,
            raw=item,
        )

    @classmethod
    def from_json(cls, data: str) -> KfMessage:
        return cls.from_api(json.loads(data))
