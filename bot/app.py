"""The Flask app: the callback endpoint plus health checks."""

from __future__ import annotations

from collections.abc import Callable

import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from bot.act.staff import Staff
from bot.config import Settings
from bot.console import make_console
from bot.content import Content
from bot.queue.inbox import Inbox
from bot.records.coupons import CouponBook
from bot.records.customers import Customers
from bot.records.outcomes import Outcomes
from bot.web.api import make_api, make_sop_api
from bot.web.envelope import CallbackCrypto
from bot.web.metrics import make_metrics, readiness
from bot.web.webhook import CallbackCounts, mount_webhook
from sop.engine import Engine


def create_app(settings: Settings, r: redis.Redis, content: Content | None = None, sandbox_url: str | None = None, *,
               coupons: Callable[[], CouponBook | None] = lambda: None,
               engine: Callable[[], Engine | None] = lambda: None, service_url: Callable[[], str] = lambda: "",
               staff: Callable[[], Staff | None] = lambda: None, outcomes: Outcomes | None = None) -> Flask:
    """Build the web app for `settings` on Redis `r`; `coupons` and `engine` give the current coupon book and SOP
    engine (bot.runtime.Runtime builds them)."""
    app = Flask("wecom-bot")
    app.config["MAX_CONTENT_LENGTH"] = None  # the webhook enforces its own limit with a clean 413
    crypto = CallbackCrypto(settings.token, settings.aes_key, settings.corp_id)
    inbox = Inbox(r, settings.worker.inbox_shards)
    counts = CallbackCounts()
    mount_webhook(app, crypto, inbox, settings.callback_path, settings.max_body_bytes,
                  settings.max_clock_skew_seconds, counts)
    app.register_blueprint(make_api(settings, coupons, engine, outcomes))
    app.register_blueprint(make_sop_api(settings, engine, Customers(r), outcomes))
    app.extensions["wecom"] = {"settings": settings, "redis": r, "inbox": inbox, "counts": counts}

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok", sandbox=settings.sandbox)

    app.register_blueprint(make_console(settings, r, content, sandbox_url, coupons=coupons,
                                        service_url=service_url, staff=staff), url_prefix="/admin")
    app.register_blueprint(make_metrics(settings, r, counts, coupons))

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        ok, body = readiness(r, settings)
        return jsonify(body), (200 if ok else 503)

    return app
