"""kf system events (origin 4): recorded; delivery failures shrink the reply budget."""

from __future__ import annotations

from handlers.actions import Action, Record, SendFailed, SessionChanged, Welcome
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent


def on_event(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Record the event; msg_send_fail also tells the executor what WeCom refused."""
    ev = msg.event
    actions: list[Action] = [Record("kf_event", {"customer": msg.external_userid, "msgid": msg.msgid,
                                                 "event_type": ev.get("event_type", ""), "event": ev})]
    if ev.get("event_type") == "enter_session":
        actions.append(Welcome(msg.open_kfid, msg.external_userid, str(ev.get("welcome_code") or ""), msg.send_time))
    if ev.get("event_type") == "session_status_change":
        actions.append(SessionChanged(msg.external_userid, int(ev.get("change_type") or 0),
                                      str(ev.get("new_servicer_userid") or ""), msg.send_time))
    if ev.get("event_type") == "msg_send_fail":
        actions.append(SendFailed(msg.external_userid, int(ev.get("fail_type") or 0), str(ev.get("fail_msgid", ""))))
    return actions
