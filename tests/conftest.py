"""Shared fixtures: a real Redis (REDIS_CLUSTER_URL, REDIS_URL or the embedded server), one database per test
run; on a cluster (database 0 only) the suite's own cluster, flushed on every primary."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import redis

from bot import observe
from bot.redis_server import EmbeddedRedis, RedisUnavailable, connect

TEST_DB = int(os.environ.get("TEST_REDIS_DB", "13"))
CLUSTER_URL = os.environ.get("REDIS_CLUSTER_URL", "")


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
    """URL of the test database on a Redis that answers (a cluster's URL as given: it has only database 0)."""
    if CLUSTER_URL:
        yield CLUSTER_URL
        return
    url, server = _base_url()
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    yield f"{base}/{TEST_DB}"
    if server:
        server.stop()


@pytest.fixture()
def r(redis_url: str) -> redis.Redis:
    """A client on the test database, flushed before the test (only that database; on a cluster every primary of
    the suite's own cluster); what earlier tests left
    in this process's metrics buffer goes into it first, so no test counts another's callbacks."""
    client = connect(redis_url)
    observe.flush(client)
    client.flushdb()
    yield client
    client.close()


# --- the service under test: real HTTP, real Redis, the sandbox as WeCom ---------------------

from bot.config import SANDBOX_CORP_ID, SANDBOX_OPEN_KFID  # noqa: E402
from bot.content import Content  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.web.envelope import CallbackCrypto  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402

# Shared helpers live in tests/support.py; these names stay importable from here too.
from tests.support import ROOT, Service, drain, kf_notice, make_settings  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the real WeCom."""
    import requests.sessions

    from bot.wecom import http

    real, real_wecom = requests.sessions.Session.request, http.Session.request

    def guarded(self, method, url, *a, **kw):
        assert "qyapi.weixin.qq.com" not in str(url), f"test tried to call real WeCom: {url}"
        return real(self, method, url, *a, **kw)

    def guarded_wecom(self, method, url, *a, **kw):
        assert "qyapi.weixin.qq.com" not in str(url), f"test tried to call real WeCom: {url}"
        return real_wecom(self, method, url, *a, **kw)

    monkeypatch.setattr(requests.sessions.Session, "request", guarded)
    monkeypatch.setattr(http.Session, "request", guarded_wecom)


@pytest.fixture()
def sandbox():
    """The fake WeCom server, fresh per test."""
    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID).start()
    yield sb
    sb.stop()


@pytest.fixture()
def settings(sandbox, redis_url, r):
    return make_settings(sandbox.url, redis_url)[0]


@pytest.fixture()
def runtime(settings, r):
    rt = Runtime(settings, r, content=Content(settings))
    yield rt


@pytest.fixture()
def service(runtime):
    s = runtime.settings
    svc = Service(runtime.app(), CallbackCrypto(s.token, s.aes_key, s.corp_id), s.callback_path)
    yield svc
    svc.stop()
