"""The WeCom calls the bot makes, as one small typed interface, and the errors they raise."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol


class WeComError(Exception):
    """WeCom answered with a non-zero errcode (or could not be reached: errcode None)."""

    def __init__(self, errcode: int | None, errmsg: str, endpoint: str = ""):
        super().__init__(f"{endpoint}: errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.endpoint = endpoint


class WeComConfigError(WeComError):
    """gettoken refused our credentials: an operator has to fix the configuration."""


class WeComRateLimited(WeComError):
    """45009/45033: too many calls; back off."""


CONFIG_HINTS = {
    40001: "the app secret (WECOM_SECRET) is wrong: copy it again from 应用管理 -> your app -> Secret",
    40013: "the CorpID (WECOM_CORP_ID) is wrong: copy it from 我的企业 -> 企业信息 -> 企业ID",
    60020: "this server's public IP is not in the app's 企业可信IP list: add it under 应用管理 -> your app",
    48002: "the app lacks permission for this API: bind it under 微信客服 -> 可调用接口的应用",
}

APP_MESSAGE = "message/send"  # the endpoint of app messages (staff alerts), named in rate-limit errors
ROBOT = "webhook/send"  # the group robot endpoint, named in rate-limit errors
KF_TEXT_MAX_BYTES = 2048  # kf send_msg text.content
WELCOME_TEXT_MAX_BYTES = 4000  # externalcontact/send_welcome_msg text.content
ELLIPSIS = "…"


def derive_msgid(key: str) -> str:
    """Our kf msgid for an action: stable across retries, <= 32 bytes of [0-9a-zA-Z_-]."""
    return "b" + base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode()[:31]


def clip(text: str, max_bytes: int, ellipsis: str = ELLIPSIS) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes on a character boundary, `ellipsis` ending it if cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(ellipsis.encode())
    if room <= 0:
        return data[:max_bytes].decode(errors="ignore")
    return data[:room].decode(errors="ignore") + ellipsis


# kf errors after which retrying the same send cannot succeed.
KF_CANNOT_SEND = {95001, 95002, 95013, 95018}

# kf/send_msg refuses a msgid it has already delivered. The errcode of that refusal is not published, so it
# is recognised by its errmsg ("msgid ... exist/duplicate/repeat/used"), as in errcode 40058 "msgid ...".
_MSGID_USED = re.compile(r"msgid.{0,40}(exist|dup|repeat|used|重复)|(duplicate|repeated|重复).{0,20}msgid", re.I)

# message/send: WeCom drops a second identical message sent within the interval (at most 4 h), so a retried
# alert whose first answer was lost is not a second card.
DUPLICATE_CHECK = {"enable_duplicate_check": 1, "duplicate_check_interval": 1800}


def msgid_already_used(exc: WeComError) -> bool:
    """WeCom refused a send because its msgid was already delivered: the message reached the customer."""
    return exc.errcode not in (None, -1) and bool(_MSGID_USED.search(exc.errmsg or ""))


def transient(exc: WeComError) -> bool:
    """The outcome is unknown or WeCom was busy (no answer, 5xx, errcode -1): the same call may be tried again."""
    return exc.errcode in (None, -1)


@dataclass(frozen=True, slots=True)
class KfBatch:
    """One page of kf/sync_msg."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str = ""
    has_more: bool = False


@dataclass(frozen=True, slots=True)
class ContactWay:
    """A 「联系我」 QR code (externalcontact/add_contact_way) or a kf link (kf/add_contact_way)."""

    config_id: str = ""  # "" for a kf link: WeCom gives it no id
    url: str = ""  # the QR code image URL, or the kf link


@dataclass(frozen=True, slots=True)
class MassTask:
    """What externalcontact/add_msg_template answered: the task id and the customers it could not include."""

    msgid: str = ""
    fail_list: list[str] = field(default_factory=list)


class WeCom(Protocol):
    """What the bot asks of WeCom."""

    def sync_kf(self, token: str, open_kfid: str, cursor: str, limit: int = 1000) -> KfBatch: ...

    def send_kf(self, open_kfid: str, customer: str, msgid: str, payload: dict[str, Any]) -> str: ...

    def send_kf_on_event(self, code: str, msgid: str, payload: dict[str, Any]) -> str: ...

    def service_state(self, open_kfid: str, customer: str) -> tuple[int, str]: ...

    def trans_service_state(self, open_kfid: str, customer: str, state: int, servicer: str = "") -> str: ...

    def servicers(self, open_kfid: str) -> dict[str, int]: ...

    def send_app_message(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    def send_robot(self, key: str, payload: dict[str, Any]) -> None: ...

    def update_template_card(self, payload: dict[str, Any]) -> None: ...

    def kf_customer_nickname(self, customer: str) -> str | None: ...

    def member_name(self, userid: str) -> str | None: ...

    def send_welcome_msg(self, code: str, text: str) -> None: ...

    def mark_tag(self, staff: str, customer: str, tag_ids: list[str]) -> None: ...

    def add_msg_template(self, body: dict[str, Any]) -> MassTask: ...

    def add_contact_way(self, state: str, users: list[str], skip_verify: bool, remark: str) -> ContactWay: ...

    def update_contact_way(self, config_id: str, state: str, users: list[str], skip_verify: bool,
                           remark: str) -> None: ...

    def get_contact_way(self, config_id: str) -> dict[str, Any]: ...

    def kf_contact_way(self, open_kfid: str, scene: str) -> ContactWay: ...

    def kf_account_ids(self) -> list[str]: ...

    def corp_tags(self) -> dict[str, str]: ...

    def add_corp_tags(self, group: str, names: list[str]) -> dict[str, str]: ...
