"""Messages that are not the customer's: recorded, never answered."""

from __future__ import annotations

from handlers.actions import Action, Record, StaffReplied
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent


def on_staff_reply(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """A staff member replied from the WeCom client (origin 5): a human holds the chat."""
    return [StaffReplied(msg.external_userid, msg.servicer_userid, msg.send_time), Record("staff_reply", {"customer": msg.external_userid, "servicer": msg.servicer_userid,
                                   "msgid": msg.msgid, "send_time": msg.send_time, "text": msg.text})]


def on_backlog(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """History from before the bot's first pull (older than 30 minutes then): recorded, not answered."""
    return [Record("backlog_skipped", {"customer": msg.external_userid, "msgid": msg.msgid, "text": msg.text})]


def on_other_origin(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Any other origin: keep a trace only."""
    return [Record("kf_other", {"customer": msg.external_userid, "origin": msg.origin, "msgid": msg.msgid})]
