"""Replies to SOP steps: a step's options, normalising a customer's answer, and the open question in Redis.

A step may ask a question ("回复数字即可") and declare `replies:`. When such a touch reaches the customer
over kf, the engine remembers its options for `replies_for_hours`; a customer message that matches
exactly one of them in that time is that option's answer, and the question is then answered (once)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

__all__ = ["ReplyOption", "Answer", "Offers", "normalise", "match", "OFFER", "DEFAULT_HOURS"]

OFFER = "wecom:sop:ask:{%s}"  # per customer: the open question of the last step with replies sent over kf
DEFAULT_HOURS = 48
# Answers seldom come alone: "我选2", "第2个", "2吧", "要优惠活动".
_FILLER = re.compile(r"(?:我)?(?:选择|选|選擇|選|回复|回|想要|想看|要|看)?(?:第)?(.+?)(?:个|号|项|条)?(?:吧|呀|啊|哦|喔|呢|啦|嘛|哈)?")
_NUMERALS = {"一": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5", "六": "6", "七": "7", "八": "8",
             "九": "9", "十": "10"}
# Marks, symbols (emoji), punctuation, separators and format characters (ZWJ, variation selectors).
_EDGE = ("M", "S", "P", "Z", "C")


@dataclass(frozen=True, slots=True)
class ReplyOption:
    """One answer a step accepts: the words that mean it, and what it does."""

    words: tuple[str, ...]  # as the operator wrote them ("2", "优惠活动")
    tag: str | None = None  # a behaviour tag set on the customer
    reply: str | None = None  # a kf text sent back
    journey: str | None = None  # a journey the customer is enrolled in
    coupon: bool = False  # the customer's coupon (the coupon book picks the campaign, as in chat)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "words": list(self.words)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplyOption:
        return cls(tuple(data.get("words") or ()), data.get("tag"), data.get("reply"), data.get("journey"),
                   bool(data.get("coupon")))


@dataclass(frozen=True, slots=True)
class Answer:
    """A customer message that answers an open question: which touch asked it, and the option chosen."""

    journey: str
    step: str
    touch_id: str
    option: ReplyOption


def _trim(text: str) -> str:
    """Drop punctuation, emoji and spaces from both ends."""
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in _EDGE:
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in _EDGE:
        end -= 1
    return text[start:end]


def normalise(text: str) -> str:
    """An answer as it is compared: "２", "2️⃣", "2。", "选2", "第二个" -> "2"; words lower-cased, no spaces."""
    text = "".join(unicodedata.normalize("NFKC", text or "").casefold().split())
    text = _trim(text)
    m = _FILLER.fullmatch(text)
    core = _trim(m.group(1)) if m else text
    return _NUMERALS.get(core, core)


def match(options: tuple[ReplyOption, ...], text: str) -> ReplyOption | None:
    """The one option `text` names, or None (no option, or more than one)."""
    said = normalise(text)
    found = [o for o in options if said and said in {normalise(w) for w in o.words}]
    return found[0] if len(found) == 1 else None


# Replace the open question unless it is this touch's already (a retried touch must not reopen an answer).
_OFFER = """
if redis.call('HGET', KEYS[1], 'touch') == ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'touch', ARGV[1], 'journey', ARGV[2], 'step', ARGV[3], 'sent', ARGV[4],
           'until', ARGV[5], 'options', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""
# Close the question with this message, unless another one closed it (or it expired) meanwhile.
_ANSWERED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'answered', ARGV[1]) == 1 then return 1 end
if redis.call('HGET', KEYS[1], 'answered') == ARGV[1] then return 1 end
return 0
"""


class Offers:
    """The open question per customer (wecom:sop:ask:{customer}); the key expires with the question."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._offer = r.register_script(_OFFER)
        self._answered = r.register_script(_ANSWERED)

    def offer(self, customer: str, journey: str, step: str, touch_id: str, options: tuple[ReplyOption, ...],
              sent: float, hours: int) -> bool:
        """Remember the options of a touch sent at `sent`; True when this touch's question is new."""
        until = sent + hours * 3600
        body = json.dumps([o.to_json() for o in options], ensure_ascii=False)
        # Redis keeps the key a minute longer than the question is open: `until` decides, the TTL cleans up.
        return bool(self._offer(keys=[OFFER % customer],
                                args=[touch_id, journey, step, f"{sent:.3f}", f"{until:.3f}", body, hours * 3600 + 60]))

    def answer(self, customer: str, msgid: str, text: str, at: float,
               offer: Mapping[str, str] | None = None) -> Answer | None:
        """The answer message `msgid` (sent at `at`) gives to the open question, which it then closes.

        Reading and closing are one: of two messages racing for one question only one answers it. A
        question closed by another message stays closed; the closing message itself still finds it, so a
        retried entry decides the same actions (the executor then skips those already done)."""
        key = OFFER % customer
        h = self.r.hgetall(key) if offer is None else offer
        if not h or h.get("answered", msgid) != msgid:
            return None
        if not float(h["sent"]) - 1 <= at <= float(h["until"]):  # send_time has whole seconds
            return None
        option = match(tuple(ReplyOption.from_json(o) for o in json.loads(h["options"])), text)
        if option is None or not self._answered(keys=[key], args=[msgid]):
            return None
        return Answer(h["journey"], h["step"], h["touch"], option)
