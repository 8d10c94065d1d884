"""Unsubscribe requests stop all touches."""

from __future__ import annotations

from handlers.actions import Action, OptOut
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent


def on_unsubscribe(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Mark the customer unsubscribed and confirm it once."""
    return [OptOut(msg.open_kfid, msg.external_userid, ctx.reply("unsubscribe"))]
