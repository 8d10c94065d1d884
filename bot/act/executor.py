"""The executor: performs handler actions against WeCom and Redis, each exactly once per key."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from bot.act import steps
from bot.act.channels import Channels
from bot.act.desk import Desk
from bot.act.staff import Staff
from bot.act.triggers import Triggers
from bot.records import later
from bot.records.coupons import CouponBook
from bot.records.customers import Customers
from bot.records.store import Store
from bot.times import from_ts
from bot.wecom import KF_CANNOT_SEND, WeCom, WeComError, derive_msgid, msgid_already_used
from bot.wecom.payloads import kf_text
from handlers.actions import (
    Action,
    Enrol,
    IssueCoupon,
    OptOut,
    Record,
    RequestHandoff,
    Seen,
    SendFailed,
    SendText,
    ServicerChanged,
    SessionChanged,
    StaffReplied,
    Tag,
    Welcome,
)
from intents.labels import ROUTES

log = logging.getLogger(__name__)

SESSION_NOT_SENDABLE = 95018  # kf/send_msg: the session state does not allow the bot to send

# msg_send_fail types after which WeCom takes no more messages until the customer writes:
# 4 session expired, 5 session closed, 6 over 5 messages, 10 customer refused messages.
KF_WINDOW_FAIL_TYPES = {4, 5, 6, 10}


def message_key(msgid: str) -> str:
    """The key a customer's message's actions are run under."""
    return f"kf:{msgid}"


def action_keys(key: str, n: int) -> list[str]:
    """The keys of `n` actions run under `key`: the i-th is `key:i`."""
    return [f"{key}:{i}" for i in range(n)]


def sent_key(key: str) -> str:
    """The done mark of the kf message sent under `key`."""
    return f"{key}:sent"


def first_marks(key: str, n: int = 3) -> list[str]:
    """The done marks the first `n` actions run under `key` read first (each action's and its message's)."""
    return [k for action in action_keys(key, n) for k in (action, sent_key(action))]


class KfSender:
    """kf messages to customers: each once per key, within the reply budget (5 per 48 h)."""

    def __init__(self, wecom: WeCom, store: Store, customers: Customers,
                 clock: Callable[[], float] = time.time) -> None:
        self.wecom = wecom
        self.store = store
        self.customers = customers
        self.clock = clock

    def send_text(self, open_kfid: str, customer: str, text: str, key: str) -> str | None:
        """A kf text within the reply budget (see send)."""
        return self.send(open_kfid, customer, kf_text(text), key)

    def send(self, open_kfid: str, customer: str, payload: dict[str, Any], key: str) -> str | None:
        """One kf message, once per key, within the reply budget: None when sent, else why not (window,
        budget, errcode N: recorded, not retried; "pending": tried again with the entry)."""
        done = self.store.done_value(sent_key(key))
        if done is not None:
            return None if done != steps.FAILED else "failed"
        welcome = self.customers.held_welcome(customer) if payload.get("msgtype") == "text" else None
        if welcome and payload["text"]["content"] != welcome:  # a first contact: the welcome, then the answer
            payload = kf_text(f"{welcome}\n\n{payload['text']['content']}")
        msgtype = str(payload.get("msgtype") or "")
        title = (payload.get(msgtype) or {}).get("title") if isinstance(payload.get(msgtype), dict) else None
        shown = payload.get("text", {}).get("content") or (f"{msgtype}：{title}" if title else msgtype)
        why_not = self.customers.reserve_reply(customer, self.clock())
        if why_not:
            self.store.record("reply_not_sent", customer=customer, reason=why_not, text=shown)
            self.store.count(f"reply_not_sent:{why_not}")
            return why_not
        msgid = derive_msgid(key)
        unconfirmed = False
        try:
            self.wecom.send_kf(open_kfid, customer, msgid, payload)
        except WeComError as exc:
            if msgid_already_used(exc):
                unconfirmed = True  # an earlier try reached the customer; its answer was lost
            elif exc.errcode == SESSION_NOT_SENDABLE:  # a state, not the budget: it ends with the session
                self.customers.release_reply(customer)
                if not self.session_taken(open_kfid, customer):  # mid-change: the session is the bot's again
                    changing = WeComError(None, f"errcode {exc.errcode} while the session changed state", exc.endpoint)
                    return "pending" if steps.failed(self.store, sent_key(key), changing) else f"errcode {exc.errcode}"
                self.store.record("reply_not_sent", customer=customer, reason=f"errcode {exc.errcode}", text=shown)
                self.store.count(f"reply_not_sent:{exc.errcode}")
                return f"errcode {exc.errcode}"
            elif exc.errcode in KF_CANNOT_SEND:
                self.customers.exhaust_budget(customer)
                self.store.record("reply_not_sent", customer=customer, reason=f"errcode {exc.errcode}", text=shown)
                self.store.count(f"reply_not_sent:{exc.errcode}")
                return f"errcode {exc.errcode}"
            else:
                self.customers.release_reply(customer)  # the retry reserves again
                return "pending" if steps.failed(self.store, sent_key(key), exc) else f"errcode {exc.errcode}"
        self.store.mark_done(sent_key(key))
        if welcome:
            self.customers.welcome_given(customer)
        self.customers.remember(customer, f"客服：{shown}")
        self.store.record("reply_sent", customer=customer, msgid=msgid, text=shown,
                          **({"unconfirmed": True} if unconfirmed else {}))
        self.store.count("reply_sent")
        if unconfirmed:
            self.store.count("reply_sent_unconfirmed")
        return None


    def session_taken(self, open_kfid: str, customer: str) -> bool:
        """95018: ask WeCom who has the session; held by the queue or a servicer -> stop sending until it ends
        (True). False when WeCom says it is the bot's again (the send may be tried once more)."""
        try:
            state, servicer = self.wecom.service_state(open_kfid, customer)
        except WeComError as exc:
            self.store.record("session_state_unknown", customer=customer, errcode=exc.errcode)
            return True
        if state not in (2, 3):  # 2 the kf queue, 3 a servicer (platform notes §2.6)
            return False
        self.customers.hold(customer, servicer or "queue")
        self.store.record("session_held", customer=customer, state=state, servicer=servicer)
        return True


class Executor:
    """Performs actions; every action is keyed, and a key already done is skipped."""

    def __init__(self, wecom: WeCom, store: Store, customers: Customers, sender: KfSender, desk: Desk, staff: Staff,
                 triggers: Triggers, coupons: Callable[[], CouponBook | None], tz: ZoneInfo,
                 clock: Callable[[], float] = time.time, corp_tags: Mapping[str, str] | None = None,
                 channels: Channels | None = None) -> None:
        self.wecom = wecom
        self.store = store
        self.customers = customers
        self.sender = sender
        self.desk = desk
        self.staff = staff
        self.triggers = triggers
        self.coupons = coupons  # the coupon book as currently configured, or None
        self.tz = tz
        self.clock = clock
        self.corp_tags = corp_tags or {}  # our tag name -> WeCom corp tag id
        self.channels = channels  # where customers come from (content.channels), or None

    def run(self, actions: list[Action], key: str) -> None:
        """Execute `actions` in order; the i-th is keyed `key:i`. A welcome no answer carried goes out alone."""
        with later.gathering(self.store.r):  # history, counters and lines go with the done marks
            self._run(actions, key)

    def _run(self, actions: list[Action], key: str) -> None:
        waiting = steps.pending()
        keys = action_keys(key, len(actions))
        done = self.store.done_values(keys)  # what a retry already did, in one round trip
        for action, k, value in zip(actions, keys, done, strict=True):
            if value is None:
                self.execute(action, k)
        seen = next((a for a in actions if isinstance(a, Seen)), None)
        if seen is None or not (welcome := self.customers.held_welcome(seen.customer)):
            return
        if not any(isinstance(a, SendText | IssueCoupon | RequestHandoff | OptOut) for a in actions):
            self.send_text(seen.open_kfid, seen.customer, welcome, f"{key}:welcome")  # nothing else to say
        if steps.pending() == waiting:  # else the retry still has it to send
            self.customers.welcome_given(seen.customer)

    def execute(self, action: Action, key: str) -> None:
        """Perform one action (run() skips those already performed under their key)."""
        now, waiting = self.clock(), steps.pending()
        match action:
            case Seen(open_kfid, customer, msgid, text, msgtype, at, intent, matched, confidence, fell_back):
                self.see(open_kfid, customer, msgid, text, msgtype, at or now, intent, matched, confidence, key)
                self.customers.note_message(customer, msgid, text, at or now, fell_back)
            case SendText(open_kfid, customer, text):
                self.send_text(open_kfid, customer, text, key)
            case IssueCoupon(open_kfid, customer, cause):
                self.issue_coupon(open_kfid, customer, cause, key, now)
            case RequestHandoff(open_kfid, customer, intent, matched, text, reply, cause):
                self.hand_off(open_kfid, customer, intent, matched, text, cause, key, reply)
            case Welcome(open_kfid, customer, code, at, scene):
                self.welcome(open_kfid, customer, code, at or now, key, scene)
            case StaffReplied(customer, servicer, at):
                self.staff.staff_replied(customer, servicer, from_ts(at or now, self.tz))
            case SessionChanged(customer, change_type, servicer, at):
                self.staff.session_changed(customer, change_type, servicer, from_ts(at or now, self.tz))
                if change_type == 3:  # the session ended: the customer's next message is the bot's again
                    self.customers.release(customer)
                elif servicer:  # picked up from the queue (1) or transferred (2) in the WeCom client
                    self.customers.hold(customer, servicer)
            case ServicerChanged(open_kfid, servicer, receiving):
                self.staff.servicer_changed(open_kfid, servicer, receiving)
            case OptOut(open_kfid, customer, reply):
                self.customers.welcome_given(customer)  # no welcome to someone who just said 退订
                self.customers.set_unsubscribed(customer)
                self.triggers.fact(customer, "unsubscribed", now)
                self.store.record("unsubscribed", customer=customer)
                if reply:
                    self.send_text(open_kfid, customer, reply, key)
            case Tag(customer, tag):
                self.customers.tag(customer, tag, now)
                self.mirror_tag(customer, tag)
                self.triggers.tagged(customer, tag, now)
            case Enrol(customer, journey, at):
                if engine := self.triggers.engine():
                    engine.enroll_journey(customer, journey, from_ts(at or now, self.tz))
            case SendFailed(customer, fail_type, fail_msgid):
                if fail_type in KF_WINDOW_FAIL_TYPES:
                    self.customers.exhaust_budget(customer)
                self.store.record("send_failed", customer=customer, fail_type=fail_type, fail_msgid=fail_msgid)
                self.store.count(f"send_failed:{fail_type}")
            case Record(kind, data):
                self.store.record(kind, **data)
        if steps.pending() == waiting:  # else it runs again with the entry (its done steps are skipped)
            self.store.mark_done_later(key)  # its WeCom steps were marked at once

    def see(self, open_kfid: str, customer: str, msgid: str, text: str, msgtype: str, at: float,
            intent: str | None, matched: tuple[str, ...], confidence: float | None, key: str) -> None:
        """Record a customer message: customer record, SOP triggers (a first contact's welcome opens the
        answer to it), the recent lines, numbers."""
        self.customers.saw_message(customer, at, open_kfid)
        self.triggers.customer_wrote(customer, at, functools.partial(self.customers.hold_welcome, customer))
        self.customers.remember(customer, f"客户：{text or '[' + msgtype + ']'}")
        if intent is not None:
            self.customers.saw_intent(customer, intent)
            self.triggers.intent_seen(customer, intent, at)
        route = ROUTES.get(intent) if intent else None
        self.store.record("message_in", customer=customer, msgid=msgid, text=text, msgtype=msgtype, intent=intent,
                          matched=list(matched), confidence=confidence, route=route)
        self.store.count("message_in")

    def issue_coupon(self, open_kfid: str, customer: str, cause: str, key: str, now: float,
                     campaign: str | None = None, handoff_when_exhausted: bool = True) -> None:
        """Issue through the coupon book (atomic, budgeted) and send the reply it renders."""
        record = self.customers.get(customer)
        when = from_ts(now, self.tz)
        is_new = not record.first_seen or now - record.first_seen < 7 * 86400
        coupons = self.coupons()
        if coupons is None:
            raise RuntimeError("a coupon was asked for but no campaigns are configured (content.coupons)")
        result = coupons.issue(customer, cause, when, is_new=is_new, tags=tuple(record.tags), campaign=campaign)
        self.store.record("coupon", customer=customer, status=result.status,
                          code=result.coupon.code if result.coupon else None)
        if result.status == "issued" and result.coupon is not None:
            self.triggers.coupon_issued(result.coupon)
            if self.channels:
                self.channels.coupon_issued(customer, result.coupon.campaign, now)
        self.store.count(f"coupon:{result.status}")
        self.send_text(open_kfid, customer, coupons.reply_text(result), key)
        if result.handoff and handoff_when_exhausted:
            self.hand_off(open_kfid, customer, "human", ("优惠券已发完",), "（优惠券已发完，客户想要优惠）", cause,
                          f"{key}:handoff", None)

    def hand_off(self, open_kfid: str, customer: str, intent: str, matched: tuple[str, ...], text: str,
                 cause: str, key: str, reply: str | None) -> None:
        """Count the request once, set the handed_off stop fact, and open the handoff at the desk."""
        if not self.store.is_done(f"{key}:requested"):
            self.store.count(f"handoff_requested:{intent}")
            self.store.mark_done(f"{key}:requested")
        self.triggers.fact(customer, "handed_off", self.clock())
        self.desk.hand_off(open_kfid, customer, intent, matched, text, cause, key, reply)

    def mirror_tag(self, customer: str, tag: str) -> None:
        """Where configured, set the matching WeCom corp tag (needs the staff member who has the contact)."""
        owner = self.customers.owner(customer) if tag in self.corp_tags else None
        if not owner:
            return
        try:
            self.wecom.mark_tag(owner, customer, [self.corp_tags[tag]])
        except WeComError as exc:  # a mirror must never hold up the handoff or coupon that follows
            self.store.record("tag_mirror_failed", customer=customer, tag=tag, errcode=exc.errcode)

    def welcome(self, open_kfid: str, customer: str, code: str, at: float, key: str, scene: str = "") -> None:
        """The customer opened the kf chat: a new customer gets the welcome with the event's code
        (send_msg_on_event; it does not use the 5-message budget); a link's scene names their channel."""
        send = (lambda text: self.wecom.send_kf_on_event(code, derive_msgid(f"{key}:welcome"), kf_text(text))
                ) if code else None
        self.triggers.first_contact(customer, at, send, self._channel_welcome(scene))
        if self.channels and scene:
            self.channels.arrived(customer, scene, "", at, key)

    def contact_changed(self, fields: dict[str, str]) -> None:
        """change_external_contact: a staff member added (welcome code, 20 s; `State`: the channel's code)
        or lost a customer (del_follow_user: the customer deleted them)."""
        customer, staff, change = fields.get("ExternalUserID", ""), fields.get("UserID", ""), fields.get("ChangeType")
        at = float(fields["CreateTime"]) if fields.get("CreateTime", "").isdigit() else self.clock()
        key = f"contact:{change}:{customer}:{staff}:{fields.get('CreateTime', '')}"
        state = fields.get("State", "")
        if change == "add_external_contact" and customer:
            if staff:
                self.customers.set_owner(customer, staff)
            code = fields.get("WelcomeCode")
            send = functools.partial(self.wecom.send_welcome_msg, code) if code else None
            welcome = self._channel_welcome(state)
            if send and welcome and not self.customers.is_new(customer):
                # A known customer adds a staff member through a channel's code: WeCom gave a welcome code
                # for this new contact, so the channel's welcome goes out with it (once).
                steps.once(self.store, f"{key}:channel_welcome", lambda: send(welcome))
            else:
                self.triggers.first_contact(customer, at, send, welcome)
            if self.channels and state:
                self.channels.arrived(customer, state, staff, at, key)
        elif change in ("del_external_contact", "del_follow_user") and customer:
            self.triggers.fact(customer, "contact_deleted", at)
            if change == "del_follow_user" and self.channels:
                self.channels.lost(customer, staff, at, key)

    def _channel_welcome(self, state: str) -> str | None:
        return self.channels.welcome_for(state) if self.channels and state else None

    def send_text(self, open_kfid: str, customer: str, text: str, key: str) -> str | None:
        """A kf text within the reply budget (KfSender.send_text)."""
        return self.sender.send_text(open_kfid, customer, text, key)
