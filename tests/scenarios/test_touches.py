"""TouchRunner and the SOP HTTP API against the sandbox and a real Redis."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from flask import Flask

from bot.act import steps
from bot.act.touches import TouchRunner
from bot.config import SANDBOX_OPEN_KFID
from bot.records.customers import Customers
from bot.records.store import Store
from bot.web.api import make_sop_api
from sop import journeys
from sop.engine import HIST
from sop.plan import Rules
from tests.support import engine_for, sop_due

OWNER = "li.consultant"
FALLBACK = "wang.consultant"


@pytest.fixture()
def engine(r, settings):
    found, errors = journeys.load_dir()
    assert not errors
    return engine_for(r, found, Rules(), settings.timezone)


def touch_runner(runtime, engine, owner_of, default_staff) -> TouchRunner:
    """A TouchRunner on the runtime's parts, with its own engine, owners and default staff member."""
    ex = runtime.parts().executor
    return TouchRunner(ex.wecom, ex.store, ex.customers, ex.sender, ex.issue_coupon, runtime.coupons, engine,
                       owner_of, default_staff, runtime.settings.timezone)


@pytest.fixture()
def runner(runtime, engine):
    owners = {"c-kf": OWNER, "c-closed": OWNER, "c-mass": OWNER, "c-41048": OWNER, "c-coupon": OWNER}
    return touch_runner(runtime, engine, owners.get, FALLBACK)


def entry(customer: str, content: dict, channel: str = "kf", decision: str = "send",
          reason: str = "kf_window_open", tid: str | None = None) -> dict:
    """A "touch" entry shaped like Engine.tick emits it."""
    now = datetime.now().astimezone()
    return {"touch_id": tid or f"t-{customer}", "journey": "purchase_guide", "step": "day3_guide",
            "customer": customer, "kind": "education", "content": content, "priority": 60,
            "due": now.isoformat(), "channel": channel, "decision": decision, "reason": reason,
            "at": now.isoformat()}


def wrote(sandbox, r, customer: str, ago: float = 60.0) -> None:
    """The customer wrote to the kf account `ago` seconds ago (our record and the sandbox's session)."""
    sandbox.add_customer_text(customer, "在吗")
    Customers(r).saw_message(customer, time.time() - ago, open_kfid=SANDBOX_OPEN_KFID)


def test_kf_touch_sends_once_even_when_replayed(runner, sandbox, r):
    wrote(sandbox, r, "c-kf")
    data = entry("c-kf", {"text": "宝贝收到了吗？给您准备了一份使用指南～"})
    assert runner.run(data, "touch:t-c-kf") == "sent:kf"
    assert runner.run(data, "touch:t-c-kf") == "duplicate"
    (msg,) = sandbox.delivered()
    assert (msg["touser"], msg["msgtype"], msg["text"]["content"]) == ("c-kf", "text", data["content"]["text"])
    counters = Store(r).counters()
    assert counters["sop_sent"] == 1 and "sop_failed" not in counters


def test_kf_window_closed_falls_back_to_staff_reminder(runner, sandbox, r, engine):
    wrote(sandbox, r, "c-closed", ago=49 * 3600)
    today = datetime.now(engine.tz).date().isoformat()
    r.hset(HIST % "c-closed", f"d:{today}", 1)  # what tick counted when it emitted the send
    data = entry("c-closed", {"text": "您好，这是您的使用指南"})
    assert runner.run(data, "touch:t-c-closed") == "reminded:kf_refused:window"
    assert sandbox.delivered() == []
    (msg,) = sandbox.staff_messages()
    assert msg["touser"] == OWNER and msg["msgtype"] == "text"
    body = msg["text"]["content"]
    assert "c-closed" in body and "您好，这是您的使用指南" in body and "day3_guide" in body
    assert len(body.encode()) <= 2048
    assert r.hget(HIST % "c-closed", f"d:{today}") == "0"  # the slot was given back
    counters = Store(r).counters()
    assert (counters["sop_failed"], counters["sop_reminded"]) == (1, 1)
    assert runner.run(data, "touch:t-c-closed") == "duplicate"
    assert len(sandbox.staff_messages()) == 1


def test_mass_task_body(runner, sandbox):
    content = {"text": "会员日专享，点开小程序领券～",
               "miniprogram": {"appid": "wx1234", "title": "会员日", "pagepath": "pages/member/index",
                               "thumb_media_id": "MEDIA1"}}
    assert runner.run(entry("c-mass", content, "mass_task", reason="kf_window_closed"), "touch:m1") == "sent:mass_task"
    (req,) = sandbox.requests("externalcontact/add_msg_template")
    assert req["json"] == {
        "chat_type": "single", "external_userid": ["c-mass"], "sender": OWNER,
        "text": {"content": "会员日专享，点开小程序领券～"},
        "attachments": [{"msgtype": "miniprogram", "miniprogram": {
            "title": "会员日", "appid": "wx1234", "page": "pages/member/index", "pic_media_id": "MEDIA1"}}]}
    assert sandbox.staff_messages() == []


def test_mass_task_41048_and_fail_list_remind_staff(runner, sandbox, r, engine):
    local = datetime.now(engine.tz)
    day, month = local.date().isoformat(), f"{local.year:04d}-{local.month:02d}"
    r.hset(HIST % "c-41048", mapping={f"d:{day}": 1, f"m:{month}": 1})
    sandbox.queue("externalcontact/add_msg_template", {"errcode": 41048, "errmsg": "no customer"})
    data = entry("c-41048", {"text": "您的优惠券明天到期"}, "mass_task", reason="kf_window_closed")
    assert runner.run(data, "touch:m2") == "reminded:mass_task_failed:41048"
    assert r.hmget(HIST % "c-41048", f"d:{day}", f"m:{month}") == ["0", "0"]
    sandbox.queue("externalcontact/add_msg_template", {"errcode": 0, "errmsg": "ok", "fail_list": ["c-other"],
                                                       "msgid": "m"})
    unowned = entry("c-other", {"text": "您好"}, "mass_task", reason="kf_window_closed")
    assert runner.run(unowned, "touch:m3") == "reminded:no_owner"  # no owner: no task, the default staff hears
    staff = sandbox.staff_messages()
    assert [m["touser"] for m in staff] == [OWNER, FALLBACK]
    assert "您的优惠券明天到期" in staff[0]["text"]["content"]


def test_staff_step_reminds_owner(runner, sandbox):
    data = entry("c-kf", {"text": "用了几天感觉怎么样？"}, "staff", decision="remind", reason="staff_step")
    assert runner.run(data, "touch:s1") == "reminded:staff_step"
    (msg,) = sandbox.staff_messages()
    assert msg["touser"] == OWNER and "用了几天感觉怎么样？" in msg["text"]["content"]


def test_coupon_touch_issues_exactly_one_coupon(runner, sandbox, r, runtime):
    wrote(sandbox, r, "c-coupon")
    data = entry("c-coupon", {"text": "🎂 生日快乐！", "coupon": {"campaign": "birthday-80"}}, tid="t-bday")
    assert runner.run(data, "touch:t-bday") == "sent:kf"
    runner.run(data, "touch:t-bday")
    assert runner.run(data, "touch:t-bday-again") == "sent:kf"  # a re-emitted entry: same touch_id, same coupon
    book = runtime.coupons()
    (coupon,) = book.coupons_of("c-coupon")
    texts = [m["text"]["content"] for m in sandbox.delivered()]
    assert texts[0] == "🎂 生日快乐！" and coupon.code in texts[1]


# --- HTTP API --------------------------------------------------------------------------------


@pytest.fixture()
def client(settings, engine, r):
    import dataclasses

    app = Flask("t")
    app.register_blueprint(make_sop_api(dataclasses.replace(settings, api_token="s3cret"), lambda: engine,
                                        Customers(r)))
    return app.test_client()


AUTH = {"Authorization": "Bearer s3cret"}


def test_purchase_is_idempotent_per_order_and_enrolls_day3_guide(client, r, engine):
    Customers(r).saw_message("c-buy", time.time(), open_kfid=SANDBOX_OPEN_KFID)
    body = {"customer": "c-buy", "order_id": "O-1001", "amount": 299, "at": "2024-12-02T15:00:00+08:00"}
    assert client.post("/api/purchases", json=body).status_code == 401
    first = client.post("/api/purchases", json=body, headers=AUTH)
    assert first.status_code == 200 and first.json["status"] == "recorded" and first.json["enrolled"] == 1
    again = client.post("/api/purchases", json=body, headers=AUTH)
    assert again.json["status"] == "duplicate"
    assert engine.pending() == {"due": 1, "inflight": 0}
    ((member, score),) = sop_due(r).items()
    assert member.startswith("purchase_guide|day3_guide|c-buy|")
    assert datetime.fromtimestamp(score, engine.tz).isoformat() == "2024-12-05T20:00:00+08:00"
    assert engine.history("c-buy").purchased_at is not None
    bad = client.post("/api/purchases", json={"customer": "c-buy"}, headers=AUTH)
    assert bad.status_code == 400
    assert client.post("/api/purchases", json={**body, "customer": "nobody"}, headers=AUTH).status_code == 404


def test_api_off_without_token(settings, engine, r):
    app = Flask("t")
    app.register_blueprint(make_sop_api(settings, lambda: engine, Customers(r)))
    res = app.test_client().post("/api/purchases", json={}, headers=AUTH)
    assert res.status_code == 403


def test_birthday_endpoint(client, r):
    res = client.post("/api/customers/c-b/birthday", json={"date": "1990-03-08"}, headers=AUTH)
    assert res.status_code == 200 and res.json["birthday"] == "03-08"
    assert r.sismember("wecom:sop:bday:03-08", "c-b")
    assert client.post("/api/customers/c-b/birthday", json={"date": "13-40"}, headers=AUTH).status_code == 400
    client.post("/api/customers/c-b/birthday", json={"date": "02-29"}, headers=AUTH)
    assert not r.sismember("wecom:sop:bday:03-08", "c-b") and r.sismember("wecom:sop:bday:02-29", "c-b")


def test_unowned_staff_touch_without_default_is_failed(runtime, engine, sandbox):
    runner = touch_runner(runtime, engine, lambda c: None, None)
    data = entry("c-x", {"text": "hi"}, "staff", decision="remind", reason="staff_step")
    assert runner.run(data, "touch:x") == "failed:no_staff:staff_step"
    assert sandbox.staff_messages() == [] and Store(runtime.r).counters()["sop_failed"] == 1


def test_kf_touch_whose_answer_is_lost_is_sent_once_and_counted_once(runner, sandbox, r):
    wrote(sandbox, r, "c-kf")
    sandbox.fault("kf/send_msg", "lost")  # delivered, but WeCom's answer is errcode -1
    data = entry("c-kf", {"text": "宝贝收到了吗？"})
    with steps.entry(final=False):
        assert runner.run(data, "touch:t-lost") == "sent:kf"
    assert len(sandbox.delivered()) == 1
    assert Store(r).counters()["sop_sent"] == 1


def test_kf_touch_unreachable_waits_for_the_retry_then_is_sent_once(runner, sandbox, r):
    wrote(sandbox, r, "c-kf")
    sandbox.queue("kf/send_msg", {"_http_status": 502}, times=4)  # one attempt's tries, none performed
    data = entry("c-kf", {"text": "宝贝收到了吗？"})
    with pytest.raises(steps.StepsPending), steps.entry(final=False):
        assert runner.run(data, "touch:t-502") == "pending"
    assert sandbox.delivered() == [] and "sop_failed" not in Store(r).counters()
    with steps.entry(final=False):
        assert runner.run(data, "touch:t-502") == "sent:kf"
    assert len(sandbox.delivered()) == 1 and Store(r).counters()["sop_sent"] == 1
