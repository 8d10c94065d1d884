"""Performs one SOP "touch" inbox entry: kf message, add_msg_template task or staff reminder, exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from bot.act import steps
from bot.act.executor import KfSender
from bot.records.coupons import CouponBook
from bot.records.customers import KF_MAX_REPLIES, KF_WINDOW_SECONDS, Customer, Customers
from bot.records.experiments import Experiments
from bot.records.store import Store
from bot.times import from_ts
from bot.wecom import DUPLICATE_CHECK, WeCom, WeComError
from bot.wecom.cards import LIMITS, clip
from bot.wecom.payloads import kf_payloads, mass_task_body, staff_text
from sop.variants import HOLDOUT

if TYPE_CHECKING:
    from sop.engine import Engine


__all__ = ["TouchRunner", "reminder_text"]


class IssueCoupon(Protocol):
    """Executor.issue_coupon: issue through the coupon book, record it, send the book's reply."""

    def __call__(self, open_kfid: str, customer: str, cause: str, key: str, now: float, campaign: str | None = None,
                 handoff_when_exhausted: bool = True) -> None: ...

# add_msg_template: errcode 41048 = no customer to send to (quota used, not a contact of the sender...).
MASS_NO_CUSTOMER = 41048

KIND_LABELS = {"welcome": "欢迎语", "education": "使用指南", "care": "关怀回访", "offer": "优惠活动",
               "greeting": "节日/生日祝福", "reminder": "提醒", "winback": "召回", "content": "内容推荐",
               "followup": "跟进", "interaction": "互动"}
REASON_LABELS = {
    "staff_step": "该步骤设置为顾问亲自发送",
    "kf_window_closed": "客户超过 48 小时未发消息，客服号无法主动发送",
    "kf_budget_used": "客户上次发消息后客服号已发满 5 条",
    "mass_quota_used": "本月给该客户的群发次数已用完（每月 4 次）",
    "kf_refused": "客服号发送被拒（48 小时/5 条限制）",
    "mass_task_failed": "群发任务未能发给该客户（可能本月次数已满或不是您的客户）",
    "no_owner": "该客户没有对应的跟进顾问，无法创建群发任务",
    "no_kf_account": "客户没有在客服号留过言，无法用客服号发送",
    "human_holds": "该客户正由顾问人工接待，自动触达已暂停，是否发送由您决定",
}


def _content_lines(content: dict[str, Any], coupon_text: str = "") -> list[str]:
    """The material a person can copy, line by line (Chinese labels)."""
    lines: list[str] = []
    if content.get("text"):
        lines.append(str(content["text"]))
    if link := content.get("link"):
        lines.append(f"链接：{link.get('title', '')} {link.get('url', '')}".rstrip())
        if link.get("desc"):
            lines.append(f"链接描述：{link['desc']}")
    if mp := content.get("miniprogram"):
        lines.append(f"小程序：{mp.get('title', '')}（appid {mp.get('appid', '')}，页面 {mp.get('pagepath', '')}）")
    if img := content.get("image"):
        lines.append(f"图片：素材 media_id {img.get('media_id', '')}")
    if coupon := content.get("coupon"):
        lines.append(coupon_text or f"优惠券：请为客户发放「{coupon.get('campaign', '')}」活动券")
    return lines


def _campaign(data: dict[str, Any]) -> str | None:
    """The coupon campaign an SOP step names (None: the first one offered in chat)."""
    return ((data.get("content") or {}).get("coupon") or {}).get("campaign") or None


def reminder_text(data: dict[str, Any], reason: str, title: str = "", due: str = "", coupon_text: str = "") -> str:
    """The staff reminder: what to send, to whom, why, and the text to copy; clipped to message/send's limit."""
    kind = KIND_LABELS.get(data.get("kind", ""), data.get("kind", ""))
    why = REASON_LABELS.get(reason.split(":", 1)[0], reason)
    head = [f"【SOP 待您发送】{title or data.get('journey', '')}·{kind}",
            f"客户：{data.get('customer', '')}",
            f"旅程/步骤：{data.get('journey', '')} / {data.get('step', '')}",
            f"原因：{why}"]
    if due:
        head.append(f"计划时间：{due}")
    body = "\n".join(_content_lines(data.get("content") or {}, coupon_text))
    text = "\n".join(head) + "\n请复制以下内容，在企业微信中发给该客户：\n————————\n" + body
    return clip(text, LIMITS["text"])


def _kf_room(rec: Customer, now: float) -> int:
    """How many kf messages may still go out now (0 outside the 48 h window)."""
    if not rec.last_inbound or now - rec.last_inbound > KF_WINDOW_SECONDS:
        return 0
    return max(0, KF_MAX_REPLIES - rec.sent_since_inbound)


class TouchRunner:
    """Runs "touch" entries emitted by sop.engine.Engine.tick; idempotent per entry key and sub-step."""

    def __init__(self, wecom: WeCom, store: Store, customers: Customers, sender: KfSender, issue_coupon: IssueCoupon,
                 coupons: Callable[[], CouponBook | None], engine: Engine, owner_of: Callable[[str], str | None],
                 default_staff: str | None, tz: ZoneInfo, clock: Callable[[], float] = time.time,
                 human_holds: Callable[[str], bool] = lambda customer: False,
                 experiments: Experiments | None = None,
                 touched: Callable[[str, str, float], None] | None = None) -> None:
        self.wecom = wecom
        self.store = store
        self.customers = customers
        self.sender = sender
        self.issue_coupon = issue_coupon  # Executor.issue_coupon: issue, record, send the book's reply
        self.coupons = coupons
        self.engine = engine
        self.owner_of = owner_of
        self.default_staff = default_staff
        self.tz = tz
        self.clock = clock
        self.human_holds = human_holds
        self.experiments = experiments  # A/B arms (None: every customer gets the step's first variant)
        self.touched = touched  # (customer, "journey.step", at): a purchase soon after is credited to the step

    def run(self, data: dict[str, Any], key: str) -> str:
        """Perform one touch unless `key` is done; returns the outcome ("sent:kf", "reminded:<why>", "holdout"...)."""
        if self.store.is_done(key):
            return "duplicate"
        now, waiting = self.clock(), steps.pending()
        data, arm = self._variant(data, now)
        outcome = self._holdout(data, key, now) if arm == HOLDOUT else self._perform(data, key, now)
        if steps.pending() > waiting:
            return "pending"  # a step's outcome is unknown: the touch runs again with the entry
        self._account(data, outcome)
        self.store.mark_done(key, outcome)
        return outcome

    # --- experiments ----------------------------------------------------------------------------

    def _variant(self, data: dict[str, Any], now: float) -> tuple[dict[str, Any], str | None]:
        """The touch as the customer's arm has it: the step variant's content, or HOLDOUT (nothing at all, also
        for a holdout customer of the campaign whose coupon the step gives: CouponBook.holds_out); None: none."""
        customer, at = str(data.get("customer", "")), from_ts(now, self.tz)
        arm: str | None = None
        if self.experiments is not None:
            j = self.engine.journeys.get(str(data.get("journey", "")))
            step = j.step(str(data.get("step", ""))) if j else None
            if step is not None and step.experiment is not None:
                arm = self.experiments.assign(step.experiment, customer, at)
                if arm == HOLDOUT:
                    return data, arm
                data = {**data, "content": step.variants.get(arm, step.content), "variant": arm}
        book, name = self.coupons(), _campaign(data)
        if book is not None and name and book.holds_out(name, customer, at):  # the coupon's own A/B
            return data, HOLDOUT
        return data, arm

    def _holdout(self, data: dict[str, Any], key: str, now: float) -> str:
        """The customer is in the experiment's holdout: nothing goes out (no WeCom call, no reminder); a send tick
        counted gets its slot back."""
        sub = f"{key}:holdout"
        if not self.store.is_done(sub):
            if data.get("decision") == "send":
                self.engine.note_failed(str(data["customer"]), data, from_ts(now, self.tz), str(data.get("channel")))
            self.store.mark_done(sub)
        return HOLDOUT

    # --- routing ------------------------------------------------------------------------------

    def _perform(self, data: dict[str, Any], key: str, now: float) -> str:
        """Route by decision and channel."""
        channel, decision = data.get("channel"), data.get("decision")
        if self.human_holds(str(data.get("customer", ""))):  # a consultant has the chat: they decide
            if decision == "send":
                return self._failed(data, key, now, "human_holds")
            return self._remind(data, key, "human_holds", now)
        if decision != "send" or channel not in ("kf", "mass_task"):
            return self._remind(data, key, str(data.get("reason") or "staff_step"), now)
        if channel == "kf":
            return self._kf(data, key, now)
        return self._mass_task(data, key, now)

    def _kf(self, data: dict[str, Any], key: str, now: float) -> str:
        """kf send_msg to the account the customer last wrote to; refused -> note_failed + reminder."""
        customer, content = data["customer"], data.get("content") or {}
        rec = self.customers.get(customer)
        if not rec.open_kfid:
            return self._failed(data, key, now, "no_kf_account")
        if content.get("coupon"):
            why = self._kf_coupon(rec, data, key, now)
        else:
            why = self._kf_send_all(rec, kf_payloads(content), key, now)
        if why == "pending":
            return why
        if why is not None:
            return self._failed(data, key, now, f"kf_refused:{why}")
        self.engine.offer_replies(data, from_ts(now, self.tz))  # the step's question is open from now on
        return "sent:kf"

    def _kf_send_all(self, rec: Customer, payloads: list[dict[str, Any]], key: str, now: float) -> str | None:
        """Send every payload; all or nothing as far as the budget can tell beforehand."""
        if not self.store.is_done(f"{key}:kf:0:sent") and _kf_room(rec, now) < len(payloads):
            return "window" if _kf_room(rec, now) == 0 else "budget"
        for i, payload in enumerate(payloads):
            why = self._kf_send(rec, payload, f"{key}:kf:{i}", now)
            if why is not None and i == 0:
                return why
        return None

    def _kf_coupon(self, rec: Customer, data: dict[str, Any], key: str, now: float) -> str | None:
        """Issue through the coupon book (its reply carries the code); the step's text first if there is room."""
        sub = f"{key}:coupon"
        if self.store.is_done(sub):
            return None
        room = _kf_room(rec, now)
        if room == 0:
            return "window" if not rec.last_inbound or now - rec.last_inbound > KF_WINDOW_SECONDS else "budget"
        text = str((data.get("content") or {}).get("text") or "")
        waiting = steps.pending()
        if text and room >= 2:
            self._kf_send(rec, kf_payloads({"text": text})[0], f"{key}:kf:0", now)
        self.issue_coupon(rec.open_kfid, rec.id, data["touch_id"], sub, now, campaign=_campaign(data),
                          handoff_when_exhausted=False)
        if steps.pending() > waiting:
            return "pending"
        self.store.mark_done(sub)
        return None

    def _kf_send(self, rec: Customer, payload: dict[str, Any], key: str, now: float) -> str | None:
        """One kf message within the reply budget; None when sent, else why not (recorded, not retried)."""
        return self.sender.send(rec.open_kfid, rec.id, payload, key)

    def _mass_task(self, data: dict[str, Any], key: str, now: float) -> str:
        """A confirm-to-send task for the owner; fail_list/41048/no owner -> note_failed + reminder."""
        customer, content = data["customer"], data.get("content") or {}
        sub = f"{key}:mass"
        if self.store.is_done(sub):
            return "sent:mass_task"
        owner = self.owner_of(customer)
        if not owner:
            return self._failed(data, key, now, "no_owner")
        coupon_text = self._coupon_text(data, key, now) if content.get("coupon") else ""
        body = mass_task_body(customer, owner, content, coupon_text)
        try:
            task = self.wecom.add_msg_template(body)
        except WeComError as exc:
            if exc.errcode is None:  # no answer (not a busy -1, which WeCom did not act on)
                # The task may exist (a timeout after WeCom made it): a second one would reach the customer twice.
                self.store.record("mass_task", customer=customer, sender=owner, msgid=None, unconfirmed=True,
                                  touch_id=data.get("touch_id"))
                self.store.mark_done(sub, "unconfirmed")
                return "sent:mass_task"
            if exc.errcode != MASS_NO_CUSTOMER and steps.failed(self.store, sub, exc):
                return "pending"
            return self._failed(data, key, now, f"mass_task_failed:{exc.errcode}")
        if customer in task.fail_list:
            return self._failed(data, key, now, "mass_task_failed:fail_list")
        self.store.record("mass_task", customer=customer, sender=owner, msgid=task.msgid or None,
                          touch_id=data.get("touch_id"))
        self.store.mark_done(sub, task.msgid or "1")
        return "sent:mass_task"

    # --- failures and reminders -----------------------------------------------------------------

    def _failed(self, data: dict[str, Any], key: str, now: float, why: str) -> str:
        """A "send" could not be delivered: give the engine its slot back, then remind staff."""
        sub = f"{key}:failed"
        if not self.store.is_done(sub):
            self.engine.note_failed(data["customer"], data, from_ts(now, self.tz),
                                    str(data.get("channel")))
            self.store.count("sop_failed")
            self.store.record("touch_failed", customer=data["customer"], touch_id=data.get("touch_id"), reason=why)
            self.store.mark_done(sub)
        return self._remind(data, key, why, now)

    def _remind(self, data: dict[str, Any], key: str, why: str, now: float) -> str:
        """An app message to the owner (or the default staff member) with the ready material."""
        staff = self.owner_of(data["customer"]) or self.default_staff
        if not staff:
            return f"failed:no_staff:{why}"
        sub = f"{key}:remind"

        def build() -> dict[str, Any]:
            coupon_text = self._coupon_text(data, key, now) if (data.get("content") or {}).get("coupon") else ""
            text = reminder_text(data, why, self._title(data), self._due(data), coupon_text)
            return {**staff_text(staff, text), **DUPLICATE_CHECK}

        steps.once(self.store, sub, lambda: self.wecom.send_app_message(steps.prepared(self.store, sub, build)))
        return f"reminded:{why}"

    def _coupon_text(self, data: dict[str, Any], key: str, now: float) -> str:
        """Issue the step's coupon for a person to pass on; the book's reply text (with the code) or ''."""
        book = self.coupons()
        if book is None:
            return ""
        rec = self.customers.get(data["customer"])
        is_new = not rec.first_seen or now - rec.first_seen < 7 * 86400
        result = book.issue(rec.id, str(data["touch_id"]), from_ts(now, self.tz),
                            is_new=is_new, tags=tuple(rec.tags), campaign=_campaign(data))
        self.store.record("coupon", customer=rec.id, status=result.status,
                          code=result.coupon.code if result.coupon else None)
        return book.reply_text(result) if result.coupon else ""

    def _title(self, data: dict[str, Any]) -> str:
        """The journey's title from the engine's current version ('' if unknown)."""
        j = getattr(self.engine, "journeys", {}).get(data.get("journey", ""))
        return j.title if j is not None else ""

    def _due(self, data: dict[str, Any]) -> str:
        """When the touch was due, local, e.g. '12月03日 10:00'."""
        try:
            return datetime.fromisoformat(data["due"]).astimezone(self.tz).strftime("%m月%d日 %H:%M")
        except (KeyError, TypeError, ValueError):
            return ""

    def _account(self, data: dict[str, Any], outcome: str) -> None:
        """Record the outcome and count it (sop_sent / sop_reminded; sop_failed is counted where it happens)."""
        self.store.record("touch", customer=data.get("customer"), touch_id=data.get("touch_id"),
                          journey=data.get("journey"), step=data.get("step"), channel=data.get("channel"),
                          decision=data.get("decision"), outcome=outcome,
                          **({"variant": data["variant"]} if data.get("variant") else {}))
        if outcome.startswith("sent:"):
            if self.touched is not None and data.get("customer"):
                self.touched(str(data["customer"]), f"{data.get('journey')}.{data.get('step')}", self.clock())
            self.store.count("sop_sent")
            self.store.count(f"sop_sent:{outcome[5:]}")
        elif outcome.startswith("reminded:"):
            self.store.count("sop_reminded")
        elif outcome == HOLDOUT:
            self.store.count("sop_holdout")
        else:
            self.store.count("sop_failed")
