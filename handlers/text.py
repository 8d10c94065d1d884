"""Text the bot answers itself: FAQ, fallback, the default reply, unsupported message types."""

from __future__ import annotations

from handlers.actions import Action, Record, RequestHandoff, SendText
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent

GREETED = ("hello", "ack")  # greetings the welcome already answers


def on_default(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """No classifier configured: the configured default reply."""
    return [SendText(msg.open_kfid, msg.external_userid, ctx.reply("default"))]


def on_faq_or_fallback(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Greeting or other: the FAQ answer for its topic, else the fallback that offers a human."""
    topic = intent.topic if intent else None
    if ctx.welcomed and intent is not None and intent.intent == "greeting" and topic in GREETED:
        return [Record("faq", {"customer": msg.external_userid, "topic": topic, "intent": "greeting",
                               "answered_by": "welcome"})]  # one greeting per greeting
    if topic is None and ctx.repeat and ctx.fallbacks >= ctx.repeat.after:
        return on_fallback_again(msg, intent, ctx)
    answer = ctx.faq_answer(topic) if ctx.faq_answer else ctx.reply("default")
    return [SendText(msg.open_kfid, msg.external_userid, answer),
            Record("faq", {"customer": msg.external_userid, "topic": topic, "intent": intent.intent if intent else None})]


def on_fallback_again(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """The bot fell back several times in a row: offer a person, or hand the chat over."""
    assert ctx.repeat is not None
    record = Record("fallback_repeated", {"customer": msg.external_userid, "fallbacks": ctx.fallbacks,
                                           "then": ctx.repeat.mode})
    if ctx.repeat.mode == "handoff":
        return [record, RequestHandoff(msg.open_kfid, msg.external_userid, "human", ("多次未能解答",),
                                       msg.text, ctx.repeat.text, msg.msgid)]
    return [SendText(msg.open_kfid, msg.external_userid, ctx.repeat.text), record]


def on_unsupported(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Images, voice, stickers, empty text: a polite note that we read text."""
    return [SendText(msg.open_kfid, msg.external_userid, ctx.reply("unsupported"))]
