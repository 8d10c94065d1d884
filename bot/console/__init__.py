"""The operator console (/admin): server-rendered Chinese pages over what the running bot wrote to Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint

from bot.act.staff import Staff
from bot.config import Settings
from bot.console.auth import Gate
from bot.console.sandbox_chat import SandboxChat
from bot.console.views import FILTERS, PAGES, Console
from bot.content import Content
from bot.records.coupons import CouponBook

__all__ = ["make_console"]

_ENV = object()


def make_console(settings: Settings, r: redis.Redis, content: Content | None, sandbox_url: str | None,
                 admin_token: Any = _ENV, coupons: Callable[[], CouponBook | None] = lambda: None,
                 service_url: Callable[[], str] = lambda: "",
                 staff: Callable[[], Staff | None] = lambda: None) -> Blueprint:
    """The console blueprint; mount it at /admin. The token defaults to settings.admin_token; the sandbox
    chat posts its callbacks to `service_url()` (the address `serve` listens on), never to the Host header;
    the actions on handoffs act on WeCom through `staff()`."""
    token = settings.admin_token if admin_token is _ENV else admin_token
    chat = SandboxChat(settings, r, sandbox_url, service_url) if settings.sandbox and sandbox_url else None
    console = Console(settings, r, content, coupons, Gate(token, r), chat, staff)
    bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")
    bp.before_request(console.guard)
    bp.after_request(console.headers)
    for name, method in FILTERS.items():
        bp.add_app_template_filter(getattr(console, method), name)
    for rule, endpoint, method in PAGES:
        bp.add_url_rule(rule, endpoint, getattr(console, endpoint), methods=[method])
    return bp
