"""Price questions, requests for a person and complaints go to a human."""

from __future__ import annotations

from handlers.actions import Action, RequestHandoff, Tag
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent

TAGS = {"price": "询价", "complaint": "投诉", "human": "要人工"}


def on_handoff(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Tag the customer, record a handoff request and tell them a consultant will contact them."""
    assert intent is not None  # its routes match intents only
    reply = ctx.reply("complaint" if intent.intent == "complaint" else "handoff")
    return [Tag(msg.external_userid, TAGS[intent.intent]),
            RequestHandoff(msg.open_kfid, msg.external_userid, intent.intent, tuple(intent.matched), msg.text, reply,
                           msg.msgid)]
