"""Shared set-up for the console and metrics tests: an app with webhook + console + metrics, and traffic."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from datetime import time as local_time
from typing import Any

from flask import Flask

from bot.console import make_console
from bot.queue.inbox import Inbox
from bot.web.envelope import CallbackCrypto
from bot.web.metrics import make_metrics
from bot.web.webhook import CallbackCounts, mount_webhook
from tests.support import ROOT, Service, drain, kf_notice

ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "console-admin-token-1234"


def build_app(settings: Any, r: Any, content: Any, sandbox_url: str | None, token: str | None,
              coupons: Any = lambda: None, service_url: Any = lambda: "", staff: Any = lambda: None) -> Flask:
    """The callback endpoint, the console at /admin and /metrics, as create_app mounts them."""
    app = Flask("console-test")
    counts = CallbackCounts()
    mount_webhook(app, CallbackCrypto(settings.token, settings.aes_key, settings.corp_id), Inbox(r),
                  settings.callback_path, settings.max_body_bytes, settings.max_clock_skew_seconds, counts)
    app.register_blueprint(make_console(settings, r, content, sandbox_url, admin_token=token, coupons=coupons,
                                        service_url=service_url, staff=staff), url_prefix="/admin")
    app.register_blueprint(make_metrics(settings, r, counts, coupons))
    return app


def serve(settings: Any, r: Any, content: Any, sandbox_url: str | None, token: str | None,
          coupons: Any = lambda: None, staff: Any = lambda: None) -> Service:
    """That app over real HTTP on loopback; the console's actions act on WeCom through `staff()`."""
    listening = {"url": ""}  # where the app listens, as `serve` tells it once bound
    app = build_app(settings, r, content, sandbox_url, token, coupons, lambda: listening["url"], staff)
    svc = Service(app, CallbackCrypto(settings.token, settings.aes_key, settings.corp_id), settings.callback_path)
    listening["url"] = svc.url
    return svc


def say(sandbox: Any, service: Service, runtime: Any, text: str, customer: str) -> None:
    """A customer message through the sandbox and an encrypted callback, processed by a worker."""
    sandbox.add_customer_text(customer, text)
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())


def traffic(sandbox: Any, service: Service, runtime: Any) -> None:
    """A few conversations: coupons, a handoff, a greeting; then SOP ticks that send touches."""
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    say(sandbox, service, runtime, "有优惠吗", "wmConsoleA01")
    say(sandbox, service, runtime, "你好", "wmConsoleA01")
    say(sandbox, service, runtime, "这个多少钱", "wmConsoleB02")
    say(sandbox, service, runtime, "有券吗", "wmConsoleC03")
    engine = runtime.engine()
    if engine is not None:
        tz = runtime.settings.timezone
        today = datetime.now(tz).date()
        for days in (1, 2, 3):  # 20:30 local: after the journeys' 20:00 steps, before the 22:00 quiet hours
            engine.tick(datetime.combine(today + timedelta(days=days), local_time(20, 30), tzinfo=tz))
            drain(runtime.worker())


class BackgroundWorker:
    """A worker thread for browser round trips."""

    def __init__(self, runtime: Any) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=runtime.worker().run_forever, args=(self.stop,), daemon=True)

    def __enter__(self) -> BackgroundWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
