"""The Flask app: the callback endpoint plus health checks."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, jsonify

from bot.web.api import make_api
from bot.web.api import make_sop_api
from bot.config import Settings
from bot.console import make_console
from bot.web.metrics import make_metrics, readiness
from bot.records.customers import Customers
from bot.web.envelope import CallbackCrypto
from bot.queue.inbox import Inbox
from bot.web.webhook import make_webhook


def create_app(settings: Settings, r: redis.Redis, content: Any = None, sandbox_url: str | None = None) -> Flask:
    """Build the web app for `settings` on Redis `r`."""
    app = Flask("wecom-bot")
    app.config["MAX_CONTENT_LENGTH"] = None  # the webhook enforces its own limit with a clean 413
    crypto = CallbackCrypto(settings.token, settings.aes_key, settings.corp_id)
    inbox = Inbox(r)
    webhook = make_webhook(crypto, inbox, settings.callback_path, settings.max_body_bytes,
                           settings.max_clock_skew_seconds)
    app.register_blueprint(webhook)
    engine = (lambda: content.engine()) if content else (lambda: None)
    app.register_blueprint(make_api(settings, content, engine))
    app.register_blueprint(make_sop_api(settings, engine, Customers(r)))
    app.extensions["wecom"] = {"settings": settings, "redis": r, "inbox": inbox, "counts": webhook.counts}

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", sandbox=settings.sandbox)

    app.register_blueprint(make_console(settings, r, content, sandbox_url), url_prefix="/admin")
    app.register_blueprint(make_metrics(settings, r, webhook.counts, content))

    @app.get("/readyz")
    def readyz():
        ok, body = readiness(r, settings)
        return jsonify(body), (200 if ok else 503)

    return app


def production_app(settings: Settings) -> Flask:
    """The app for a web-only process on the shared REDIS_URL (gunicorn, `wecom-bot web`)."""
    from bot.content import Content
    from bot.redis_server import connect

    if not settings.redis_url:
        raise SystemExit("a web-only process needs REDIS_URL (use `wecom-bot serve` for the all-in-one mode)")
    r = connect(settings.redis_url)
    return create_app(settings, r, Content(settings, r))
