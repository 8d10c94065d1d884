"""Helpers the tests share that are not fixtures: the service over HTTP, callbacks, draining a worker."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis
import requests
from werkzeug.serving import make_server

from bot.config import (
    SANDBOX_AES_KEY,
    SANDBOX_CORP_ID,
    SANDBOX_OPEN_KFID,
    SANDBOX_TOKEN,
    Settings,
    load_settings,
)
from bot.queue.inbox import Inbox
from bot.records.customers import Customers
from bot.web.envelope import CallbackCrypto
from sop.engine import Engine, due_until, sharded, shards
from sop.journeys import Journey
from sop.plan import Rules

ROOT = Path(__file__).resolve().parent.parent


def engine_for(r: redis.Redis, journeys: Iterable[Journey], rules: Rules, tz: ZoneInfo) -> Engine:
    """An SOP engine wired as the runtime wires it: customers from Redis, touches into the inbox."""
    return Engine(r, journeys, rules, tz, customers=Customers(r), emit=Inbox(r).emit_touches)


def sop_due(r: redis.Redis) -> dict[str, float]:
    """member -> due time of every pending SOP step (every shard), earliest first."""
    return dict(sorted(due_until(r, datetime(9000, 1, 1)), key=lambda ms: ms[1]))


def sop_keys(r: redis.Redis, key: str) -> list[str]:
    """Every shard's copy of an SOP key (sop.engine.PENDING, HELD, ...)."""
    return [sharded(key, shard) for shard in shards(r)]


METRICS_TOKEN = "metrics-test-token"


def make_settings(sandbox_url: str, redis_url: str, **worker: Any) -> tuple[Settings, dict[str, str]]:
    """Settings as a real deployment would have them, pointed at the sandbox and the test Redis."""
    env = {"WECOM_SECRET": "sandbox-secret", "WECOM_CORP_ID": SANDBOX_CORP_ID, "WECOM_TOKEN": SANDBOX_TOKEN,
           "WECOM_AES_KEY": SANDBOX_AES_KEY, "WECOM_AGENT_ID": "1000002",
           "WECOM_API_BASE_URL": f"{sandbox_url}/cgi-bin/", "REDIS_URL": redis_url,
           "WECOM_BOT_METRICS_TOKEN": METRICS_TOKEN}
    s = load_settings(ROOT / "config.yaml", env)
    wk = dataclasses.replace(s.worker, claim_idle_seconds=0.5, block_ms=50, **worker)
    return dataclasses.replace(s, worker=wk), env


class Service:
    """The Flask app served over real HTTP on loopback."""

    def __init__(self, app: Any, crypto: CallbackCrypto, path: str) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.crypto = crypto
        self.path = path
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def post(self, plain_xml: str, **kw: Any) -> requests.Response:
        query, body = self.crypto.encrypt(plain_xml, **kw)
        return requests.post(self.url + self.path, params=query, data=body.encode(), timeout=10)

    def post_raw(self, params: dict[str, str], body: bytes | str) -> requests.Response:
        return requests.post(self.url + self.path, params=params, data=body, timeout=10)

    def stop(self) -> None:
        self.server.shutdown()


@contextmanager
def running(settings: Settings, r: redis.Redis, scheduler: bool = False) -> Iterator[tuple[Any, Service]]:
    """(runtime, its web app over HTTP) with one worker thread (and the scheduler) until the block ends."""
    from bot.content import Content
    from bot.runtime import Runtime

    rt = Runtime(settings, r, content=Content(settings))
    svc = Service(rt.app(), CallbackCrypto(settings.token, settings.aes_key, settings.corp_id), settings.callback_path)
    stop = threading.Event()
    worker = threading.Thread(target=rt.worker().run_forever, args=(stop,), daemon=True)
    worker.start()
    ticks = rt.scheduler(stop) if scheduler else None
    if ticks is not None:
        ticks.start()
    try:
        yield rt, svc
    finally:
        stop.set()
        if ticks is not None:
            ticks.shutdown()
        worker.join(timeout=5)
        svc.stop()


def kf_notice(token: str, open_kfid: str = SANDBOX_OPEN_KFID, create_time: int | None = None,
              corp_id: str = SANDBOX_CORP_ID) -> str:
    """Plaintext of a kf_msg_or_event callback."""
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{create_time or int(time.time())}"
            f"</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>")


def drain(worker: Any, timeout: float = 60.0) -> None:
    """Run the worker until the inbox is empty and nothing is pending (another worker may hold some)."""
    deadline = time.monotonic() + timeout
    idle = 0
    while time.monotonic() < deadline:
        n = worker.run_once()
        depth = worker.inbox.depth()
        if n == 0 and depth["pending"] == 0 and depth["lag"] == 0:
            idle += 1
            if idle >= 2:
                return
        else:
            idle = 0
        if n == 0:
            time.sleep(0.02)
    raise AssertionError(f"inbox not drained: {worker.inbox.depth()}")


def run_command(argv: list[str]) -> int:
    """A `wecom-bot` command in this process, parsed by the real parser (its output is the caller's to capture)."""
    from bot.ops.cli import build_parser

    args = build_parser().parse_args(argv)
    return int(args.func(args))


def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS` in the repository, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "bot", "--log-level", "WARNING", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def _welcome_text() -> str:
    """The shipped first-contact welcome (new_customer_week's welcome step)."""
    import yaml

    doc = yaml.safe_load((ROOT / "sop" / "journeys" / "new_customer_week.yaml").read_text(encoding="utf-8"))
    return str(next(s for s in doc["steps"] if s["id"] == "welcome")["content"]["text"])


WELCOME = _welcome_text()


def answer(text: str) -> str:
    """A text to the customer without the welcome a first contact's answer opens with."""
    return text.removeprefix(WELCOME + "\n\n")
