"""Shared fixtures: a real Redis (REDIS_URL or the embedded server), one database per test run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import redis

from bot.redis_server import EmbeddedRedis, RedisUnavailable, connect

TEST_DB = int(os.environ.get("TEST_REDIS_DB", "13"))


def _base_url() -> tuple[str, EmbeddedRedis | None]:
    url = os.environ.get("REDIS_URL")
    if url:
        try:
            connect(url).close()
            return url, None
        except RedisUnavailable:
            pass
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="wecom-test-redis-")), appendfsync="everysec").start()
    return server.url, server


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test database on a Redis that answers."""
    url, server = _base_url()
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    yield f"{base}/{TEST_DB}"
    if server:
        server.stop()


@pytest.fixture()
def r(redis_url: str) -> redis.Redis:
    """A client on the test database, flushed before the test (only that database)."""
    client = connect(redis_url)
    client.flushdb()
    yield client
    client.close()


# --- the service under test: real HTTP, real Redis, the sandbox as WeCom ---------------------

import dataclasses  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import requests  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from bot.config import (  # noqa: E402
    SANDBOX_AES_KEY,
    SANDBOX_CORP_ID,
    SANDBOX_OPEN_KFID,
    SANDBOX_TOKEN,
    load_settings,
)
from bot.content import Content  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.web.envelope import CallbackCrypto  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the real WeCom."""
    import requests.sessions

    real = requests.sessions.Session.request

    def guarded(self, method, url, *a, **kw):
        assert "qyapi.weixin.qq.com" not in str(url), f"test tried to call real WeCom: {url}"
        return real(self, method, url, *a, **kw)

    monkeypatch.setattr(requests.sessions.Session, "request", guarded)


@pytest.fixture()
def sandbox():
    """The fake WeCom server, fresh per test."""
    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID).start()
    yield sb
    sb.stop()


def make_settings(sandbox_url: str, redis_url: str, **worker):
    """Settings as a real deployment would have them, pointed at the sandbox and the test Redis."""
    env = {"WECOM_SECRET": "sandbox-secret", "WECOM_CORP_ID": SANDBOX_CORP_ID, "WECOM_TOKEN": SANDBOX_TOKEN,
           "WECOM_AES_KEY": SANDBOX_AES_KEY, "WECOM_AGENT_ID": "1000002",
           "WECOM_API_BASE_URL": f"{sandbox_url}/cgi-bin/", "REDIS_URL": redis_url}
    s = load_settings(ROOT / "config.yaml", env)
    wk = dataclasses.replace(s.worker, claim_idle_seconds=0.5, block_ms=50, **worker)
    return dataclasses.replace(s, worker=wk), env


@pytest.fixture()
def settings(sandbox, redis_url, r):
    return make_settings(sandbox.url, redis_url)[0]


@pytest.fixture()
def runtime(settings, r):
    rt = Runtime(settings, r, content=Content(settings))
    yield rt


class Service:
    """The Flask app served over real HTTP on loopback."""

    def __init__(self, app, crypto: CallbackCrypto, path: str):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.crypto = crypto
        self.path = path
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def post(self, plain_xml: str, **kw) -> requests.Response:
        query, body = self.crypto.encrypt(plain_xml, **kw)
        return requests.post(self.url + self.path, params=query, data=body.encode(), timeout=10)

    def post_raw(self, params: dict, body: bytes | str) -> requests.Response:
        return requests.post(self.url + self.path, params=params, data=body, timeout=10)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def service(runtime):
    s = runtime.settings
    svc = Service(runtime.app(), CallbackCrypto(s.token, s.aes_key, s.corp_id), s.callback_path)
    yield svc
    svc.stop()


def kf_notice(token: str, open_kfid: str = SANDBOX_OPEN_KFID, create_time: int | None = None,
              corp_id: str = SANDBOX_CORP_ID) -> str:
    """Plaintext of a kf_msg_or_event callback."""
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{create_time or int(time.time())}"
            f"</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>")


def drain(worker, timeout: float = 60.0) -> None:
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
