"""Unknown outcomes are a state, not an error: a send WeCom performed but whose answer was lost, a timeout after
delivery, a worker killed during the call, a done mark Redis lost. Each step of a handoff (card, text, transfer,
alerts) happens once, none is skipped, nothing is dead-lettered."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections import Counter

import pytest

from bot.act import steps
from bot.content import Content
from bot.queue.inbox import Entry, Inbox
from bot.records.handoffs import Handoffs
from bot.records.store import Store
from bot.runtime import Runtime
from tests.scenarios.test_durability import start_worker, write_config
from tests.scenarios.test_handoff_e2e import TZ, last_weekday_at
from tests.support import drain, make_settings

CUSTOMER = "wmUnknown0001"


@pytest.fixture()
def desk(sandbox, settings, r, monkeypatch):
    """A runtime with a 1 s WeCom timeout on Monday 10:00 (小李 and 赵经理 on duty)."""
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    monkeypatch.setenv("WECOM_ROBOT_KEY", "robot-key-123")
    fast = dataclasses.replace(settings, http_timeout_seconds=1.0)
    rt = Runtime(fast, r, content=Content(fast))
    at = last_weekday_at(0, 10)
    rt.clock = at.timestamp
    return rt


def ask_for_a_person(sandbox, runtime, text: str = "这个沙发多少钱") -> None:
    """The customer writes; the webhook's job (queue the pull) is done directly; one worker drains."""
    sandbox.add_customer_text(CUSTOMER, text)
    runtime.worker().parts.kfsync.pull(sandbox.open_kfid, sandbox.callback_token())
    drain(runtime.worker())


def assert_each_step_once(sandbox, runtime, r) -> None:
    """Card and text to the customer once each, transferred to 小李, one alert card, no dead letters."""
    out = [d["msgtype"] for d in sandbox.delivered() if d["touser"] == CUSTOMER]
    assert out == ["text", "business_card"]
    assert sandbox.service_state(CUSTOMER) == 3
    alerts = Counter(m["touser"] for m in sandbox.staff_messages() if m.get("msgtype") == "template_card")
    assert alerts == Counter({"li.consultant": 1})
    assert Inbox(r).dead_letters() == []
    h = Handoffs(r, TZ).open_for(CUSTOMER)
    assert h is not None and h.consultant == "li.consultant" and h.task_id


def events(r, kind: str) -> list[dict]:
    return [e for e in Store(r).events(500) if e["kind"] == kind]


def test_kf_send_performed_but_answer_lost_counts_as_delivered(sandbox, desk, r):
    sandbox.fault("kf/send_msg", "lost")  # the card reaches the customer; errcode -1 comes back
    ask_for_a_person(sandbox, desk)
    assert_each_step_once(sandbox, desk, r)
    sent = events(r, "reply_sent")
    assert [e.get("unconfirmed") for e in sent].count(True) == 1
    assert not events(r, "step_failed")


def test_kf_send_timeout_after_delivery_counts_as_delivered(sandbox, desk, r):
    sandbox.fault("kf/send_msg", "slow", seconds=2.5)  # done at once, answered after the 1 s timeout
    ask_for_a_person(sandbox, desk)
    assert_each_step_once(sandbox, desk, r)
    assert any(e.get("unconfirmed") for e in events(r, "reply_sent"))


def test_staff_alert_answer_lost_is_not_a_second_card(sandbox, desk, r):
    sandbox.fault("message/send", "lost")
    ask_for_a_person(sandbox, desk)
    assert_each_step_once(sandbox, desk, r)
    sent = sandbox.requests("message/send")
    assert len(sent) == 2 and sent[0]["json"] == sent[1]["json"]  # retried with the same body
    assert sent[0]["json"]["enable_duplicate_check"] == 1


def test_staff_alert_timeout_after_delivery_is_not_a_second_card(sandbox, desk, r):
    sandbox.fault("message/send", "slow", seconds=2.5)
    ask_for_a_person(sandbox, desk)
    assert_each_step_once(sandbox, desk, r)


def test_done_marks_lost_then_entry_run_again_sends_nothing_twice(sandbox, desk, r):
    ask_for_a_person(sandbox, desk)
    assert_each_step_once(sandbox, desk, r)
    done = [k for k in r.scan_iter("wecom:done:*")]
    assert done
    r.delete(*done)  # Redis lost the done marks (a failover, a restart without AOF)
    pulled = sandbox.requests("kf/sync_msg")
    assert pulled
    message = next(m for m in sandbox._messages[sandbox.open_kfid] if m.get("origin") == 3)
    worker = desk.worker()
    with steps.entry(final=False):  # the same kf message performed again, as a retried entry would be
        worker.dispatch(Entry("again", "kf_msg", json.dumps({**message, "open_kfid": sandbox.open_kfid})))
    assert_each_step_once(sandbox, desk, r)
    assert any(e.get("unconfirmed") for e in events(r, "reply_sent"))


def test_a_step_refused_for_good_is_recorded_and_the_others_still_happen(sandbox, desk, r):
    sandbox.queue("kf/send_msg", {"errcode": 40003, "errmsg": "invalid userid"})  # the text only
    ask_for_a_person(sandbox, desk)
    assert [d["msgtype"] for d in sandbox.delivered() if d["touser"] == CUSTOMER] == ["business_card"]
    assert sandbox.service_state(CUSTOMER) == 3
    assert [m["touser"] for m in sandbox.staff_messages() if m.get("msgtype") == "template_card"] == [
        "li.consultant"]
    failed = events(r, "step_failed")
    assert len(failed) == 1 and failed[0]["errcode"] == 40003 and ":text:" in failed[0]["step"]
    assert Inbox(r).dead_letters() == []


def test_a_step_unreachable_on_every_attempt_fails_on_the_last_and_the_entry_completes(sandbox, desk, r):
    # Every kf/send_msg call answers HTTP 502 without being performed, for every attempt of the entry.
    attempts = desk.settings.worker.max_attempts
    sandbox.queue("kf/send_msg", {"_http_status": 502}, times=4 * attempts * 2)
    ask_for_a_person(sandbox, desk)
    assert sandbox.delivered() == []
    assert sandbox.service_state(CUSTOMER) == 3  # the transfer and the alert did not wait for the sends
    assert [m["touser"] for m in sandbox.staff_messages() if m.get("msgtype") == "template_card"] == [
        "li.consultant"]
    failed = [e["step"] for e in events(r, "step_failed")]
    assert len(failed) == 2 and any(":card:" in f for f in failed) and any(":text:" in f for f in failed)
    assert Inbox(r).dead_letters() == []


def test_worker_killed_during_the_send_then_taken_over_sends_each_step_once(sandbox, redis_url, r, tmp_path):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    _, env = make_settings(sandbox.url, redis_url)
    config = write_config(tmp_path)
    sandbox.fault("kf/send_msg", "slow", seconds=30)  # the card is delivered; the answer never comes in time
    sandbox.add_customer_text(CUSTOMER, "我要投诉，质量太差了")
    first = start_worker(env, config)
    try:
        Runtime(make_settings(sandbox.url, redis_url)[0], r).worker().parts.kfsync.pull(
            sandbox.open_kfid, sandbox.callback_token())
        assert sandbox.wait_for(lambda: len(sandbox.delivered()) == 1, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_worker(env, config)
    inbox = Inbox(r)
    try:  # the real clock decides who is on duty, so wait for the entry to be done rather than for a card
        assert sandbox.wait_for(lambda: any(e["kind"] == "handoff_opened" for e in Store(r).events(50))
                                and inbox.depth()["pending"] == 0 and inbox.depth()["lag"] == 0, timeout=60)
        time.sleep(1.5)  # anything repeated would show up by now
    finally:
        second.terminate()
        second.wait(timeout=10)
    out = Counter(d["msgtype"] for d in sandbox.delivered() if d["touser"] == CUSTOMER)
    assert out["text"] == 1 and set(out.values()) == {1}  # the consultant card (if any) and the text, once each
    assert sandbox.service_state(CUSTOMER) in (2, 3)  # transferred to a person or the kf queue
    cards = Counter(m["touser"] for m in sandbox.staff_messages() if m.get("msgtype") == "template_card")
    assert set(cards.values()) <= {1}
    assert any(e.get("unconfirmed") for e in events(r, "reply_sent"))  # the killed worker's send counted
    assert Inbox(r).dead_letters() == []
