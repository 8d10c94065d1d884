"""Nothing lost, nothing twice: workers killed with SIGKILL, Redis stopped and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from bot.redis_server import EmbeddedRedis, connect, free_port
from tests.support import ROOT, kf_notice, make_settings, running


def write_config(tmp_path: Path, claim_idle: float = 1.0) -> Path:
    """config.yaml with absolute content paths and a short reclaim time."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["content"] = {k: str(ROOT / v) for k, v in cfg["content"].items()}
    cfg["worker"]["claim_idle_seconds"] = claim_idle
    cfg["worker"]["block_ms"] = 100
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def start_worker(env: dict, config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bot", "--log-level", "WARNING", "worker", "--threads", "2"],
                            env={**os.environ, **env, "WECOM_BOT_CONFIG": str(config)}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_worker_killed_mid_batch_every_message_answered_once(sandbox, service, redis_url, r, tmp_path):
    n = 300
    for i in range(n):
        sandbox.add_customer_text(f"wmKill{i:04d}", "请问发票怎么开")
    assert service.post(kf_notice(sandbox.callback_token())).status_code == 200
    _, env = make_settings(sandbox.url, redis_url)
    config = write_config(tmp_path)

    first = start_worker(env, config)
    assert sandbox.wait_for(lambda: len(sandbox.delivered()) >= 40, timeout=60), first.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = len(sandbox.delivered())
    assert killed_at < n, "the worker finished before it could be killed; raise n"

    second = start_worker(env, config)
    try:
        assert sandbox.wait_for(lambda: len(sandbox.delivered()) >= n, timeout=120)
        time.sleep(1.5)  # anything reclaimed late would show up as an extra delivery
    finally:
        second.terminate()
        second.wait(timeout=10)
    per_customer = Counter(d["touser"] for d in sandbox.delivered())
    assert len(per_customer) == n
    assert set(per_customer.values()) == {1}


def test_redis_stopped_mid_run_callbacks_503_then_all_acked_answered(sandbox, tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    url = server.url
    settings, _ = make_settings(sandbox.url, url)
    try:
        with running(settings, connect(url)) as (_, svc):

            def say(customer: str) -> int:
                sandbox.add_customer_text(customer, "这个怎么用")
                return svc.post(kf_notice(sandbox.callback_token(), create_time=int(time.time() * 1000))).status_code

            acked = [c for c in (f"wmBefore{i}" for i in range(20)) if say(c) == 200]
            assert len(acked) == 20
            server.stop()
            during = [say(f"wmDuring{i}") for i in range(5)]
            assert during == [503] * 5
            server.start()
            assert sandbox.wait_for(lambda: {d["touser"] for d in sandbox.delivered()} >= set(acked), timeout=60)
            # WeCom retries the refused callbacks; once Redis is back they are taken and answered too
            retried = svc.post(kf_notice(sandbox.callback_token(), create_time=int(time.time() * 1000) + 1))
            assert retried.status_code == 200
            everyone = set(acked) | {f"wmDuring{i}" for i in range(5)}
            assert sandbox.wait_for(lambda: {d["touser"] for d in sandbox.delivered()} >= everyone, timeout=60)
            assert len(sandbox.delivered()) == len(everyone)
    finally:
        server.stop()


def test_redis_coming_back_empty_workers_recreate_their_group(sandbox, service, runtime, r):
    from tests.support import drain

    worker = runtime.worker()
    sandbox.add_customer_text("wmBefore", "你好")
    service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns()))
    drain(worker)
    r.flushdb()  # e.g. a failover to an empty replica: the stream and its consumer group are gone
    sandbox.add_customer_text("wmAfter", "你好")
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(worker)
    assert "wmAfter" in {d["touser"] for d in sandbox.delivered()}


def test_serve_stops_cleanly_on_sigterm_and_stops_its_embedded_redis(tmp_path):
    import re

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["content"] = {k: str(ROOT / v) for k, v in cfg["content"].items()}
    cfg["redis"]["embedded_dir"] = str(tmp_path / "redis")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WECOM_SECRET")}
    env["WECOM_BOT_CONFIG"] = str(tmp_path / "config.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", "0", "--sandbox-port", "0"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "health:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert re.search(r"health: http://127\.0\.0\.1:\d+/healthz", line), line
        for _ in range(3):  # repeated signals must not deadlock the shutdown
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "redis" / "port").exists()


def test_a_dead_workers_entry_is_taken_over_within_claim_idle_and_a_slow_one_is_not_run_twice(runtime, r):
    """The in-flight lease lasts claim_idle_seconds (renewed while the entry runs): a killed worker's entry
    is taken over within claim_idle_seconds plus one poll, not four times that."""
    import time as clock

    from bot.queue.inbox import Item

    inbox = runtime.worker().inbox
    idle = runtime.settings.worker.claim_idle_seconds
    inbox.put(Item("escalate", '{"id": "nope", "level": 1}', "lease-test"))
    dead = inbox.read("dead-worker", 10, None)
    assert dead and inbox.begin(dead[0].id, "dead-worker", idle)  # took it, then died without ending
    started = clock.monotonic()
    worker = runtime.worker()
    while inbox.depth()["pending"] and clock.monotonic() - started < 10 * idle + 5:
        worker.run_once()
        clock.sleep(0.05)
    assert inbox.depth()["pending"] == 0
    assert clock.monotonic() - started < 2 * idle + 2
    # while a live worker holds an entry, its renewed lease keeps a second worker off it
    inbox.put(Item("escalate", '{"id": "nope2", "level": 1}', "lease-test-2"))
    slow = inbox.read("slow-worker", 10, None)[0]
    assert inbox.begin(slow.id, "slow-worker", idle)
    for _ in range(6):
        clock.sleep(idle / 3)
        assert inbox.renew(slow.id, "slow-worker", idle)
    assert not inbox.begin(slow.id, "other-worker", idle)
    inbox.end(slow.id, "slow-worker")
