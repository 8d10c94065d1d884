"""Sentinel failover with the machine's redis-server: the master is killed, the webhook answers 503 until the
replica is promoted, then everything acknowledged is answered once; the worker and scheduler reconnect."""

from __future__ import annotations

import dataclasses
import io
import time
from collections import Counter

import pytest

from bot.ops.doctor import run_doctor
from bot.redis_server import RedisUnavailable, connect, connect_to, topology
from tests.cluster import LocalSentinel
from tests.support import kf_notice, make_settings, running


@pytest.fixture()
def sentinel(tmp_path):
    group = LocalSentinel(tmp_path / "sentinel").start(down_after_ms=1000)
    yield group
    group.stop()


def test_sentinel_settings_reach_the_master_and_name_the_mode(sandbox, sentinel):
    settings, _ = make_settings(sandbox.url, "")
    settings = dataclasses.replace(settings, redis_sentinels=sentinel.addresses,
                                   redis_sentinel_master=sentinel.name)
    r = connect_to(settings)
    assert r.set("k", "v") and r.get("k") == "v"
    shape = topology(r)
    assert (shape["mode"], shape["nodes"], shape["answering"]) == ("sentinel", 1, 1)
    assert shape["master"] == f"127.0.0.1:{sentinel.master.port}"
    out = io.StringIO()
    run_doctor(settings, out)
    assert (f"Redis mode: sentinel, 1 of 1 sentinels answer, master 127.0.0.1:{sentinel.master.port}"
            in out.getvalue())
    with pytest.raises(RedisUnavailable, match="REDIS_SENTINEL_MASTER"):
        connect(None, sentinels=sentinel.addresses)
    with pytest.raises(RedisUnavailable, match="does not answer"):
        connect(None, sentinels=sentinel.addresses, master="nobody")


@pytest.mark.timeout(90)
def test_master_killed_webhook_503_then_recovers_and_nothing_acknowledged_doubles(sandbox, sentinel):
    settings, _ = make_settings(sandbox.url, "")
    settings = dataclasses.replace(settings, redis_sentinels=sentinel.addresses,
                                   redis_sentinel_master=sentinel.name)
    r = connect_to(settings)
    with running(settings, r, scheduler=True) as (_, svc):

        def notice() -> int:
            return svc.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code

        def answered() -> set[str]:
            return {d["touser"] for d in sandbox.delivered()}

        before = [f"wmBefore{i}" for i in range(10)]
        for c in before:
            sandbox.add_customer_text(c, "这个怎么用")
            assert notice() == 200
        assert sandbox.wait_for(lambda: answered() >= set(before), timeout=30)
        r.wait(1, 1000)  # what was acknowledged so far is on the replica (replication is asynchronous)
        old = sentinel.master_port()
        sentinel.master.kill()
        during = [f"wmDuring{i}" for i in range(5)]
        for c in during:
            sandbox.add_customer_text(c, "这个怎么用")
        statuses = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # WeCom retries a refused callback
            statuses.append(notice())
            if statuses[-1] == 200:
                break
            time.sleep(0.2)
        assert statuses[0] == 503 and statuses[-1] == 200, statuses
        assert sentinel.wait_failover(old) == sentinel.replica.port
        after = [f"wmAfter{i}" for i in range(5)]
        for c in after:
            sandbox.add_customer_text(c, "这个怎么用")
            assert notice() == 200
        everyone = set(before) | set(during) | set(after)
        assert sandbox.wait_for(lambda: answered() >= everyone, timeout=40)
        time.sleep(1.5)  # anything queued twice would show up as a second reply
        per_customer = Counter(d["touser"] for d in sandbox.delivered())
        assert set(per_customer) == everyone and set(per_customer.values()) == {1}
        assert topology(r)["master"] == f"127.0.0.1:{sentinel.replica.port}"
