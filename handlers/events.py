"""kf system events (origin 4): recorded; delivery failures shrink the reply budget, servicer status changes
update who is receiving."""

from __future__ import annotations

from handlers.actions import Action, Record, SendFailed, ServicerChanged, SessionChanged, Welcome
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.labels import Intent

# servicer_status_change `status`: 1 接待中 (receiving), 2 停止接待 (stopped) — platform notes §2.3; not the
# 0 receiving / 1 stopped of kf/servicer/list (§2.7). Other values are only recorded.
SERVICER_RECEIVING = {"1": True, "2": False}


def on_event(msg: KfMessage, intent: Intent | None, ctx: Ctx) -> list[Action]:
    """Record the event; msg_send_fail also tells the executor what WeCom refused, servicer_status_change who
    started or stopped receiving."""
    ev = msg.event
    actions: list[Action] = [Record("kf_event", {"customer": msg.external_userid, "msgid": msg.msgid,
                                                 "event_type": ev.get("event_type", ""), "event": ev})]
    if ev.get("event_type") == "enter_session":
        actions.append(Welcome(msg.open_kfid, msg.external_userid, str(ev.get("welcome_code") or ""), msg.send_time,
                               str(ev.get("scene") or "")))
    if ev.get("event_type") == "session_status_change":
        actions.append(SessionChanged(msg.external_userid, int(ev.get("change_type") or 0),
                                      str(ev.get("new_servicer_userid") or ""), msg.send_time))
    if ev.get("event_type") == "servicer_status_change" and ev.get("servicer_userid"):
        receiving = SERVICER_RECEIVING.get(str(ev.get("status")))
        if receiving is not None:
            actions.append(ServicerChanged(msg.open_kfid, str(ev["servicer_userid"]), receiving))
    if ev.get("event_type") == "msg_send_fail":
        actions.append(SendFailed(msg.external_userid, int(ev.get("fail_type") or 0), str(ev.get("fail_msgid", ""))))
    return actions
