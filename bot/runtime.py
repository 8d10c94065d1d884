"""Composition root: resolve Redis and WeCom (real or sandbox) and wire the parts together."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bot.act.channels import Channels
from bot.act.desk import Desk
from bot.act.executor import Executor, KfSender, first_marks, message_key
from bot.act.staff import Staff
from bot.act.touches import TouchRunner
from bot.act.triggers import Triggers
from bot.config import SANDBOX_OPEN_KFID, Settings
from bot.content import Content
from bot.content.campaigns import Campaign
from bot.content.team import Team
from bot.pipeline import Pipeline
from bot.queue.inbox import Inbox
from bot.queue.kfsync import KfSync
from bot.queue.scheduler import Scheduler
from bot.queue.worker import Parts, Worker
from bot.records import later
from bot.records.channels import DEFAULT_WINDOW_HOURS, ChannelBook
from bot.records.coupons import CouponBook
from bot.records.customers import Customers
from bot.records.experiments import Experiments
from bot.records.handoffs import Handoffs
from bot.records.outcomes import Outcomes
from bot.records.store import Store, done_key
from bot.redis_server import EmbeddedRedis, RedisUnavailable, connect, connect_to, running_url
from bot.times import from_ts
from bot.wecom import WeCom, WeComError
from bot.wecom.client import WechatpyWeCom
from bot.wecom.sandbox import Sandbox
from bot.wecom.sandbox_state import DurableSandbox
from handlers.messages import KfMessage
from sop.engine import Engine
from sop.journeys import Journey

if TYPE_CHECKING:
    from flask import Flask

    from intents.classify import Classifier  # loaded only where a command classifies

log = logging.getLogger("bot")
TURN_WAIT = 10.0  # seconds a customer's message waits for their previous one; then it goes on


class StartError(RuntimeError):
    """Something this process needs could not be started."""


def open_redis(settings: Settings) -> tuple[redis.Redis, EmbeddedRedis | None]:
    """REDIS_URL or the sentinels when configured (fail fast), else the embedded server under var/ (reused if
    running)."""
    if settings.external_redis:
        return connect_to(settings), None
    data_dir = settings.embedded_redis_dir
    url = running_url(data_dir)
    if url:
        try:
            return connect(url), None
        except RedisUnavailable:
            pass
    server = EmbeddedRedis(data_dir).start()
    (data_dir / "port").write_text(str(server.port))
    return connect(server.url), server


@dataclass
class Runtime:
    """The parts one process uses, each built once; `close()` stops what it started."""

    settings: Settings
    r: redis.Redis
    embedded: EmbeddedRedis | None = None
    sandbox: Sandbox | None = None
    content: Content | None = None
    clock: Callable[[], float] = time.time
    store: Store = field(init=False)
    customers: Customers = field(init=False)
    handoffs: Handoffs = field(init=False)
    inbox: Inbox = field(init=False)
    triggers: Triggers = field(init=False)
    experiments: Experiments = field(init=False)
    outcomes: Outcomes = field(init=False)
    channel_book: ChannelBook = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(self.r)
        self.customers = Customers(self.r)
        self.handoffs = Handoffs(self.r, self.settings.timezone)
        self.inbox = Inbox(self.r, self.settings.worker.inbox_shards)
        self.experiments = Experiments(self.r, self.settings.timezone)
        self.channel_book = ChannelBook(self.r, self.settings.timezone, self._attribution_hours)
        self.outcomes = Outcomes([self.experiments.record, self.channel_book.note])
        self.triggers = Triggers(self.engine, self.store, self.customers, self.settings.timezone, self.outcomes)
        self._lock = threading.Lock()
        self._book: tuple[tuple[Campaign, ...], CouponBook] | None = None
        self._engine: tuple[tuple[Journey, ...], Engine] | None = None

    def coupons(self) -> CouponBook | None:
        """The coupon book over the campaigns as currently loaded (None when none are configured)."""
        campaigns = self.content.campaigns if self.content else None
        if campaigns is None:
            return None
        with self._lock:
            if self._book is None or self._book[0] is not campaigns:
                self._book = (campaigns, CouponBook(self.r, campaigns, self.settings.timezone, self.experiments))
            return self._book[1]

    def engine(self) -> Engine | None:
        """The SOP engine, running the journeys as currently loaded (None when none are configured)."""
        journeys = self.content.journeys if self.content else None
        if journeys is None:
            return None
        with self._lock:
            if self._engine is None:
                self._engine = (journeys, Engine(self.r, journeys, self.settings.sop_rules, self.settings.timezone,
                                                 customers=self.customers, emit=self.inbox.emit_touches,
                                                 shards=self.settings.worker.inbox_shards))
            elif self._engine[0] is not journeys:
                self._engine[1].use(journeys)
                self._engine = (journeys, self._engine[1])
            return self._engine[1]

    def wecom(self) -> WechatpyWeCom:
        s = self.settings
        return WechatpyWeCom(s.corp_id, s.secret or "sandbox-secret", s.agent_id, s.api_base_url, self.r,
                             timeout=s.http_timeout_seconds)

    def _attribution_hours(self) -> int:
        current = self.content.channels if self.content else None
        return current.attribution_hours if current else DEFAULT_WINDOW_HOURS

    def channels(self, wecom: WeCom) -> Channels:
        """Channels (content.channels) acting through `wecom`."""
        return Channels(wecom, self.store, self.customers, self.channel_book, self.triggers,
                        lambda: self.content.channels if self.content else None, self.store.kf_accounts,
                        self.settings.agent_id, self.settings.timezone, self.clock)

    def team(self) -> Team | None:
        """The consultants as currently loaded (None when not configured)."""
        return self.content.team if self.content else None

    def classifier(self) -> Classifier | None:
        """The intent classifier as currently loaded (None when not configured)."""
        return self.content.classifier if self.content else None

    def parts(self, wecom: WeCom | None = None) -> Parts:
        """What one worker acts through, built around its own WeCom client; every collaborator is a
        constructor argument."""
        wecom = wecom or self.wecom()
        s, tz = self.settings, self.settings.timezone
        store, customers, handoffs = self.store, self.customers, self.handoffs

        def now() -> datetime:
            return from_ts(self.clock(), tz)

        sender = KfSender(wecom, store, customers, self.clock)
        staff = Staff(wecom, store, customers, handoffs, self.team, s.agent_id, now, coupons=self.coupons)
        desk = Desk(wecom, store, handoffs, self.team, staff, sender.send, now)
        executor = Executor(wecom, store, customers, sender, desk, staff, self.triggers, self.coupons, tz,
                            self.clock, s.corp_tags, self.channels(wecom))
        pipeline = Pipeline(executor, s.replies, self.classifier,
                            human_holds=lambda customer, msgid: _held(handoffs, customers, wecom, customer, msgid),
                            conversation=customers.conversation,
                            welcomes=lambda customer: self.engine() is not None and customers.awaits_welcome(customer),
                            turn=self._turn)
        engine = self.engine()
        touches = None
        if engine is not None:
            team = self.team()
            default = team.consultants[0].userid if team and team.consultants else None
            touches = TouchRunner(wecom, store, customers, sender, executor.issue_coupon, self.coupons, engine,
                                  lambda c: customers.owner(c) or handoffs.owner_of(c), default, tz,
                                  clock=self.clock, human_holds=lambda c: _held(handoffs, customers, wecom, c, ""),
                                  experiments=self.experiments, touched=self.channel_book.touched)
        return Parts(store, KfSync(store, self.inbox, wecom, self.clock), pipeline, staff, executor, touches)

    @contextmanager
    def _turn(self, msg: KfMessage) -> Iterator[None]:
        """A customer's message or event: their turn (what concerns one customer is handled one at a time), taken
        in the round trip that reads ahead what it is routed and answered with; given back with the entry's last."""
        if not msg.external_userid or msg.backlog:
            yield
            return
        try:
            self._read_ahead(msg)
            yield
        finally:
            self.customers.end_turn(msg.external_userid, msg.msgid)

    def _read_ahead(self, msg: KfMessage) -> None:
        """Take the turn and read, in one round trip: the customer's state, an open handoff, experiments, the open
        SOP question, and the done marks of the message's first actions."""
        c, engine = msg.external_userid, self.engine()
        gets, hashes = self.customers.ahead(c)
        gets += self.handoffs.ahead(c)
        gets += [done_key(k) for k in first_marks(message_key(msg.msgid))]
        hashes += self.experiments.ahead(c) + ([engine.offer_key(c)] if engine else [])
        held = later.ahead(self.r, gets, hashes, first=self.customers.claim_turn(c, msg.msgid))
        if held in (None, msg.msgid):
            return
        # Another message of this customer is being handled: wait for it (well within the claim idle time, so the
        # rest of this worker's batch is not taken over meanwhile), then read again what it changed.
        if not self.customers.wait_turn(c, msg.msgid, min(TURN_WAIT, self.settings.worker.claim_idle_seconds / 3)):
            log.warning("customer %s: message %s went on after waiting for %s", c, msg.msgid, held)
        later.forget(self.r, *gets, *hashes)
        later.ahead(self.r, gets, hashes)

    def scheduler(self, stop: threading.Event, **kw: Any) -> Scheduler:
        """The scheduler of this process (it ticks only while it holds the lease)."""
        content = self.content
        return Scheduler(self.r, self.inbox, self.store, self.handoffs, self.parts().staff, self.engine,
                         self.coupons, (lambda: content.reload_if_changed(force=True)) if content else (lambda: None),
                         self.settings.timezone, stop, self.clock, **kw)

    def worker(self, name: str | None = None) -> Worker:
        """An inbox consumer."""
        return Worker(self.inbox, self.parts(), self.settings.worker, name)

    def app(self, service_url: Callable[[], str] = lambda: "") -> Flask:
        """The web app; `service_url()` is where it listens (the sandbox chat posts its callbacks there)."""
        from bot.app import create_app

        return create_app(self.settings, self.r, self.content, self.sandbox.url if self.sandbox else None,
                          coupons=self.coupons, engine=self.engine, service_url=service_url, outcomes=self.outcomes,
                          staff=lambda: self.parts().staff)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
        self.r.close()
        if self.embedded is not None:
            self.embedded.stop()
            (self.settings.embedded_redis_dir / "port").unlink(missing_ok=True)


def _held(handoffs: Handoffs, customers: Customers, wecom: WeCom, customer: str, msgid: str) -> bool:
    """A human holds the chat: an open handoff that this message did not open (replays go on), or WeCom said
    a servicer or the queue has it (95018, or a pick-up in the WeCom client) and still says so."""
    h = handoffs.open_for(customer)
    if h is not None:
        return h.cause_msgid != msgid
    if customers.held_by(customer) is None:
        return False
    try:  # a hold without a handoff of ours is confirmed with WeCom: its end may never have been announced
        state, _ = wecom.service_state(customers.get(customer).open_kfid, customer)
    except WeComError:
        return True
    if state in (2, 3):  # the kf queue, or a servicer
        return True
    customers.release(customer)
    return False


def start(settings: Settings, *, sandbox_port: int = 0, with_sandbox: bool | None = None,
          lazy_classifier: bool = False) -> Runtime:
    """Open Redis, start the sandbox when there is no WECOM_SECRET, load content; undo it all on failure.
    The sandbox keeps its state in var/sandbox-state.json, next to the embedded Redis (bot/wecom/sandbox_state.py)."""
    r, embedded = open_redis(settings)
    sandbox = None
    try:
        if settings.sandbox if with_sandbox is None else with_sandbox:
            try:
                sandbox = DurableSandbox(settings.corp_id, "sandbox-secret", SANDBOX_OPEN_KFID, port=sandbox_port,
                                         state_file=settings.root / "var" / "sandbox-state.json").start()
            except OSError as exc:
                raise StartError(f"the sandbox cannot listen on port {sandbox_port} ({exc.strerror}); "
                                       f"is another `wecom-bot serve` running? (--sandbox-port)") from None
            if not sandbox.restored:  # a kept state has its servicers (and their status changes)
                sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
            settings = settings.with_api_base(f"{sandbox.url}/cgi-bin/")
        lazy = ("classifier",) if lazy_classifier else ()
        return Runtime(settings, r, embedded, sandbox, Content(settings, lazy=lazy))
    except Exception:
        if sandbox:
            sandbox.stop()
        if embedded:
            embedded.stop()
            (settings.embedded_redis_dir / "port").unlink(missing_ok=True)
        raise


def production_app(settings: Settings) -> Flask:
    """The app for a web-only process on the shared REDIS_URL (gunicorn, `wecom-bot web`)."""
    if not settings.external_redis:
        raise SystemExit("a web-only process needs REDIS_URL (use `wecom-bot serve` for the all-in-one mode)")
    return Runtime(settings, connect_to(settings), content=Content(settings)).app()


def write_sandbox_info(rt: Runtime, service_url: str) -> Path:
    """Tell `wecom-bot chat` where the service and the sandbox are (var/sandbox.json)."""
    s = rt.settings
    if rt.sandbox is None:
        raise ValueError("write_sandbox_info needs a runtime with the sandbox")
    path = s.root / "var" / "sandbox.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"service_url": service_url, "sandbox_url": rt.sandbox.url,
                                "callback_path": s.callback_path, "corp_id": s.corp_id, "token": s.token,
                                "aes_key": s.aes_key, "open_kfid": SANDBOX_OPEN_KFID}, indent=2))
    return path


def start_threads(rt: Runtime, workers: int, stop: threading.Event) -> list[threading.Thread]:
    """Worker threads for `serve`."""
    threads = []
    for i in range(workers):
        w = rt.worker()
        t = threading.Thread(target=w.run_forever, args=(stop,), name=f"worker-{i}", daemon=True)
        t.start()
        threads.append(t)
    return threads
