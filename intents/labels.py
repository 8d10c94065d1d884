"""The intent labels, their routes and their Chinese names (a leaf: no jieba, no model)."""

from __future__ import annotations

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
