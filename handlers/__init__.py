"""The route table: the first route whose `when` holds handles the message (specific to general)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from handlers import coupons, events, handoff, optout, staff, text
from handlers.actions import Action, OptOut, Record, Seen, SendText, Tag
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent

Predicate = Callable[[KfMessage, Intent | None, Ctx], bool]
Handler = Callable[[KfMessage, Intent | None, Ctx], list[Action]]


@dataclass(frozen=True, slots=True)
class Route:
    """A named predicate and the handler it selects."""

    name: str
    when: Predicate
    handle: Handler


def intent_is(*names: str) -> Predicate:
    """Matches a classified message whose intent is one of `names`."""
    return lambda msg, intent, ctx: intent is not None and intent.intent in names


def silent(action: Action) -> Action:
    """The same action without a message to the customer."""
    return replace(action, reply="") if isinstance(action, OptOut) else action


def on_human_holds(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """A consultant has the chat: the bot says nothing, but tags and an opt-out still count."""
    _, actions = route(msg, intent, replace(ctx, human_holds=False))
    return [Record("message_while_human", {"customer": msg.external_userid, "msgid": msg.msgid, "text": msg.text}),
            *(silent(a) for a in actions if isinstance(a, Tag | OptOut))]


ROUTES: tuple[Route, ...] = (
    Route("backlog", lambda m, i, c: m.backlog, staff.on_backlog),  # history from before the first pull
    Route("staff_reply", lambda m, i, c: m.is_staff, staff.on_staff_reply),  # origin 5: record only
    Route("kf_event", lambda m, i, c: m.msgtype == "event", events.on_event),
    Route("other_origin", lambda m, i, c: not m.is_customer, staff.on_other_origin),
    Route("human_holds", lambda m, i, c: c.human_holds, on_human_holds),  # a consultant answers, not the bot
    Route("non_text", lambda m, i, c: m.msgtype != "text" or not m.text.strip(), text.on_unsupported),
    Route("unclassified", lambda m, i, c: i is None, text.on_default),
    Route("complaint", intent_is("complaint"), handoff.on_handoff),  # people first, priority
    Route("human_or_price", intent_is("human", "price"), handoff.on_handoff),
    Route("unsubscribe", intent_is("unsubscribe"), optout.on_unsubscribe),
    Route("discount", intent_is("discount"), coupons.on_discount),
    Route("faq", lambda m, i, c: True, text.on_faq_or_fallback),
)


def seen(msg: KfMessage, intent: Intent | None, fell_back: bool = False) -> Seen:
    """The record of a customer message, performed once before whatever its route decided."""
    return Seen(msg.open_kfid, msg.external_userid, msg.msgid, msg.text, msg.msgtype, msg.send_time,
                intent.intent if intent else None, tuple(intent.matched) if intent else (),
                intent.confidence if intent else None, fell_back)


def fell_back(name: str, actions: list[Action], ctx: Ctx) -> bool:
    """The route sent the fallback text (not an FAQ answer, not the offer of a person)."""
    fallback = ctx.faq_answer(None) if ctx.faq_answer else None
    return name == "faq" and any(isinstance(a, SendText) and a.text == fallback for a in actions)


def route(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> tuple[str, list[Action]]:
    """The matching route's name and the actions its handler decided (a customer's message is first Seen)."""
    for r in ROUTES:
        if r.when(msg, intent, ctx):
            actions = r.handle(msg, intent, ctx)
            if msg.is_customer and r.name != "backlog":
                actions = [seen(msg, intent, fell_back(r.name, actions, ctx)), *actions]
            return r.name, actions
    raise AssertionError("the last route always matches")
