"""The console's views: one Console over what the pages read; bot/console/__init__.py mounts them."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

import redis
from flask import Response, abort, g, jsonify, redirect, render_template, request, url_for
from itsdangerous import BadSignature

from bot.act.operator import Operator
from bot.act.staff import Staff
from bot.config import Settings
from bot.console import charts, data
from bot.console.auth import COOKIE, MAX_AGE, Gate, mask
from bot.console.sandbox_chat import SandboxChat
from bot.content import Content
from bot.queue.inbox import Inbox
from bot.records import labels
from bot.records.channels import UNKNOWN, ChannelBook, channel_stats
from bot.records.coupons import CouponBook
from bot.records.experiment_report import METRIC_LABELS, MIN_PER_ARM, chart_groups, reports
from bot.records.experiments import Experiments, arms_of, declared
from bot.records.labels import Names
from sop import engine as sop_engine

PERIODS = (1, 7, 14, 30, 90)
PUBLIC = {"console.login", "console.login_post", "console.static"}

# (rule, endpoint = method of Console, HTTP method)
PAGES: tuple[tuple[str, str, str], ...] = (
    ("/login", "login", "GET"),
    ("/login", "login_post", "POST"),
    ("/logout", "logout", "POST"),
    ("/mask", "toggle_mask", "POST"),
    ("/", "overview", "GET"),
    ("/handoffs", "handoffs", "GET"),
    ("/handoffs/live", "handoffs_live", "GET"),
    ("/customer", "customer", "GET"),
    ("/sop", "sop", "GET"),
    ("/experiments", "experiments", "GET"),
    ("/channels", "channels", "GET"),
    ("/sandbox", "sandbox", "GET"),
    ("/sandbox/send", "sandbox_send", "POST"),
    ("/handoffs/close", "handoff_close", "POST"),
    ("/handoffs/reassign", "handoff_reassign", "POST"),
    ("/dlq/replay", "dlq_replay", "POST"),
    ("/sop/pause", "sop_pause", "POST"),
    ("/sop/resume", "sop_resume", "POST"),
)
# what an action's redirect shows (?notice=<code>; codes only, so a link cannot put words on the page)
NOTICES = {"closed": "已结束转人工，机器人恢复接待", "already_closed": "该转人工已结束", "unknown": "找不到该转人工",
           "reassigned": "已改派，新顾问已收到提醒", "same": "已由该顾问负责", "too_late": "顾问已回复或已结束，无法改派",
           "unknown_consultant": "该顾问不在顾问名单中，也不在接待", "replayed": "已重放到消息队列",
           "no_letter": "找不到该失败消息", "paused": "旅程已暂停", "already_paused": "旅程已经是暂停状态",
           "resumed": "旅程已恢复", "not_paused": "旅程未暂停", "unknown_journey": "没有这个旅程",
           "no_wecom": "未连接企业微信，无法操作"}
FILTERS = {"mask": "mask_filter", "hm": "hm", "secs": "secs", "pct": "pct", "zh": "zh", "reason": "reason",
           "outcome": "outcome", "person": "person", "campaign": "campaign", "journey": "journey"}  # filter -> method
LIVE_EVERY_SECONDS = 5  # how often the live queue page asks for the queue


@dataclass
class Console:
    """What the pages read, and the pages."""

    settings: Settings
    r: redis.Redis
    content: Content | None
    coupons: Callable[[], CouponBook | None]
    gate: Gate
    chat: SandboxChat | None
    staff: Callable[[], Staff | None] = field(default=lambda: None)
    channel_book: ChannelBook = field(init=False)
    assignments: Experiments = field(init=False)  # the experiments record (the page is experiments())

    def __post_init__(self) -> None:
        # built once per process, not per request (each registers its Lua scripts)
        self.channel_book = ChannelBook(self.r, self.tz)
        self.assignments = Experiments(self.r, self.tz)

    @property
    def tz(self) -> ZoneInfo:
        """The console's timezone (config.yaml timezone)."""
        return self.settings.timezone

    def guard(self) -> Any:
        """Before every request: the console must be on, the session known, POSTs carry the CSRF token."""
        if not self.gate.enabled:
            abort(404)
        g.session = self.gate.load(request)
        g.authed = bool(g.session.get("auth"))
        given = request.form.get("csrf") or request.headers.get("X-CSRF-Token")
        if request.method == "POST" and not self.gate.csrf_ok(g.session, given):
            return Response("CSRF 校验失败：请刷新页面后重试。", status=403, mimetype="text/plain")
        if not g.authed and request.endpoint == "console.handoffs_live":  # a script asks: no login page for it
            return Response('{"error": "login"}', status=401, mimetype="application/json")
        if not g.authed and request.endpoint not in PUBLIC:
            return redirect(url_for("console.login", next=request.full_path if request.method == "GET" else None))
        return None

    def headers(self, resp: Response) -> Response:
        """After every request: the session cookie when it changed, and the security headers."""
        if getattr(g, "session", None) is not None and (g.session.get("new") or g.get("session_changed")):
            g.session.pop("new", None)
            resp.set_cookie(COOKIE, self.gate.dump(g.session), max_age=MAX_AGE, httponly=True, samesite="Strict",
                            secure=request.is_secure, path=url_for("console.overview").rstrip("/") or "/")
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                                   "script-src 'self'; form-action 'self'; frame-ancestors 'none'")
        return resp

    def mask_filter(self, value: str | None) -> str:
        """Template filter: an id, masked while the session asks for it."""
        return mask(value, bool(g.get("session", {}).get("mask")))

    def hm(self, moment: datetime | None) -> str:
        """Template filter: a local time as MM-DD HH:MM."""
        return moment.astimezone(self.tz).strftime("%m-%d %H:%M") if moment else "—"

    def secs(self, value: float | None) -> str:
        """Template filter: seconds, or minutes past two of them."""
        if value is None:
            return "—"
        return f"{value:.0f} 秒" if value < 120 else f"{value / 60:.1f} 分钟"

    def pct(self, value: float | None) -> str:
        """Template filter: a share as a percentage."""
        return "—" if value is None else f"{value * 100:.0f}%"

    def zh(self, code: Any, table: str | None = None) -> str:
        """Template filter: the Chinese label of a code (bot/records/labels.py)."""
        return labels.zh(code, table)

    def reason(self, code: str | None) -> str:
        """Template filter: a reason code in Chinese (stopped:handed_off -> 已停止：已转人工)."""
        return labels.reason_zh(code, self.names().consultant)

    def outcome(self, code: str | None) -> str:
        """Template filter: a touch outcome in Chinese."""
        return labels.outcome_zh(code)

    def person(self, userid: str | None) -> str:
        """Template filter: a consultant's name (content/consultants.yaml), the userid when unknown."""
        return self.names().person(userid)

    def campaign(self, name: str | None) -> str:
        """Template filter: a coupon campaign's title."""
        return self.names().campaign(name) if name else "—"

    def journey(self, jid: str | None) -> str:
        """Template filter: a journey's title."""
        return self.names().journey(jid) if jid else "—"

    def names(self) -> Names:
        """Look-ups of consultants, campaigns and journeys by their ids, from the current content (per request)."""
        cached = g.get("names")
        if cached is not None:
            return cached
        team = self.content.team if self.content else None
        book = self.coupons()
        journeys = {j.id: j.title for j in (self.content.journeys or ()) if j.title} if self.content else {}

        def consultant(userid: str) -> str:
            c = team.get(userid) if team else None
            return c.name if c is not None and c.name else userid

        def campaign(name: str) -> str:
            c = book.by_name.get(name) if book else None
            return c.title if c is not None and c.title else name

        g.names = Names(consultant=consultant, campaign=campaign, journey=lambda jid: journeys.get(jid, jid))
        return g.names

    def customer_url(self, cid: str) -> str:
        """A link to a customer's page; opaque (signed) while ids are masked."""
        if g.session.get("mask"):
            return url_for("console.customer", ref=self.gate.signer.dumps(cid, salt="customer-ref"))
        return url_for("console.customer", id=cid)

    def page(self, template: str, **kw: Any) -> str:
        """Render a console template with what every page needs."""
        return render_template(f"console/{template}", csrf=self.gate.csrf(g.session), masked=bool(g.session.get("mask")),
                               sandbox=self.chat is not None, logged_in=bool(g.session.get("auth")),
                               token_login=bool(self.gate.token), tz=str(self.tz), charts=charts, customer_url=self.customer_url,
                               notice=NOTICES.get(request.args.get("notice", "")), consultants=self.consultants(), **kw)

    # --- login ----------------------------------------------------------------------------

    def login(self) -> Any:
        """The login page; `?token=` (the link sandbox mode prints) logs in directly."""
        if request.args.get("token"):
            return self._log_in(request.args["token"], None)
        return self.page("login.html", error=None, next=_safe_next(request.args.get("next")))

    def login_post(self) -> Any:
        """Log in with the admin token."""
        return self._log_in(request.form.get("token", ""), _safe_next(request.form.get("next")))

    def _log_in(self, given: str, next_url: str | None) -> Any:
        """A new authenticated session for the right token; failures are counted per client address."""
        address = request.remote_addr or "?"
        if self.gate.blocked(address):
            return Response("登录失败次数过多，请 10 分钟后再试。", status=429, mimetype="text/plain",
                            headers={"Retry-After": "600"})
        if not self.gate.check_token(given):
            self.gate.failed(address)
            return self.page("login.html", error="令牌不正确", next=next_url), 403
        g.session = {"sid": os.urandom(16).hex(), "auth": True, "mask": bool(g.session.get("mask"))}
        g.session_changed = True
        return redirect(next_url or url_for("console.overview"))

    def logout(self) -> Any:
        """Log out: the session ends on the server too, then a fresh, unauthenticated one."""
        self.gate.end(g.session["sid"])
        g.session = {"sid": os.urandom(16).hex(), "auth": False, "mask": False}
        g.session_changed = True
        return redirect(url_for("console.login"))

    def toggle_mask(self) -> Any:
        """Mask or unmask customer ids for this session."""
        g.session["mask"] = not g.session.get("mask")
        g.session_changed = True
        return redirect(_safe_next(request.form.get("next")) or url_for("console.overview"))

    # --- pages ----------------------------------------------------------------------------

    def overview(self) -> str:
        """Numbers and charts over the last days."""
        days = request.args.get("days", 7, type=int)
        days = days if days in PERIODS else 7
        return self.page("overview.html", o=data.overview(self.r, self.coupons(), self.tz, days, names=self.names()), periods=PERIODS, active="overview")

    def handoffs(self) -> str:
        """The live handoff queue, with close / reassign per handoff, and the dead letters with replay."""
        letters = [d | {"when": datetime.fromtimestamp(int(d.get("at") or 0), self.tz)}
                   for d in Inbox(self.r).dead_letters(50)]
        return self.page("handoffs.html", q=data.live_handoffs(self.r, self.tz, names=self.names()), active="handoffs",
                         live_every=LIVE_EVERY_SECONDS, letters=letters)

    def handoffs_live(self) -> Response:
        """The live queue as JSON: the numbers, the rows, and the queue's HTML for the page's script."""
        q = data.live_handoffs(self.r, self.tz, names=self.names())
        html = self.page("_live.html", q=q)
        rows = [{k: v for k, v in row.items() if k != "h"} | {"customer": self.mask_filter(row["customer"])}
                for row in q["rows"]]
        return jsonify(now=q["now"].timestamp(), waiting=q["waiting"], claimed=q["claimed"], answered=q["answered"],
                       overdue=q["overdue"], rows=rows, html=html)

    def customer(self) -> Any:
        """Find a customer; their timeline."""
        q = request.args.get("q", "").strip()
        if g.session.get("mask") and request.args.get("id"):  # keep the id out of the address bar
            return redirect(self.customer_url(request.args["id"].strip()))
        cid = request.args.get("id", "").strip() or self._ref(request.args.get("ref"))
        found = data.find_customers(self.r, q) if q and not cid else []
        if q and not cid and len(found) == 1:
            cid = found[0]
        t = data.timeline(self.r, self.coupons(), self.tz, cid, names=self.names()) if cid else None
        return self.page("customer.html", q=q, found=found, cid=cid, t=t, active="customer")

    def sop(self) -> str:
        """The journeys as loaded, errors, the next days, a customer's plan."""
        journeys = self.content.journeys if self.content else None
        cid = request.args.get("customer", "").strip()
        plan = data.plan_for(journeys, self.r, self.tz, cid, self.settings.sop_rules) if cid and journeys else None
        found = declared(journeys, self.content.campaigns) if plan and self.content else []
        return self.page("sop.html", journeys=journeys or (), paused=sop_engine.paused(self.r), errors=data.journey_errors(self.settings, self.content),
                    upcoming=data.next_days(self.r, self.tz, names=self.names()), cid=cid, plan=plan, active="sop",
                    arms=arms_of(self.assignments, found, cid) if found else [])

    def channels(self) -> str:
        """渠道: per channel over a period, who came and what they did; what each touch earned; the codes."""
        days = request.args.get("days", 30, type=int)
        days = days if days in PERIODS else 30
        book = self.channel_book
        current = self.content.channels if self.content else None
        end = datetime.now(self.tz)
        start = end - timedelta(days=days)
        rows = channel_stats(book, current, start, end)
        names = {c.id: c.name for c in current.channels} if current else {}
        names.update({cid: w.name for cid, w in book.ways().items() if cid not in names and w.name})
        names.setdefault(UNKNOWN, "未知渠道")
        earned = book.earned(start, end)
        groups = [(names.get(x.channel, x.channel), (x.added, x.replied, x.coupon, x.redeemed, x.purchased))
                  for x in rows if x.added]
        amounts = [(names.get(x.channel, x.channel), round(x.amount, 2)) for x in rows if x.amount]
        return self.page("channels.html", rows=rows, names=names, earned=earned, days=days, periods=PERIODS,
                         groups=groups, amounts=amounts,
                         ways=book.ways(), channels=current.channels if current else (), active="channels")

    def experiments(self) -> str:
        """实验: each A/B experiment the YAML declares; per arm the customers, outcome rates with 95% intervals, the
        difference to the baseline, revenue per customer, the verdict, and a chart."""
        found = declared(self.content.journeys, self.content.campaigns) if self.content else []
        return self.page("experiments.html", rows=reports(self.assignments, found), minimum=MIN_PER_ARM,
                         labels=METRIC_LABELS, outcomes=tuple(METRIC_LABELS), chart=chart_groups,
                         names=list(METRIC_LABELS.values()), active="experiments")

    def sandbox(self) -> str:
        """The sandbox chat (sandbox mode only)."""
        if self.chat is None:
            abort(404)
        cid = request.args.get("customer", "").strip() or self.chat.default_customer
        return self.page("sandbox.html", cid=cid, convo=self.chat.conversation(cid), active="sandbox",
                    error=request.args.get("error"))

    def sandbox_send(self) -> Any:
        """Send a customer message through the sandbox."""
        if self.chat is None:
            abort(404)
        cid = request.form.get("customer", "").strip() or self.chat.default_customer
        text = request.form.get("text", "").strip()
        error = None
        if text:
            error = self.chat.send(cid, text)
        return redirect(url_for("console.sandbox", customer=cid, error=error))

    # --- actions (CSRF-checked in guard; recorded with by="console" and the client address) -------------------

    def consultants(self) -> list[tuple[str, str]]:
        """(userid, name) of the consultants in content/consultants.yaml, for the reassign select."""
        team = self.content.team if self.content else None
        return [(c.userid, c.name or c.userid) for c in team.consultants] if team else []

    def operator(self) -> Operator:
        return Operator(self.r, self.staff, lambda: datetime.now(self.tz), Inbox(self.r))

    def who(self) -> tuple[str, str]:
        """Who acts: the console (its login is the one admin token) and the client address."""
        return "console", request.remote_addr or ""

    def done(self, notice: str, fallback: str) -> Any:
        """Back to the page the form was on (or `fallback`), saying what happened."""
        target = _safe_next(request.form.get("next")) or url_for(fallback)
        parts = urlsplit(target)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "notice"] + [("notice", notice)]
        return redirect(f"{parts.path}?{urlencode(query)}")

    def handoff_close(self) -> Any:
        """Close a handoff: the kf session ends and the bot answers the customer again."""
        try:
            res = self.operator().close(request.form.get("handoff", "").strip(), *self.who())
        except LookupError:
            res = "no_wecom"
        return self.done(res, "console.handoffs")

    def handoff_reassign(self) -> Any:
        """Reassign a handoff to another consultant (kf transfer, record, alert to them)."""
        userid = request.form.get("userid", "").strip()
        if userid not in {u for u, _ in self.consultants()}:
            return self.done("unknown_consultant", "console.handoffs")
        try:
            res = self.operator().reassign(request.form.get("handoff", "").strip(), userid, *self.who())
        except LookupError:
            res = "no_wecom"
        return self.done(res, "console.handoffs")

    def dlq_replay(self) -> Any:
        """Put one dead letter back into the inbox."""
        eid = request.form.get("id", "").strip()
        n = self.operator().replay([eid], *self.who()) if eid else 0
        return self.done("replayed" if n else "no_letter", "console.handoffs")

    def sop_pause(self) -> Any:
        """Pause a journey: its due touches wait, unsent, until it is resumed."""
        jid = request.form.get("journey", "").strip()
        known = {j.id for j in (self.content.journeys or ())} if self.content else set()
        if jid not in known:
            return self.done("unknown_journey", "console.sop")
        return self.done("paused" if self.operator().pause(jid, *self.who()) else "already_paused", "console.sop")

    def sop_resume(self) -> Any:
        """Resume a paused journey: the touches it held are due again."""
        jid = request.form.get("journey", "").strip()
        released = self.operator().resume(jid, *self.who())
        return self.done("not_paused" if released is None else "resumed", "console.sop")

    def _ref(self, ref: str | None) -> str:
        """The customer id behind a masked link ('' if none or tampered)."""
        try:
            return self.gate.signer.loads(ref, salt="customer-ref", max_age=MAX_AGE) if ref else ""
        except BadSignature:
            return ""


def _safe_next(target: str | None) -> str | None:
    """Only redirect within the console."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return None
