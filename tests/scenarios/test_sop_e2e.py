"""SOP journeys end to end: triggers from real callbacks, scheduler ticks, touches sent by the worker."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from datetime import time as local_time

from bot.records.store import Store
from tests.support import cli, drain, kf_notice


def post_and_drain(sandbox, service, runtime) -> None:
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())


def test_first_kf_contact_gets_the_welcome_with_the_event_code(sandbox, service, runtime):
    sandbox.add_event({"event_type": "enter_session", "external_userid": "wmNew1", "scene": "qr",
                       "welcome_code": "WELCOME_CODE_1"})
    post_and_drain(sandbox, service, runtime)
    sent = [d for d in sandbox.delivered() if d.get("code") == "WELCOME_CODE_1"]
    assert len(sent) == 1 and "欢迎" in sent[0]["text"]["content"]
    engine = runtime.engine()
    assert engine.pending()  # the rest of the new-customer week is scheduled
    # the same event pulled again (lost cursor) sends nothing more
    runtime.r.delete(f"wecom:kf:{{{sandbox.open_kfid}}}:cursor")
    post_and_drain(sandbox, service, runtime)
    assert len([d for d in sandbox.delivered() if d.get("code")]) == 1


def test_staff_contact_added_gets_send_welcome_msg(sandbox, service, runtime):
    xml = ("<xml><ToUserName><![CDATA[wwsandbox0000000001]]></ToUserName><FromUserName><![CDATA[sys]]>"
           "</FromUserName><CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
           "<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]>"
           "</ChangeType><UserID><![CDATA[li.consultant]]></UserID><ExternalUserID><![CDATA[wmStaffAdded]]>"
           "</ExternalUserID><State><![CDATA[store_sh01]]></State><WelcomeCode><![CDATA[WC-123]]></WelcomeCode></xml>")
    t = int(time.time())
    for _ in range(2):  # WeCom retries: one welcome
        assert service.post(xml.format(t=t)).status_code == 200
    drain(runtime.worker())
    calls = sandbox.requests("externalcontact/send_welcome_msg")
    assert len(calls) == 1 and calls[0]["json"]["welcome_code"] == "WC-123"
    assert runtime.customers.owner("wmStaffAdded") == "li.consultant"


def test_due_touch_goes_out_through_the_worker_once(sandbox, service, runtime):
    sandbox.add_customer_text("wmJourney", "你好")
    post_and_drain(sandbox, service, runtime)  # first contact: the welcome answers it, the week is enrolled
    mine = [d for d in sandbox.delivered() if d["touser"] == "wmJourney"]
    assert len(mine) == 1 and "欢迎" in mine[0]["text"]["content"]
    scheduler = runtime.scheduler(threading.Event())
    tz = runtime.settings.timezone
    day1 = datetime.combine(datetime.now(tz).date() + timedelta(days=1), local_time(20, 30), tzinfo=tz)
    emitted = scheduler.tick(day1.timestamp())  # the day-1 question is due
    drain(runtime.worker())
    scheduler.tick(day1.timestamp() + 1)
    drain(runtime.worker())
    mine = [d for d in sandbox.delivered() if d["touser"] == "wmJourney"]
    assert emitted >= 1 and len(mine) == 2
    assert "回复数字" in mine[-1]["text"]["content"]
    kinds = [e["kind"] for e in Store(runtime.r).events(100)]
    assert "touch" in kinds


def test_unsubscribed_customer_gets_no_touches(sandbox, service, runtime):
    sandbox.add_customer_text("wmTD", "你好")
    post_and_drain(sandbox, service, runtime)
    sandbox.add_customer_text("wmTD", "TD")
    post_and_drain(sandbox, service, runtime)
    before = len([d for d in sandbox.delivered() if d["touser"] == "wmTD"])
    scheduler = runtime.scheduler(threading.Event())
    for days in range(0, 8):
        scheduler.tick(time.time() + days * 86400 + 1)
        drain(runtime.worker())
    assert len([d for d in sandbox.delivered() if d["touser"] == "wmTD"]) == before


def test_coupon_issue_schedules_the_expiry_reminder(sandbox, service, runtime):
    sandbox.add_customer_text("wmCoupon", "有优惠券吗")
    post_and_drain(sandbox, service, runtime)
    from tests.support import sop_due

    journeys = {member.split("|")[0] for member in sop_due(runtime.r) if "|wmCoupon|" in member}
    assert "coupon_expiry" in journeys


def test_cli_sop_plan_json_contract():
    out = cli("sop", "plan", "--customer", "wmNobody", "--start", "2026-12-07T09:00:00+08:00", "--days", "7",
              "--json", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert rows
    assert all(list(row) == ["journey", "step", "at", "due", "channel", "decision", "reason"] for row in rows)
    assert {row["decision"] for row in rows} <= {"send", "defer", "skip", "remind"}
    sent_per_day: dict[str, int] = {}
    for row in rows:
        if row["decision"] == "send" and row["channel"] in ("kf", "mass_task"):
            day = datetime.fromisoformat(row["at"]).date().isoformat()
            sent_per_day[day] = sent_per_day.get(day, 0) + 1
    assert max(sent_per_day.values(), default=0) <= 3


def test_cli_sop_validate_reports_file_and_line(tmp_path):
    assert cli("sop", "validate").returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntitle: t\ntrigger: nonsense\nsteps: []\n")
    out = cli("sop", "validate", str(tmp_path))
    assert out.returncode == 1 and f"{bad}:3" in (out.stdout + out.stderr)


def test_schedulers_say_which_is_active_and_when_one_takes_over(runtime, caplog):
    import logging
    import os
    import socket

    first, second = runtime.scheduler(threading.Event()), runtime.scheduler(threading.Event())
    with caplog.at_level(logging.INFO, logger="bot.queue.scheduler"):
        assert first.leader() and not second.leader()
        runtime.r.delete("wecom:lease:scheduler")  # the active one died and its lease ran out
        assert second.leader()
    lines = [rec.getMessage() for rec in caplog.records]
    me = f"{socket.gethostname()}-{os.getpid()}-"
    assert any(line.startswith(f"scheduler {me}") and line.endswith("is active") for line in lines)
    assert any("stands by" in line and f"{first.me} holds the lease" in line for line in lines)
    assert any(line == f"scheduler {second.me} is active (took over)" for line in lines)


def test_each_acquisition_bumps_the_epoch_and_a_tick_that_lost_the_lease_stops_before_its_next_step(runtime):
    import pytest

    from bot.queue.scheduler import LEASE, TAKEOVERS, TICKS, LeaseLost

    first, second = runtime.scheduler(threading.Event()), runtime.scheduler(threading.Event())
    one = first.leader()
    assert one > 0 and second.leader() == 0 and first.leader() == one  # renewing keeps the epoch
    first.tick()
    assert runtime.r.lindex(TICKS, 0).split()[:2] == [str(one), first.me]
    assert runtime.r.lindex(TICKS, 0).endswith(" held")
    later: list[str] = []

    def stolen(now: float) -> int:
        """Meanwhile the lease ran out and the other scheduler took it."""
        runtime.r.delete(LEASE)
        assert second.leader() == one + 1
        return 0

    first.safety_sync = stolen
    first.handoff_clock = lambda moment: later.append("handoff") or 0
    assert first.tick() == 0
    assert later == []  # the fence stopped the tick before its next writes
    assert runtime.r.lindex(TICKS, 0).split()[:2] == [str(one), first.me]
    assert runtime.r.lindex(TICKS, 0).endswith(" lost")
    with pytest.raises(LeaseLost):
        first.fenced(one)
    second.fenced(one + 1)
    takeovers = [line.split()[:2] for line in runtime.r.lrange(TAKEOVERS, 0, -1)]
    assert takeovers[:2] == [[str(one + 1), second.me], [str(one), first.me]]
