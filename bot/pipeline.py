"""One kf message, top to bottom: classify -> route (handlers/) -> act (bot/act/executor.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import handlers
from bot.act.executor import Executor, message_key
from bot.records import later
from bot.records.customers import Conversation
from handlers import answers
from handlers.context import Ctx
from handlers.messages import KfMessage

if TYPE_CHECKING:
    from intents.classify import Classifier

log = logging.getLogger("bot.pipeline")


class Pipeline:
    """Turns a pulled kf message into executed actions."""

    def __init__(self, executor: Executor, replies: Mapping[str, str],
                 classifier: Callable[[], Classifier | None] = lambda: None,
                 human_holds: Callable[[str, str], bool] = lambda customer, msgid: False,
                 conversation: Callable[[str, str], Conversation] = lambda customer, msgid: Conversation(),
                 welcomes: Callable[[str], bool] = lambda customer: False,
                 turn: Callable[[KfMessage], AbstractContextManager[None]] = lambda msg: nullcontext()) -> None:
        # the customer's turn while their message is handled (one at a time, in order), with what routing needs
        # read ahead in one round trip
        self.turn = turn
        self.conversation = conversation  # the customer's previous message and fallbacks in a row
        self.executor = executor
        self.replies = replies
        self.classifier = classifier  # the intent classifier as currently loaded, or None
        self.human_holds = human_holds
        self.welcomes = welcomes  # this customer's next message is a first contact with a welcome

    def process(self, msg: KfMessage) -> str:
        """Handle one message exactly once as the customer sees it; returns the route taken."""
        with later.gathering(self.executor.store.r), self.turn(msg):  # writes go with the next round trips
            return self._process(msg)

    def _process(self, msg: KfMessage) -> str:
        started = time.perf_counter()
        classifier = self.classifier()
        intent, before = None, Conversation()
        if msg.is_customer:
            before = self.conversation(msg.external_userid, msg.msgid)
        if msg.is_customer and msg.msgtype == "text" and msg.text.strip() and classifier:
            at = float(msg.send_time or time.time())
            recent = bool(before.text) and 0 <= at - before.at <= classifier.context_seconds
            intent = classifier.classify(msg.text, previous=before.text if recent else None)
        held = msg.is_customer and self.human_holds(msg.external_userid, msg.msgid)
        ctx = Ctx(replies=self.replies, faq_answer=classifier.faq_answer if classifier else None, human_holds=held,
                  fallbacks=before.fallbacks, repeat=classifier.faq.repeat if classifier else None,
                  welcomed=msg.is_customer and self.welcomes(msg.external_userid))
        # An answer to the question of an SOP step the customer got ("回复数字即可") comes before intents.
        engine = self.executor.triggers.engine() if answers.may_answer(msg, held) else None
        sent_at = datetime.fromtimestamp(msg.send_time or self.executor.clock(), UTC)
        answer = engine.answer(msg.external_userid, msg.msgid, msg.text, sent_at,
                               later.hgetall(self.executor.store.r, engine.offer_key(msg.external_userid))
                               ) if engine else None
        name, actions = answers.on_answer(msg, intent, answer) if answer else handlers.route(msg, intent, ctx)
        self.executor.run(actions, message_key(msg.msgid))
        log.debug("kf msg %s origin=%s route=%s actions=%d %.1fms", msg.msgid, msg.origin, name,
                  len(actions), (time.perf_counter() - started) * 1000)
        return name
