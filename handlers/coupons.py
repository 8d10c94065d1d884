"""Discount and coupon questions get a personal, time-limited coupon."""

from __future__ import annotations

from handlers.actions import Action, IssueCoupon, Tag
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent


def on_discount(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Issue (or resend) the customer's coupon, then tag 要优惠 (so the tag counts from the next ask)."""
    return [IssueCoupon(msg.open_kfid, msg.external_userid, msg.msgid), Tag(msg.external_userid, "要优惠")]
