"""Everything that feeds the SOP engine: customer messages, first contacts, intents, tags, coupons, stop facts,
orders and birthdays. Nothing here talks to WeCom; a welcome code's message goes out through `send_welcome`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.records import later
from bot.records.coupons import Coupon, CouponBook, RedeemResult
from bot.records.customers import Customers
from bot.records.outcomes import KINDS, Outcomes
from bot.records.store import Store
from bot.times import from_ts
from bot.wecom import WeComError
from sop.engine import Engine

ORDER_KEY = "wecom:sop:order:{%s}"  # order id -> customer, SET NX: one enrolment per order
ORDER_TTL = 400 * 86400
QUIET_INTENTS = ("other", "greeting")  # intents that start no journey


class Triggers:
    """Tells the engine (when journeys are configured) what happened to a customer."""

    def __init__(self, engine: Callable[[], Engine | None], store: Store, customers: Customers, tz: ZoneInfo,
                 outcomes: Outcomes | None = None) -> None:
        self.engine = engine
        self.store = store
        self.customers = customers
        self.tz = tz
        self.outcomes = outcomes or Outcomes()  # what experiments (and channels) measure

    def _settled(self) -> Engine | None:
        """The engine, after the entry's deferred writes (it reads the customer's record and history itself)."""
        engine = self.engine()
        if engine is not None:
            later.flush(self.store.r)
        return engine

    def fact(self, customer: str, fact: str, at: float) -> None:
        """A stop condition for the customer's journeys (unsubscribed, handed_off, contact_deleted...)."""
        if fact in KINDS:
            self.outcomes.note(customer, fact, from_ts(at, self.tz))
        if engine := self.engine():
            engine.note_fact(customer, fact, from_ts(at, self.tz))

    def customer_wrote(self, customer: str, at: float, send_welcome: Callable[[str], Any] | None = None) -> None:
        """A customer message: replied-stops, and the new-customer journeys on the first contact; the welcome
        goes out through `send_welcome` at once, so it comes before the answer to this message."""
        self.outcomes.note(customer, "replied", from_ts(at, self.tz))
        if engine := self.engine():
            engine.note_customer_message(customer, from_ts(at, self.tz), functools.partial(later.call, self.store.r))
            self.first_contact(customer, at, send_welcome)

    def first_contact(self, customer: str, at: float, send_welcome: Callable[[str], Any] | None,
                      text: str | None = None) -> None:
        """First contact: enrol the new-customer journeys; with a welcome code (`send_welcome`), their
        welcome step goes out at once through it (the code is valid for 20 seconds and one call); `text`
        (a channel's own welcome) replaces the step's."""
        engine = self.engine()
        if engine is None or not self.customers.first_contact(customer):
            return
        later.flush(self.store.r)  # the engine reads the customer's record and history itself
        when = from_ts(at, self.tz)
        engine.enroll(customer, "first_contact", when)
        if send_welcome is None:
            engine.enroll(customer, "customer_added", when)
        else:
            touches = engine.welcome(customer, "customer_added", when)
            text = text or next((t.content.get("text") for t in touches if t.content.get("text")), None)
            try:
                if text:
                    send_welcome(text)
                    self.store.record("welcome_sent", customer=customer)
            except WeComError as exc:
                self.store.record("welcome_not_sent", customer=customer, errcode=exc.errcode)
        self.customers.first_contact_done(customer)

    def intent_seen(self, customer: str, intent: str, at: float) -> None:
        """Intent-triggered journeys (e.g. price asked, no purchase in 2 days)."""
        if intent not in QUIET_INTENTS and (engine := self._settled()):
            engine.enroll(customer, "intent", from_ts(at, self.tz), intent=intent)

    def tagged(self, customer: str, tag: str, at: float) -> None:
        """Tag-triggered journeys."""
        if engine := self._settled():
            engine.enroll(customer, "tag", from_ts(at, self.tz), tag=tag)

    def coupon_issued(self, coupon: Coupon) -> None:
        """Coupon-expiry reminders for a newly issued coupon."""
        if engine := self._settled():
            engine.enroll(coupon.customer, "coupon_issued", coupon.issued_at, expires_at=coupon.expires_at,
                          campaign=coupon.campaign, key=coupon.code)


def redeem_coupon(book: CouponBook, engine: Engine | None, code: str, now: datetime,
                  order_id: str | None, outcomes: Outcomes | None = None) -> RedeemResult:
    """Redeem a code (idempotent), note the outcome (the first redemption) and stop the customer's coupon
    reminders."""
    result = book.redeem(code, now, order_id=order_id)
    if result.status == "redeemed" and result.coupon is not None and outcomes is not None:
        outcomes.note(result.coupon.customer, "redeemed", now)
    if result.status in ("redeemed", "already") and engine is not None and result.coupon is not None:
        engine.note_fact(result.coupon.customer, "redeemed", now)
    return result


def record_purchase(r: redis.Redis, engine: Engine, customer: str, order_id: str, at: datetime,
                    amount: float | None = None, outcomes: Outcomes | None = None) -> tuple[bool, int]:
    """Enrol the purchase journeys, set the "purchased" stop fact and note the outcome (with its amount) once per
    order: (new, enrolments)."""
    key = ORDER_KEY % order_id
    if not r.set(key, customer, nx=True, ex=ORDER_TTL):
        return False, 0
    try:
        n = engine.enroll(customer, "purchase", at, value=amount)
        engine.note_fact(customer, "purchased", at)
    except Exception:
        r.delete(key)  # let the order system retry
        raise
    if outcomes is not None:
        outcomes.note(customer, "purchased", at, amount)
    return True, n


def parse_birthday(text: str) -> date:
    """'MM-DD' or 'YYYY-MM-DD' -> a date (MM-DD lands in leap year 2000 so 02-29 is valid)."""
    text = (text or "").strip()
    if len(text) == 5:
        return date.fromisoformat(f"2000-{text}")
    return date.fromisoformat(text)
