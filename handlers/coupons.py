"""Discount and coupon questions get a personal, time-limited coupon."""

from __future__ import annotations

from typing import Any

from bot.actions import Action, IssueCoupon, Tag
from bot.inbound import KfMessage
from handlers.context import Ctx


def on_discount(msg: KfMessage, intent: Any, ctx: Ctx) -> list[Action]:
    """Tag 要优惠 and issue (or resend) the customer's coupon."""
    return [Tag(msg.external_userid, "要优惠"), IssueCoupon(msg.open_kfid, msg.external_userid, msg.msgid)]
