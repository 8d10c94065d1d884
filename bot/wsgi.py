"""WSGI entry for any server: `gunicorn bot.wsgi:app` (needs REDIS_URL and WECOM_* in the environment)."""

from __future__ import annotations

from bot.app import create_app
from bot.config import load_settings
from bot.redis_server import connect

settings = load_settings()
if not settings.redis_url:
    raise SystemExit("bot.wsgi needs REDIS_URL (use `wecom-bot serve` for the all-in-one local mode)")
app = create_app(settings, connect(settings.redis_url))
