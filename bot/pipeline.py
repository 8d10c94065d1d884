"""One kf message, top to bottom: classify -> route -> act -> record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import handlers
from bot.act.executor import Executor
from bot.act.triggers import Triggers
from bot.records.customers import Customers
from bot.records.store import Store
from handlers.actions import Action, OptOut, Record, Tag
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.classify import Classifier, Intent

log = logging.getLogger("bot.pipeline")


def silent(action: Action) -> Action:
    """The same action without a message to the customer."""
    return replace(action, reply="") if isinstance(action, OptOut) else action


class Pipeline:
    """Turns a pulled kf message into executed actions."""

    def __init__(self, executor: Executor, triggers: Triggers, store: Store, customers: Customers,
                 replies: Mapping[str, str], classifier: Callable[[], Classifier | None] = lambda: None,
                 human_holds: Callable[[str, str], bool] = lambda customer, msgid: False) -> None:
        self.executor = executor
        self.triggers = triggers
        self.store = store
        self.customers = customers
        self.replies = replies
        self.classifier = classifier  # the intent classifier as currently loaded, or None
        self.human_holds = human_holds

    def process(self, msg: KfMessage) -> str:
        """Handle one message exactly once as the customer sees it; returns the route taken."""
        started = time.perf_counter()
        if msg.raw.get("backlog"):  # history from before the bot's first pull of this account
            self.store.record("backlog_skipped", customer=msg.external_userid, msgid=msg.msgid, text=msg.text)
            return "backlog"
        classifier = self.classifier()
        ctx = Ctx(replies=self.replies, faq_answer=classifier.faq_answer if classifier else None)
        intent = None
        if msg.is_customer:
            at = float(msg.send_time or time.time())
            if msg.msgtype == "text" and msg.text.strip() and classifier:
                intent = classifier.classify(msg.text)
            if not self.store.is_done(f"kf:{msg.msgid}:seen"):  # a retried entry is not counted again
                self.see(msg, intent, at)
                self.store.mark_done(f"kf:{msg.msgid}:seen")
        name, actions = handlers.route(msg, intent, ctx)
        if msg.is_customer and self.human_holds(msg.external_userid, msg.msgid):
            # A human has the chat: the bot says nothing, but tags and an opt-out still count.
            name, actions = "human_holds", [Record("message_while_human", {"customer": msg.external_userid,
                                                                           "msgid": msg.msgid, "text": msg.text}),
                                            *(silent(a) for a in actions if isinstance(a, (Tag, OptOut)))]
        self.executor.run(actions, f"kf:{msg.msgid}")
        log.debug("kf msg %s origin=%s route=%s actions=%d %.1fms", msg.msgid, msg.origin, name,
                 len(actions), (time.perf_counter() - started) * 1000)
        return name

    def see(self, msg: KfMessage, intent: Intent | None, at: float) -> None:
        """Record a customer message once: customer record, triggers, history, numbers."""
        customer = msg.external_userid
        self.customers.saw_message(customer, at, msg.open_kfid)
        self.triggers.customer_wrote(customer, at)
        self.customers.remember(customer, f"客户：{msg.text or '[' + msg.msgtype + ']'}")
        if intent is not None:
            self.customers.saw_intent(customer, intent.intent)
            self.triggers.intent_seen(customer, intent.intent, at)
        self.store.record("message_in", customer=customer, msgid=msg.msgid, text=msg.text, msgtype=msg.msgtype,
                          intent=getattr(intent, "intent", None), matched=list(getattr(intent, "matched", ())))
        self.store.count("message_in")
