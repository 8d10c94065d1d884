"""A customer's answer to an SOP step's question ("回复数字即可"): the chosen option's tag, reply, journey, coupon.

bot/pipeline.py asks the SOP engine whether a message answers the customer's open question before it
routes by intent; when it does, these actions replace the route's."""

from __future__ import annotations

from handlers import seen
from handlers.actions import Action, Enrol, IssueCoupon, Record, SendText, Tag
from handlers.messages import KfMessage
from intents.labels import Intent
from sop.replies import Answer

ROUTE = "sop_reply"


def may_answer(msg: KfMessage, held: bool) -> bool:
    """A live text of the customer's own while the bot has the chat (a consultant's chat stays theirs)."""
    return msg.is_customer and msg.msgtype == "text" and bool(msg.text.strip()) and not msg.backlog and not held


def on_answer(msg: KfMessage, intent: Intent | None, answer: Answer) -> tuple[str, list[Action]]:
    """Seen first (as on every route), then what the option does, in order: tag, reply, journey, coupon."""
    option, customer = answer.option, msg.external_userid
    actions: list[Action] = [
        seen(msg, intent),
        Record("sop_reply", {"customer": customer, "msgid": msg.msgid, "journey": answer.journey,
                             "step": answer.step, "touch_id": answer.touch_id, "option": option.words[0]})]
    if option.tag:
        actions.append(Tag(customer, option.tag))
    if option.reply:
        actions.append(SendText(msg.open_kfid, customer, option.reply))
    if option.journey:
        actions.append(Enrol(customer, option.journey, msg.send_time))
    if option.coupon:
        actions.append(IssueCoupon(msg.open_kfid, customer, msg.msgid))
    return ROUTE, actions
