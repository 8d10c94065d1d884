"""What handlers decide, as data; the executor performs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Seen:
    """A customer message arrived: record it once (customer record, SOP triggers, history, numbers)."""

    open_kfid: str
    customer: str
    msgid: str
    text: str
    msgtype: str
    at: int  # when the customer sent it (0: unknown, the executor takes now)
    intent: str | None = None
    matched: tuple[str, ...] = ()
    confidence: float | None = None
    fell_back: bool = False  # the bot could only answer with the fallback (counts towards the offer)


@dataclass(frozen=True, slots=True)
class SendText:
    """A kf text message to a customer."""

    open_kfid: str
    customer: str
    text: str


@dataclass(frozen=True, slots=True)
class IssueCoupon:
    """Issue (or find) the customer's coupon and send it; the executor enforces budget and limits."""

    open_kfid: str
    customer: str
    cause_msgid: str


@dataclass(frozen=True, slots=True)
class RequestHandoff:
    """Mark the customer for a human; tell them someone will contact them."""

    open_kfid: str
    customer: str
    intent: str
    matched: tuple[str, ...]
    text: str
    reply: str
    cause: str


@dataclass(frozen=True, slots=True)
class StaffReplied:
    """A human replied from the WeCom client (kf origin 5)."""

    customer: str
    servicer: str
    at: int


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """kf session_status_change: 1 picked from the queue, 2 transferred, 3 ended."""

    customer: str
    change_type: int
    servicer: str
    at: int


@dataclass(frozen=True, slots=True)
class ServicerChanged:
    """kf servicer_status_change: a servicer of `open_kfid` started (`receiving`) or stopped receiving."""

    open_kfid: str
    servicer: str
    receiving: bool


@dataclass(frozen=True, slots=True)
class Welcome:
    """The customer opened the kf chat (enter_session); `code` allows one message within 20 s."""

    open_kfid: str
    customer: str
    code: str
    at: int
    scene: str = ""  # the kf link's scene: the channel that brought the customer


@dataclass(frozen=True, slots=True)
class OptOut:
    """The customer unsubscribed from touches."""

    open_kfid: str
    customer: str
    reply: str


@dataclass(frozen=True, slots=True)
class Tag:
    """Set a behaviour tag on the customer (with the time it was set)."""

    customer: str
    tag: str


@dataclass(frozen=True, slots=True)
class Enrol:
    """Enrol the customer in an SOP journey by its id (an answer to a step's question chose it)."""

    customer: str
    journey: str
    at: int  # when the customer chose it (0: unknown, the executor takes now)


@dataclass(frozen=True, slots=True)
class Record:
    """Append an event to the history."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendFailed:
    """WeCom reported a kf message it could not deliver (msg_send_fail)."""

    customer: str
    fail_type: int
    fail_msgid: str


Action = Seen | Welcome | StaffReplied | SessionChanged | ServicerChanged | SendFailed | SendText | IssueCoupon | RequestHandoff | OptOut | Tag | Enrol | Record
