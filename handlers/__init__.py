"""The route table: the first route whose `when` holds handles the message (specific to general)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers import coupons, events, handoff, optout, staff, text
from handlers.actions import Action
from handlers.context import Ctx
from handlers.messages import KfMessage

Predicate = Callable[[KfMessage, Any], bool]
Handler = Callable[[KfMessage, Any, Ctx], list[Action]]


@dataclass(frozen=True, slots=True)
class Route:
    """A named predicate and the handler it selects."""

    name: str
    when: Predicate
    handle: Handler


def intent_is(*names: str) -> Predicate:
    """Matches a classified message whose intent is one of `names`."""
    return lambda msg, intent: intent is not None and intent.intent in names


ROUTES: tuple[Route, ...] = (
    Route("staff_reply", lambda m, i: m.is_staff, staff.on_staff_reply),  # origin 5: record only
    Route("kf_event", lambda m, i: m.msgtype == "event", events.on_event),
    Route("other_origin", lambda m, i: not m.is_customer, staff.on_other_origin),
    Route("non_text", lambda m, i: m.msgtype != "text" or not m.text.strip(), text.on_unsupported),
    Route("unclassified", lambda m, i: i is None, text.on_default),
    Route("complaint", intent_is("complaint"), handoff.on_handoff),  # people first, priority
    Route("human_or_price", intent_is("human", "price"), handoff.on_handoff),
    Route("unsubscribe", intent_is("unsubscribe"), optout.on_unsubscribe),
    Route("discount", intent_is("discount"), coupons.on_discount),
    Route("faq", lambda m, i: True, text.on_faq_or_fallback),
)


def route(msg: KfMessage, intent: Any, ctx: Ctx) -> tuple[str, list[Action]]:
    """The matching route's name and the actions its handler decided."""
    for r in ROUTES:
        if r.when(msg, intent):
            return r.name, r.handle(msg, intent, ctx)
    raise AssertionError("the last route always matches")
