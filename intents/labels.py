"""The intent labels, their routes, their Chinese names and the Intent result (a leaf: no jieba, no model)."""

from __future__ import annotations

from dataclasses import dataclass

ROUTES = {
    "complaint": "handoff",
    "human": "handoff",
    "price": "handoff",
    "discount": "coupon",
    "unsubscribe": "optout",
    "greeting": "bot",
    "other": "bot",
}
INTENTS = tuple(ROUTES)
LABELS_ZH = {"complaint": "投诉", "human": "找人工", "price": "询价", "discount": "要优惠",
             "unsubscribe": "退订", "greeting": "问候", "other": "其他"}


@dataclass(frozen=True, slots=True)
class Intent:
    """The classification of one customer message."""

    text: str
    intent: str
    topic: str | None
    matched: tuple[str, ...]
    negated: bool
    route: str
    confidence: float = 1.0
    why: tuple[str, ...] = ()
