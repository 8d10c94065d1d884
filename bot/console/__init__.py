"""The operator console (/admin): server-rendered Chinese pages over what the running bot wrote to Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from flask import Blueprint, Response, abort, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature

from bot.config import Settings
from bot.console import charts, data
from bot.console.auth import COOKIE, MAX_AGE, Gate, mask
from bot.console.sandbox_chat import SandboxChat
from bot.content import Content
from bot.records.coupons import CouponBook

__all__ = ["make_console"]

_ENV = object()
PERIODS = (1, 7, 14, 30, 90)
PUBLIC = {"console.login", "console.login_post", "console.static"}


def make_console(settings: Settings, r: redis.Redis, content: Content | None, sandbox_url: str | None,
                 admin_token: Any = _ENV, coupons: Callable[[], CouponBook | None] = lambda: None) -> Blueprint:
    """The console blueprint; mount it at /admin. The token defaults to $WECOM_BOT_ADMIN_TOKEN."""
    token = os.environ.get("WECOM_BOT_ADMIN_TOKEN") if admin_token is _ENV else admin_token
    gate = Gate(token, settings.sandbox)
    tz = settings.timezone
    chat = SandboxChat(settings, r, sandbox_url) if settings.sandbox and sandbox_url else None
    bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")

    @bp.before_request
    def guard() -> Any:
        if not gate.enabled:
            abort(404)
        g.session = gate.load(request)
        g.authed = bool(g.session.get("auth")) or gate.local_open(request)
        if request.method == "POST" and not gate.csrf_ok(g.session, request.form.get("csrf")
                                                         or request.headers.get("X-CSRF-Token")):
            return Response("CSRF 校验失败：请刷新页面后重试。", status=403, mimetype="text/plain")
        if not g.authed and request.endpoint not in PUBLIC:
            if not gate.token:  # sandbox mode without a token, but not from this machine
                abort(403)
            return redirect(url_for("console.login", next=request.full_path if request.method == "GET" else None))
        return None

    @bp.after_request
    def headers(resp: Response) -> Response:
        if getattr(g, "session", None) is not None and (g.session.get("new") or g.get("session_changed")):
            g.session.pop("new", None)
            resp.set_cookie(COOKIE, gate.dump(g.session), max_age=MAX_AGE, httponly=True, samesite="Strict",
                            secure=request.is_secure, path=url_for("console.overview").rstrip("/") or "/")
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                                   "script-src 'self'; form-action 'self'; frame-ancestors 'none'")
        return resp

    @bp.app_template_filter("mask")
    def mask_filter(value: str | None) -> str:
        return mask(value, bool(g.get("session", {}).get("mask")))

    @bp.app_template_filter("hm")
    def hm(moment: datetime | None) -> str:
        return moment.astimezone(tz).strftime("%m-%d %H:%M") if moment else "—"

    @bp.app_template_filter("secs")
    def secs(value: float | None) -> str:
        if value is None:
            return "—"
        return f"{value:.0f} 秒" if value < 120 else f"{value / 60:.1f} 分钟"

    @bp.app_template_filter("pct")
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.0f}%"

    def customer_url(cid: str) -> str:
        """A link to a customer's page; opaque (signed) while ids are masked."""
        if g.session.get("mask"):
            return url_for("console.customer", ref=gate.signer.dumps(cid, salt="customer-ref"))
        return url_for("console.customer", id=cid)

    def page(template: str, **kw: Any) -> str:
        return render_template(f"console/{template}", csrf=gate.csrf(g.session), masked=bool(g.session.get("mask")),
                               sandbox=chat is not None, logged_in=bool(g.session.get("auth")),
                               token_login=bool(gate.token), tz=str(tz), charts=charts, customer_url=customer_url, **kw)

    # --- login ----------------------------------------------------------------------------

    @bp.get("/login")
    def login() -> Any:
        if not gate.token:
            return redirect(url_for("console.overview")) if g.authed else abort(403)
        return page("login.html", error=None, next=_safe_next(request.args.get("next")))

    @bp.post("/login")
    def login_post() -> Any:
        if not gate.token:
            abort(403)
        if not gate.check_token(request.form.get("token", "")):
            time.sleep(0.3)  # slows guessing
            return page("login.html", error="令牌不正确", next=_safe_next(request.form.get("next"))), 403
        g.session = {"sid": os.urandom(16).hex(), "auth": True, "mask": bool(g.session.get("mask"))}
        g.session_changed = True
        return redirect(_safe_next(request.form.get("next")) or url_for("console.overview"))

    @bp.post("/logout")
    def logout() -> Any:
        g.session = {"sid": os.urandom(16).hex(), "auth": False, "mask": False}
        g.session_changed = True
        return redirect(url_for("console.login") if gate.token else url_for("console.overview"))

    @bp.post("/mask")
    def toggle_mask() -> Any:
        g.session["mask"] = not g.session.get("mask")
        g.session_changed = True
        return redirect(_safe_next(request.form.get("next")) or url_for("console.overview"))

    # --- pages ----------------------------------------------------------------------------

    @bp.get("/")
    def overview() -> str:
        days = request.args.get("days", 7, type=int)
        days = days if days in PERIODS else 7
        return page("overview.html", o=data.overview(r, coupons(), tz, days), periods=PERIODS, active="overview")

    @bp.get("/handoffs")
    def handoffs() -> str:
        return page("handoffs.html", q=data.live_handoffs(r, tz), active="handoffs")

    @bp.get("/customer")
    def customer() -> Any:
        q = request.args.get("q", "").strip()
        if g.session.get("mask") and request.args.get("id"):  # keep the id out of the address bar
            return redirect(customer_url(request.args["id"].strip()))
        cid = request.args.get("id", "").strip() or _ref(request.args.get("ref"))
        found = data.find_customers(r, q) if q and not cid else []
        if q and not cid and len(found) == 1:
            cid = found[0]
        t = data.timeline(r, coupons(), tz, cid) if cid else None
        return page("customer.html", q=q, found=found, cid=cid, t=t, active="customer")

    @bp.get("/sop")
    def sop() -> str:
        journeys = content.journeys if content else None
        cid = request.args.get("customer", "").strip()
        plan = data.plan_for(journeys, r, tz, cid, settings.sop_rules) if cid and journeys else None
        return page("sop.html", journeys=journeys or (), errors=data.journey_errors(settings, content),
                    upcoming=data.next_days(r, tz), cid=cid, plan=plan, active="sop")

    @bp.get("/sandbox")
    def sandbox() -> str:
        if chat is None:
            abort(404)
        cid = request.args.get("customer", "").strip() or chat.default_customer
        return page("sandbox.html", cid=cid, convo=chat.conversation(cid), active="sandbox",
                    error=request.args.get("error"))

    @bp.post("/sandbox/send")
    def sandbox_send() -> Any:
        if chat is None:
            abort(404)
        cid = request.form.get("customer", "").strip() or chat.default_customer
        text = request.form.get("text", "").strip()
        error = None
        if text:
            error = chat.send(cid, text, request.host_url.rstrip("/") + settings.callback_path)
        return redirect(url_for("console.sandbox", customer=cid, error=error))

    def _ref(ref: str | None) -> str:
        """The customer id behind a masked link ('' if none or tampered)."""
        try:
            return gate.signer.loads(ref, salt="customer-ref", max_age=MAX_AGE) if ref else ""
        except BadSignature:
            return ""

    return bp


def _safe_next(target: str | None) -> str | None:
    """Only redirect within the console."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return None
