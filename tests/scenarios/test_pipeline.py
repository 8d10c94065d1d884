"""The callback pipeline end to end: encrypted HTTP callbacks -> Redis inbox -> worker -> sandbox WeCom."""

from __future__ import annotations

import threading
import time

import requests

from bot.records.store import Store
from tests.support import drain, kf_notice


def customer_says(sandbox, service, text: str, customer: str = "wmCustomer0001"):
    """A customer writes; WeCom notifies us with a kf_msg_or_event callback."""
    msgid = sandbox.add_customer_text(customer, text)
    resp = service.post(kf_notice(sandbox.callback_token()))
    assert resp.status_code == 200 and resp.text == ""
    return msgid


def test_url_verification_returns_plaintext_exactly(service):
    params = service.crypto.echo("1234567890123456789")
    resp = requests.get(service.url + service.path, params=params, timeout=5)
    assert resp.status_code == 200
    assert resp.content == b"1234567890123456789"
    assert resp.headers["Content-Type"].startswith("text/plain")


def test_url_verification_bad_signature_is_403(service):
    params = service.crypto.echo("hello") | {"msg_signature": "0" * 40}
    assert requests.get(service.url + service.path, params=params, timeout=5).status_code == 403


def test_one_text_in_one_reply_out(sandbox, service, runtime):
    customer_says(sandbox, service, "你好，请问什么时候发货")
    drain(runtime.worker())
    out = sandbox.delivered()
    assert len(out) == 1
    assert out[0]["touser"] == "wmCustomer0001" and out[0]["msgtype"] == "text"
    assert out[0]["text"]["content"]
    assert Store(runtime.r).cursor(sandbox.open_kfid) != ""


def test_same_callback_four_times_one_reply(sandbox, service, runtime):
    sandbox.add_customer_text("wmCustomer0001", "在吗")
    token, created = sandbox.callback_token(), int(time.time())
    for _ in range(4):
        query, body = service.crypto.encrypt(kf_notice(token, create_time=created))
        resp = service.post_raw(query, body.encode())
        assert resp.status_code == 200
    assert runtime.inbox.depth()["length"] == 1
    drain(runtime.worker())
    assert len(sandbox.delivered()) == 1
    assert len(sandbox.requests("kf/sync_msg")) == 1


def test_two_callbacks_racing_for_one_kf_account(sandbox, service, runtime):
    for i in range(40):
        sandbox.add_customer_text(f"wmRace{i:04d}", f"第{i}条消息")
    service.post(kf_notice(sandbox.callback_token(), create_time=int(time.time())))
    service.post(kf_notice(sandbox.callback_token(), create_time=int(time.time()) + 1))
    workers = [runtime.worker(f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drain(workers[0])
    delivered = sandbox.delivered()
    assert sorted(d["touser"] for d in delivered) == sorted(f"wmRace{i:04d}" for i in range(40))
    assert len({d["msgid"] for d in delivered}) == 40


def test_1500_messages_over_pages_all_answered_cursor_saved(sandbox, service, runtime):
    for i in range(1500):
        sandbox.add_customer_text(f"wmBulk{i:05d}", "请问发票怎么开")
    service.post(kf_notice(sandbox.callback_token()))
    drain(runtime.worker())
    assert len(sandbox.requests("kf/sync_msg")) >= 2
    assert len({d["touser"] for d in sandbox.delivered()}) == 1500
    assert len(sandbox.delivered()) == 1500
    cursor = Store(runtime.r).cursor(sandbox.open_kfid)
    # a later callback pulls nothing again
    service.post(kf_notice(sandbox.callback_token(), create_time=int(time.time()) + 5))
    drain(runtime.worker())
    assert len(sandbox.delivered()) == 1500
    assert sandbox.requests("kf/sync_msg")[-1]["json"]["cursor"] == cursor


def test_send_failing_twice_then_succeeding_is_one_message(sandbox, service, runtime):
    sandbox.queue("kf/send_msg", {"errcode": -1, "errmsg": "system busy"}, times=1)
    sandbox.queue("kf/send_msg", {"errcode": 0, "_http_status": 502}, times=1)
    customer_says(sandbox, service, "这个怎么用")
    drain(runtime.worker())
    assert len(sandbox.delivered()) == 1
    assert len(sandbox.requests("kf/send_msg")) == 3


def test_access_token_expiry_mid_run(sandbox, service, runtime):
    worker = runtime.worker()
    customer_says(sandbox, service, "第一条", "wmTok1")
    drain(worker)
    sandbox.expire_tokens()
    customer_says(sandbox, service, "第二条", "wmTok2")
    drain(worker)
    assert [d["touser"] for d in sandbox.delivered()] == ["wmTok1", "wmTok2"]
    assert len(sandbox.requests("gettoken")) == 2


def test_staff_reply_is_recorded_not_answered(sandbox, service, runtime):
    sandbox.add_staff_text("wmCustomer0001", "li.consultant", "您好，我是顾问小李")
    service.post(kf_notice(sandbox.callback_token()))
    drain(runtime.worker())
    assert sandbox.delivered() == []
    kinds = [e["kind"] for e in Store(runtime.r).events()]
    assert "staff_reply" in kinds


def test_entry_that_keeps_failing_goes_to_dead_letters_and_replays(sandbox, service, runtime):
    from bot.queue.inbox import Inbox

    sandbox.queue("kf/sync_msg", {"errcode": 40058, "errmsg": "invalid parameter"}, times=100)
    customer_says(sandbox, service, "你好")
    worker = runtime.worker()
    for _ in range(40):
        worker.run_once()
        if Inbox(runtime.r).depth()["dead"]:
            break
        time.sleep(0.1)
    inbox = Inbox(runtime.r)
    letters = inbox.dead_letters()
    assert len(letters) == 1 and "40058" in letters[0]["error"]
    sandbox.reset()
    sandbox.add_customer_text("wmCustomer0001", "你好")
    assert inbox.replay() == 1
    drain(worker)
    assert len(sandbox.delivered()) == 1
    assert inbox.depth()["dead"] == 0


def test_wrong_secret_keeps_messages_until_fixed(sandbox, service, runtime, r):
    import dataclasses

    from bot.queue.inbox import Inbox

    customer_says(sandbox, service, "你好")
    broken = dataclasses.replace(runtime, settings=dataclasses.replace(runtime.settings, secret="wrong"))
    worker = broken.worker()
    for _ in range(8):
        worker.run_once()
        time.sleep(0.6)  # past claim_idle_seconds: the entry is retried
    assert Inbox(r).depth()["dead"] == 0 and sandbox.delivered() == []
    drain(runtime.worker())
    assert len(sandbox.delivered()) == 1


def test_first_pull_records_old_history_but_answers_only_recent_messages(sandbox, service, runtime):
    sandbox.add_customer_text("wmOld", "两小时前的消息")
    sandbox.advance(2 * 3600)  # two hours later the bot is deployed and pulls for the first time
    runtime.clock = lambda: time.time() + 2 * 3600
    sandbox.add_customer_text("wmNew", "刚发的消息")
    service.post(kf_notice(sandbox.callback_token()))
    drain(runtime.worker())
    assert [d["touser"] for d in sandbox.delivered()] == ["wmNew"]
    assert "backlog_skipped" in [e["kind"] for e in Store(runtime.r).events()]
