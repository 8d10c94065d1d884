"""Text the bot answers itself: FAQ, fallback, the default reply, unsupported message types."""

from __future__ import annotations

from handlers.actions import Action, Record, SendText
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.classify import Intent


def on_default(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """No classifier configured: the configured default reply."""
    return [SendText(msg.open_kfid, msg.external_userid, ctx.reply("default"))]


def on_faq_or_fallback(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Greeting or other: the FAQ answer for its topic, else the fallback that offers a human."""
    topic = intent.topic if intent else None
    answer = ctx.faq_answer(topic) if ctx.faq_answer else ctx.reply("default")
    return [SendText(msg.open_kfid, msg.external_userid, answer),
            Record("faq", {"customer": msg.external_userid, "topic": topic, "intent": intent.intent if intent else None})]


def on_unsupported(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Images, voice, stickers, empty text: a polite note that we read text."""
    return [SendText(msg.open_kfid, msg.external_userid, ctx.reply("unsupported"))]
