"""HTTP endpoints for other systems (redemptions, purchases, birthdays), behind one bearer-token gate."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from bot.act.triggers import parse_birthday, record_purchase, redeem_coupon
from bot.config import Settings
from bot.records.coupons import CouponBook
from bot.records.customers import Customers
from bot.records.outcomes import Outcomes
from bot.times import parse_at


def authenticate(settings: Settings) -> Any:
    """403 when no token is configured, 401 on a bad or missing bearer token, None when allowed."""
    if not settings.api_token:
        return jsonify(error="the API is off: set WECOM_BOT_API_TOKEN"), 403
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), settings.api_token.encode()):
        return jsonify(error="bad or missing bearer token"), 401
    return None


def make_api(settings: Settings, coupons: Callable[[], CouponBook | None],
             engine: Callable[[], Any] = lambda: None, outcomes: Outcomes | None = None) -> Blueprint:
    """`POST /api/coupons/redeem {"code", "order_id"?}` -> {"code", "status", "redeemed_at"}."""
    bp = Blueprint("api", __name__, url_prefix="/api")

    bp.before_request(lambda: authenticate(settings))

    @bp.post("/coupons/redeem")
    def redeem() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not body["code"].strip():
            return jsonify(error='expected JSON {"code": "...", "order_id": "..."}'), 400
        book = coupons()
        if book is None:
            return jsonify(error="no coupon campaigns configured"), 404
        order = body.get("order_id")
        result = redeem_coupon(book, engine(), body["code"], datetime.now(settings.timezone),
                               str(order) if order else None, outcomes)
        status = {"redeemed": 200, "already": 200, "unknown": 404, "expired": 409}[result.status]
        at = result.redeemed_at.isoformat() if result.redeemed_at else None
        return jsonify(code=body["code"], status=result.status, redeemed_at=at), status

    return bp


def _bad(message: str) -> Any:
    return jsonify(error=message), 400


def make_sop_api(settings: Settings, engine_getter: Callable[[], Any], customers: Customers,
                 outcomes: Outcomes | None = None) -> Blueprint:
    """`POST /api/purchases` and `POST /api/customers/<id>/birthday`."""
    bp = Blueprint("sop_api", __name__, url_prefix="/api")
    bp.before_request(lambda: authenticate(settings))

    @bp.post("/purchases")
    def purchase() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        usage = 'expected JSON {"customer": "...", "order_id": "...", "amount": 199.0, "at": "ISO 8601"}'
        if not isinstance(body, dict):
            return _bad(usage)
        customer, order = body.get("customer"), body.get("order_id")
        if not isinstance(customer, str) or not customer.strip() or not isinstance(order, (str, int)) or not str(order):
            return _bad(usage)
        amount = body.get("amount")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0):
            return _bad("amount must be a number >= 0")
        try:
            at = parse_at(body.get("at"), settings.timezone)
        except (TypeError, ValueError):
            return _bad("at must be an ISO 8601 time, e.g. 2024-12-02T10:00:00+08:00")
        if not customers.exists(customer):
            return jsonify(error=f"unknown customer {customer!r}"), 404
        new, n = record_purchase(customers.r, engine_getter(), customer, str(order), at,
                                 float(amount) if amount is not None else None, outcomes)
        return jsonify(customer=customer, order_id=str(order), status="recorded" if new else "duplicate",
                       enrolled=n, at=at.isoformat())

    @bp.post("/customers/<customer>/birthday")
    def birthday(customer: str) -> ResponseReturnValue:
        body = request.get_json(silent=True)
        text = body.get("date") if isinstance(body, dict) else None
        try:
            day = parse_birthday(text) if isinstance(text, str) else None
        except ValueError:
            day = None
        if day is None:
            return _bad('expected JSON {"date": "MM-DD"} or {"date": "YYYY-MM-DD"}')
        engine_getter().set_birthday(customer, day)
        return jsonify(customer=customer, birthday=day.strftime("%m-%d"))

    return bp
