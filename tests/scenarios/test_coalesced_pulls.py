"""Coalesced kf pulls: at most one sync_msg pull per account running; notices that arrive meanwhile become
one more round of it, none is lost, and none counts as an empty pull (bot/queue/kfsync.py)."""

from __future__ import annotations

import threading
import time

from bot.queue.worker import on_kf_notice
from bot.records.store import Store
from sop.shards import is_cluster
from tests.support import drain, kf_notice


def _hook_sync(sandbox, after_page) -> None:
    """Call `after_page(answer)` inside sandbox's sync_msg, after the page is computed, before it is sent."""
    real = sandbox._api["/cgi-bin/kf/sync_msg"]

    def hooked(d, q):
        answer = real(d, q)
        after_page(answer)
        return answer

    sandbox._api["/cgi-bin/kf/sync_msg"] = hooked


def test_many_concurrent_notices_while_messages_arrive_every_message_answered_once(sandbox, service, runtime):
    sandbox.latency = 0.045  # a WeCom-like round trip; calls overlap
    n, posters = 240, 6
    customers = [f"wmCo{i:04d}" for i in range(n)]
    stop = threading.Event()
    workers = [runtime.worker(f"w{i}") for i in range(3)]
    threads = [threading.Thread(target=w.run_forever, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()

    def post(mine: list[str]) -> None:
        for c in mine:  # a customer writes, WeCom notifies at once
            sandbox.add_customer_text(c, "请问发票怎么开")
            assert service.post(kf_notice(sandbox.callback_token())).status_code == 200

    producers = [threading.Thread(target=post, args=(customers[i::posters],)) for i in range(posters)]
    started = time.monotonic()
    try:
        for t in producers:
            t.start()
        for t in producers:
            t.join()
        assert sandbox.wait_for(lambda: len(sandbox.delivered()) >= n, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    drain(workers[0])
    delivered = sandbox.delivered()
    assert sorted(d["touser"] for d in delivered) == sorted(customers)  # every message answered exactly once
    pulls = len(sandbox.requests("kf/sync_msg"))
    counters = Store(runtime.r).counters()
    assert counters["kf_messages_queued"] == n
    assert pulls <= n // 2, f"{pulls} sync_msg calls for {n} notices"
    # one pull at a time per account: no more calls than fit one after another in the time it took
    assert pulls <= elapsed / sandbox.latency + 2, f"{pulls} sync_msg calls in {elapsed:.1f}s"
    if is_cluster(runtime.r):  # a worker's read over 16 shards takes notices in bigger batches: more of them
        # are covered by a finished round than coalesced into a running one; either way they cost no pull
        assert counters.get("kf_notices_coalesced", 0) + counters.get("kf_notices_covered", 0) >= n // 4
    else:
        assert counters.get("kf_notices_coalesced", 0) >= n // 2
    assert pulls == counters["kf_pulls"]  # one page each: every round was one call
    assert Store(runtime.r).kf_stalled() == {}


def test_notice_arriving_as_the_last_page_returns_is_one_more_round(sandbox, runtime):
    """Deterministic: while the puller's last page is on its way, a message arrives and its notice is handled;
    the notice is coalesced, and the puller, checking atomically before it lets go, pulls again."""
    kfsync, kfid = runtime.worker().parts.kfsync, sandbox.open_kfid
    sandbox.add_customer_text("wmFirst", "在吗")
    seen: list[str] = []

    def late_notice(answer) -> None:
        if not seen:
            sandbox.add_customer_text("wmLate", "还有一个问题")
            seen.append(kfsync.notice(kfid, sandbox.callback_token(), time.time(), "late").outcome)

    _hook_sync(sandbox, late_notice)
    done = kfsync.notice(kfid, sandbox.callback_token(), time.time(), "first")
    assert seen == ["coalesced"]
    assert (done.outcome, done.queued, done.rounds) == ("pulled", 2, 2)
    assert len(sandbox.requests("kf/sync_msg")) == 2
    assert not runtime.r.exists(f"wecom:kf:{{{kfid}}}:puller")  # the account is free again
    drain(runtime.worker())
    assert sorted(d["touser"] for d in sandbox.delivered()) == ["wmFirst", "wmLate"]
    # a notice after the release pulls by itself
    sandbox.add_customer_text("wmAfter", "你好")
    assert kfsync.notice(kfid, sandbox.callback_token(), time.time(), "after").queued == 1


def test_repeated_token_is_skipped_and_a_dead_pullers_notice_takes_its_pull_over(sandbox, runtime):
    p, kfid = runtime.worker().parts, sandbox.open_kfid
    sandbox.add_customer_text("wmA", "你好")
    token = sandbox.callback_token()
    fields = {"OpenKfId": kfid, "Token": token, "CreateTime": str(int(time.time()))}
    assert on_kf_notice(p, fields) == "queued=1 rounds=1"
    assert on_kf_notice(p, {**fields, "CreateTime": str(int(time.time()) + 1)}) == "duplicate"
    assert len(sandbox.requests("kf/sync_msg")) == 1
    # a puller died holding the account (its key lives on for its TTL); notices meanwhile are coalesced
    sandbox.add_customer_text("wmB", "在吗")
    runtime.r.set(f"wecom:kf:{{{kfid}}}:puller", "n:dead:1", px=10_000)
    assert p.kfsync.notice(kfid, sandbox.callback_token(), time.time(), "other:2").outcome == "coalesced"
    # the dead puller's own notice, retried, takes the pull over at once (no wait for the TTL)
    done = p.kfsync.notice(kfid, "dead", time.time(), "dead:1")
    assert (done.outcome, done.queued) == ("pulled", 1)
    assert not runtime.r.exists(f"wecom:kf:{{{kfid}}}:puller")


def test_a_pull_that_failed_leaves_its_notices_pending_for_the_retry(sandbox, runtime):
    kfsync, kfid = runtime.worker().parts.kfsync, sandbox.open_kfid
    sandbox.add_customer_text("wmA", "你好")
    token = sandbox.callback_token()
    sandbox.queue("kf/sync_msg", {"errcode": 40058, "errmsg": "invalid parameter"})
    try:
        kfsync.notice(kfid, token, time.time(), f"{token}:1")
        raise AssertionError("the pull should have failed")
    except Exception as exc:  # noqa: BLE001 - the WeCom error of the scripted answer
        assert "40058" in str(exc)
    assert not runtime.r.exists(f"wecom:kf:{{{kfid}}}:puller")
    # the entry's retry: its Token was seen, but its notice is still pending, so it pulls
    assert kfsync.notice(kfid, token, time.time(), f"{token}:1").queued == 1
    assert kfsync.notice(kfid, token, time.time(), f"{token}:1").outcome == "duplicate"


def test_coalesced_notices_do_not_count_as_empty_pulls(sandbox, runtime, r):
    kfsync, kfid = runtime.worker().parts.kfsync, sandbox.open_kfid
    store = Store(r)
    store.save_cursor(kfid, "sbx-49")  # past what WeCom holds: every pull is empty
    r.set(f"wecom:kf:{{{kfid}}}:puller", "p:someone", px=10_000)
    for _ in range(5):
        assert kfsync.notice(kfid, sandbox.callback_token(), time.time() + 1).outcome == "coalesced"
    assert store.kf_empty_streak(kfid) == 0
    r.delete(f"wecom:kf:{{{kfid}}}:puller")
    done = kfsync.notice(kfid, "", None)  # the next pull answers all five in one round: one empty notice
    assert (done.rounds, done.queued) == (1, 0)
    assert store.kf_empty_streak(kfid) == 1 and store.kf_stalled() == {}


def test_a_notice_older_than_a_finished_round_is_covered_without_a_call(sandbox, runtime):
    kfsync, kfid = runtime.worker().parts.kfsync, sandbox.open_kfid
    sandbox.add_customer_text("wmA", "你好")
    created = int(time.time())
    assert kfsync.notice(kfid, sandbox.callback_token(), created, "a").queued == 1
    # a notice whose CreateTime is well before that round's last call: its message was read by it
    assert kfsync.notice(kfid, sandbox.callback_token(), created - 10, "old").outcome == "covered"
    # one within the margin (clock skew, whole seconds) is pulled
    assert kfsync.notice(kfid, sandbox.callback_token(), created, "recent").outcome == "pulled"
    assert len(sandbox.requests("kf/sync_msg")) == 2


def test_a_notice_is_timed_by_our_clock_when_wecoms_runs_behind(sandbox, service, runtime):
    worker = runtime.worker()
    sandbox.add_customer_text("wmSkew01", "你好")
    assert service.post(kf_notice(sandbox.callback_token())).status_code == 200
    drain(worker)
    # WeCom's clock a minute behind ours: by its CreateTime this notice is older than the pull just finished
    sandbox.add_customer_text("wmSkew01", "几天发货")
    assert service.post(kf_notice(sandbox.callback_token(), create_time=int(time.time()) - 60)).status_code == 200
    drain(worker)
    assert len([d for d in sandbox.delivered() if d["touser"] == "wmSkew01"]) == 2  # pulled and answered
