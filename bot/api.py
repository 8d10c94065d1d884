"""HTTP endpoints for other systems (an order system reporting redemptions), behind a bearer token."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, Callable

from flask import Blueprint, jsonify, request

from bot.config import Settings


def authenticate(settings: Settings) -> Any:
    """403 when no token is configured, 401 on a bad or missing bearer token, None when allowed."""
    if not settings.api_token:
        return jsonify(error="the API is off: set WECOM_BOT_API_TOKEN"), 403
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), settings.api_token.encode()):
        return jsonify(error="bad or missing bearer token"), 401
    return None


def redeem_coupon(book: Any, engine: Any, code: str, now: datetime, order_id: str | None) -> Any:
    """Redeem a code (idempotent) and stop the customer's coupon reminders."""
    result = book.redeem(code, now, order_id=order_id)
    if result.status in ("redeemed", "already") and engine is not None and result.coupon is not None:
        engine.note_fact(result.coupon.customer, "redeemed", now)
    return result


def make_api(settings: Settings, content: Any, engine: Callable[[], Any] = lambda: None) -> Blueprint:
    """`POST /api/coupons/redeem {"code", "order_id"?}` -> {"code", "status", "redeemed_at"}."""
    bp = Blueprint("api", __name__, url_prefix="/api")

    bp.before_request(lambda: authenticate(settings))

    @bp.post("/coupons/redeem")
    def redeem():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not body["code"].strip():
            return jsonify(error='expected JSON {"code": "...", "order_id": "..."}'), 400
        book = content.get("coupons") if content else None
        if book is None:
            return jsonify(error="no coupon campaigns configured"), 404
        order = body.get("order_id")
        result = redeem_coupon(book, engine(), body["code"], datetime.now(settings.timezone),
                               str(order) if order else None)
        status = {"redeemed": 200, "already": 200, "unknown": 404, "expired": 409}[result.status]
        at = result.redeemed_at.isoformat() if result.redeemed_at else None
        return jsonify(code=body["code"], status=result.status, redeemed_at=at), status

    return bp
