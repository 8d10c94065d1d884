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
