"""Human handoff end to end: webhook -> worker -> desk -> sandbox WeCom, with an injectable clock."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.queue.inbox import Inbox
from bot.records import handoff_stats
from bot.records.handoffs import Handoffs
from bot.records.store import Store
from tests.support import drain, kf_notice

TZ = ZoneInfo("Asia/Shanghai")
CUSTOMER = "wmHandoff0001"


def last_weekday_at(weekday: int, hour: int, minute: int = 0) -> datetime:
    """The most recent local `weekday` (0 = Monday) at hour:minute, not after now."""
    now = datetime.now(TZ)
    day = now - timedelta(days=(now.weekday() - weekday) % 7)
    moment = day.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return moment if moment <= now else moment - timedelta(days=7)


class Clock:
    """A settable clock for the runtime (the sandbox keeps real time)."""

    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()

    def advance(self, **kw) -> datetime:
        self.at += timedelta(**kw)
        return self.at


@pytest.fixture()
def clock(runtime):
    c = Clock(last_weekday_at(0, 10))  # Monday 10:00: 小李 and 赵经理 on duty, 小王 not
    runtime.clock = c
    return c


@pytest.fixture()
def desk_env(sandbox, clock, monkeypatch):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    monkeypatch.setenv("WECOM_ROBOT_KEY", "robot-key-123")
    return sandbox


def say(sandbox, service, runtime, text: str, customer: str = CUSTOMER) -> None:
    sandbox.add_customer_text(customer, text)
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())


def to_customer(sandbox, customer: str = CUSTOMER) -> list[dict]:
    return [d for d in sandbox.delivered() if d["touser"] == customer]


def cards_to(sandbox, userid: str) -> list[dict]:
    return [m for m in sandbox.staff_messages() if m.get("touser") == userid and m.get("msgtype") == "template_card"]


def card_click(userid: str, key: str, task_id: str, code: str = "RESPCODE1") -> str:
    return (f"<xml><ToUserName><![CDATA[wwsandbox0000000001]]></ToUserName><FromUserName><![CDATA[{userid}]]>"
            f"</FromUserName><CreateTime>{time.time_ns()}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey>"
            f"<TaskId><![CDATA[{task_id}]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>"
            f"<ResponseCode><![CDATA[{code}]]></ResponseCode><AgentID>1000002</AgentID></xml>")


def open_handoff(runtime):
    return Handoffs(runtime.r, TZ).open_for(CUSTOMER)


def test_price_question_gets_card_transfer_and_alert(desk_env, service, runtime):
    sandbox = desk_env
    say(sandbox, service, runtime, "这个沙发多少钱")
    out = to_customer(sandbox)
    assert [d["msgtype"] for d in out] == ["text", "business_card"]  # the text introduces the card
    assert "小李" in out[0]["text"]["content"] and "5分钟" in out[0]["text"]["content"]
    assert out[1]["business_card"]["userid"] == "li.consultant"
    assert sandbox.service_state(CUSTOMER) == 3
    card = cards_to(sandbox, "li.consultant")[0]["template_card"]
    assert card["card_type"] == "button_interaction"
    assert "这个沙发多少钱" in card["quote_area"]["quote_text"]
    assert any("多少钱" in row["value"] for row in card["horizontal_content_list"])
    h = open_handoff(runtime)
    assert h.intent == "price" and h.consultant == "li.consultant" and h.task_id == card["task_id"]


def test_complaint_also_alerts_the_supervisor(desk_env, service, runtime):
    say(desk_env, service, runtime, "质量太差了，我要投诉")
    assert cards_to(desk_env, "li.consultant") and cards_to(desk_env, "zhao.supervisor")
    assert "【优先】" in cards_to(desk_env, "li.consultant")[0]["template_card"]["main_title"]["title"]


def test_claim_by_card_click_then_second_claimer_is_told(desk_env, service, runtime):
    say(desk_env, service, runtime, "转人工")
    h = open_handoff(runtime)
    assert service.post(card_click("li.consultant", f"claim:{h.id}", h.task_id, "CODE-LI")).status_code == 200
    drain(runtime.worker())
    assert open_handoff(runtime).claimed_by == "li.consultant"
    updates = desk_env.requests("message/update_template_card")
    assert updates[-1]["json"]["response_code"] == "CODE-LI"
    assert updates[-1]["json"]["button"]["replace_name"] == "已由小李接待"
    service.post(card_click("zhao.supervisor", f"claim:{h.id}", h.task_id, "CODE-ZHAO"))
    drain(runtime.worker())
    told = [m for m in desk_env.staff_messages() if m.get("touser") == "zhao.supervisor" and m["msgtype"] == "text"]
    assert told and "小李" in told[-1]["text"]["content"]
    assert open_handoff(runtime).claimed_by == "li.consultant"


def test_claim_for_unknown_handoff_gets_a_clear_answer(desk_env, service, runtime):
    service.post(card_click("li.consultant", "claim:nosuchhandoff", "task1", "CODE-X"))
    drain(runtime.worker())
    assert desk_env.requests("message/update_template_card")[-1]["json"]["button"]["replace_name"] == "无效转接"


def test_bot_silent_while_human_holds_then_back_after_session_end(desk_env, service, runtime):
    say(desk_env, service, runtime, "多少钱")
    before = len(to_customer(desk_env))
    desk_env.add_staff_text(CUSTOMER, "li.consultant", "您好，我是小李")
    say(desk_env, service, runtime, "好的，那有优惠吗")
    assert len(to_customer(desk_env)) == before  # the human answers, not the bot
    assert open_handoff(runtime).first_reply_by == "li.consultant"
    desk_env.add_event({"event_type": "session_status_change", "external_userid": CUSTOMER, "change_type": 3})
    say(desk_env, service, runtime, "你好，请问什么时候发货")
    assert open_handoff(runtime) is None
    assert len(to_customer(desk_env)) == before + 1


def test_unanswered_handoff_climbs_the_ladder(desk_env, service, runtime, clock):
    say(desk_env, service, runtime, "这个多少钱")
    scheduler = runtime.scheduler(threading.Event())
    worker = runtime.worker()
    steps = []
    for minutes in (6, 6, 6):
        now = clock.advance(minutes=minutes)
        scheduler.tick(now.timestamp())
        drain(worker)
        steps.append(open_handoff(runtime).level)
    assert steps == [1, 2, 3]
    assert cards_to(desk_env, "wang.consultant")  # level 1: 小李's backup
    assert len(cards_to(desk_env, "zhao.supervisor")) == 1  # level 2
    robot = [m for m in desk_env.staff_messages() if m.get("key") == "robot-key-123"]
    assert robot and "已等待18分钟" in robot[0]["markdown"]["content"]  # level 3: team robot
    assert [e.to for e in open_handoff(runtime).escalations] == ["wang.consultant", "zhao.supervisor", "robot"]


def test_first_human_reply_stops_the_sla_clock(desk_env, service, runtime, clock):
    say(desk_env, service, runtime, "报价多少")
    desk_env.add_staff_text(CUSTOMER, "li.consultant", "您好")
    desk_env.add_customer_text("wmSomeoneElse", "在吗")
    service.post(kf_notice(desk_env.callback_token(), create_time=time.time_ns()))
    drain(runtime.worker())
    scheduler = runtime.scheduler(threading.Event())
    scheduler.tick(clock.advance(minutes=20).timestamp())
    drain(runtime.worker())
    assert open_handoff(runtime).level == 0 and not cards_to(desk_env, "wang.consultant")
    stats = handoff_stats.stats(Handoffs(runtime.r, TZ), clock.at, clock.at - timedelta(days=1))
    assert stats  # the numbers exist once a human answered


def test_off_hours_queue_then_alert_when_work_starts(desk_env, service, runtime, clock):
    clock.at = last_weekday_at(6, 23)  # Sunday 23:00: nobody on duty
    say(desk_env, service, runtime, "多少钱")
    text = to_customer(desk_env)[-1]["text"]["content"]
    assert "非工作时间" in text and "09:00" in text
    assert desk_env.service_state(CUSTOMER) == 2
    assert not cards_to(desk_env, "li.consultant")
    scheduler = runtime.scheduler(threading.Event())
    scheduler.tick(clock.advance(hours=10, minutes=1).timestamp())  # Monday 09:01
    drain(runtime.worker())
    assert cards_to(desk_env, "li.consultant")
    assert desk_env.service_state(CUSTOMER) == 3


def test_consultant_stopped_receiving_falls_back_to_a_colleague(desk_env, service, runtime):
    desk_env.queue("kf/service_state/trans", {"errcode": 95019, "errmsg": "servicer not receiving"})
    say(desk_env, service, runtime, "多少钱")
    h = open_handoff(runtime)
    assert h.consultant == "zhao.supervisor"
    assert desk_env.service_state(CUSTOMER) == 3
    assert cards_to(desk_env, "zhao.supervisor") and not cards_to(desk_env, "li.consultant")


def test_session_ended_or_refused_transfer_still_records_and_answers(desk_env, service, runtime):
    desk_env.queue("kf/service_state/trans", {"errcode": 95013, "errmsg": "session ended"})
    say(desk_env, service, runtime, "多少钱")
    assert open_handoff(runtime) is not None
    assert to_customer(desk_env)
    kinds = [e["kind"] for e in Store(runtime.r).events(200)]
    assert "handoff_transfer_refused" in kinds


def test_alert_api_failing_loses_nothing(desk_env, service, runtime):
    desk_env.queue("message/send", {"errcode": -1, "errmsg": "busy"}, times=4)  # one attempt's retries
    desk_env.add_customer_text(CUSTOMER, "多少钱")
    service.post(kf_notice(desk_env.callback_token(), create_time=time.time_ns()))
    worker = runtime.worker()
    worker.run_once()
    worker.run_once()
    assert to_customer(desk_env) and not cards_to(desk_env, "li.consultant")
    time.sleep(0.6)  # past claim_idle_seconds: the failed entry is retried
    drain(worker)
    assert len(cards_to(desk_env, "li.consultant")) == 1
    assert [d["msgtype"] for d in to_customer(desk_env)] == ["text", "business_card"]  # nothing twice
    assert Inbox(runtime.r).depth()["dead"] == 0
    kinds = [e["kind"] for e in Store(runtime.r).events(200)]
    assert kinds.count("message_in") == 1 and kinds.count("handoff_opened") == 1  # counted once


def test_staff_commands_list_and_close(desk_env, service, runtime):
    say(desk_env, service, runtime, "多少钱")
    h = open_handoff(runtime)
    cmd = ("<xml><ToUserName><![CDATA[wwsandbox0000000001]]></ToUserName><FromUserName><![CDATA[li.consultant]]>"
           "</FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{c}]]>"
           "</Content><MsgId>{m}</MsgId><AgentID>1000002</AgentID></xml>")
    service.post(cmd.format(c="我的", m=1))
    drain(runtime.worker())
    reply = [m for m in desk_env.staff_messages() if m.get("touser") == "li.consultant" and m["msgtype"] == "text"]
    assert h.ref in reply[-1]["text"]["content"]  # "#1 ...": the day's number, not the long id
    service.post(cmd.format(c=f"结束 {h.id}", m=2))
    drain(runtime.worker())
    assert open_handoff(runtime) is None


def test_unsubscribe_while_a_human_holds_the_chat_still_counts(desk_env, service, runtime):
    say(desk_env, service, runtime, "多少钱")
    before = len(to_customer(desk_env))
    say(desk_env, service, runtime, "以后别再给我推送了，退订")
    assert len(to_customer(desk_env)) == before
    assert runtime.customers.get(CUSTOMER).unsubscribed


def test_alerts_to_one_member_wait_for_the_next_minute_instead_of_being_dropped(runtime, clock):
    from bot.act.staff import APP_MESSAGES_PER_MINUTE
    from bot.wecom import WeComRateLimited

    desk = runtime.parts().staff
    for _ in range(APP_MESSAGES_PER_MINUTE):
        desk.within_rate("li.consultant")
    with pytest.raises(WeComRateLimited):
        desk.within_rate("li.consultant")
    desk.within_rate("wang.consultant")  # per member
    clock.advance(minutes=1)
    desk.within_rate("li.consultant")


def test_customer_name_comes_from_kf_customer_batchget(desk_env, service, runtime):
    say(desk_env, service, runtime, "多少钱")
    card = cards_to(desk_env, "li.consultant")[0]["template_card"]
    assert card["horizontal_content_list"][0]["value"] == "沙盒客户0001"


def test_off_hours_handoff_is_not_closed_as_idle_overnight(desk_env, service, runtime, clock):
    clock.at = last_weekday_at(6, 23)  # Sunday 23:00
    say(desk_env, service, runtime, "多少钱")
    scheduler = runtime.scheduler(threading.Event())
    scheduler.tick(clock.advance(hours=5).timestamp())  # 04:00: idle for 5 h, but nobody was on duty
    drain(runtime.worker())
    assert open_handoff(runtime) is not None
    scheduler.tick(clock.advance(hours=5, minutes=1).timestamp())  # Monday 09:01
    drain(runtime.worker())
    assert cards_to(desk_env, "li.consultant")


def test_closing_from_the_app_gives_the_chat_back_to_the_bot(desk_env, service, runtime):
    say(desk_env, service, runtime, "多少钱")
    assert desk_env.service_state(CUSTOMER) == 3
    runtime.parts().staff.command("li.consultant", f"结束 {open_handoff(runtime).id}")
    assert desk_env.service_state(CUSTOMER) == 4
    before = len(to_customer(desk_env))
    say(desk_env, service, runtime, "你好")
    assert len(to_customer(desk_env)) == before + 1


def test_pass_to_a_colleague_moves_the_chat_once(desk_env, service, runtime, clock):
    clock.at = last_weekday_at(1, 14)  # Tuesday 14:00: 小李 and 小王 on duty, 赵经理 too
    say(desk_env, service, runtime, "多少钱")
    h = open_handoff(runtime)
    first = h.consultant
    for _ in range(2):  # WeCom retries the click callback; a new CreateTime each time
        service.post(card_click(first, f"pass:{h.id}", h.task_id, "CODE-PASS"))
        drain(runtime.worker())
    moved = open_handoff(runtime)
    assert moved.consultant != first
    assert len(cards_to(desk_env, moved.consultant)) == 1
    assert desk_env.service_state(CUSTOMER) == 3


def test_escalated_backup_can_take_over_a_claimed_but_unanswered_chat(desk_env, service, runtime, clock):
    clock.at = last_weekday_at(1, 14)  # Tuesday 14:00: 小王 (小李's backup) is on duty
    say(desk_env, service, runtime, "多少钱")
    h = open_handoff(runtime)
    service.post(card_click(h.consultant, f"claim:{h.id}", h.task_id, "CODE-1"))
    drain(runtime.worker())
    runtime.scheduler(threading.Event()).tick(clock.advance(minutes=6).timestamp())
    drain(runtime.worker())
    backup = open_handoff(runtime).escalations[0].to
    card = cards_to(desk_env, backup)[-1]["template_card"]
    service.post(card_click(backup, f"claim:{h.id}", card["task_id"], "CODE-2"))
    drain(runtime.worker())
    assert open_handoff(runtime).claimed_by == backup


def test_console_finds_customers_by_nickname(desk_env, service, runtime):
    from bot.console.data import find_customers

    say(desk_env, service, runtime, "多少钱")  # the alert looks the nickname up (kf/customer/batchget)
    assert find_customers(runtime.r, "沙盒客户0001") == [CUSTOMER]


def test_sla_ladder_waits_overnight_and_climbs_when_work_starts(desk_env, service, runtime, clock):
    clock.at = last_weekday_at(0, 17, 58)  # Monday 17:58: 小李 on duty until 18:00, 赵经理 until 18:30
    say(desk_env, service, runtime, "多少钱")
    scheduler = runtime.scheduler(threading.Event())
    scheduler.tick(clock.advance(hours=2).timestamp())  # 19:58: nobody at work
    drain(runtime.worker())
    assert open_handoff(runtime).level == 0
    scheduler.tick(clock.advance(hours=13, minutes=5).timestamp())  # Tuesday 09:03
    drain(runtime.worker())
    assert open_handoff(runtime).level == 1


def test_a_queued_chat_with_no_robot_alerts_whoever_is_on_duty_and_the_supervisor(sandbox, clock, service, runtime,
                                                                                  monkeypatch):
    """Nobody receiving in WeCom and no team robot: the chat waits in the kf queue, and the on-duty
    consultants and the supervisor still get a claimable card (before: nobody was told)."""
    monkeypatch.delenv("WECOM_ROBOT_KEY", raising=False)
    sandbox.set_servicers({"li.consultant": 1, "wang.consultant": 1, "zhao.supervisor": 1})
    say(sandbox, service, runtime, "这个沙发多少钱")
    h = open_handoff(runtime)
    assert h.consultant is None and sandbox.service_state(CUSTOMER) == 2  # in the queue
    assert cards_to(sandbox, "li.consultant") and cards_to(sandbox, "zhao.supervisor")
    assert not cards_to(sandbox, "wang.consultant")  # not on duty on Monday morning
    # a retried entry does not send the cards twice
    runtime.r.delete(f"wecom:kf:{{{sandbox.open_kfid}}}:cursor")
    say(sandbox, service, runtime, "你好", "wmSomeoneElse")
    assert len(cards_to(sandbox, "li.consultant")) == 1


def test_a_burst_of_queued_handoffs_stays_within_the_robots_limit_and_is_summed_up(desk_env, service, runtime, clock):
    """25 handoffs in one minute with nobody receiving: 19 robot messages, then the rest wait and go out as
    one summary in a later minute (WeCom refuses a robot's 21st message in a minute); nothing dead-letters."""
    sandbox = desk_env
    sandbox.set_servicers({"li.consultant": 1, "wang.consultant": 1, "zhao.supervisor": 1})
    customers = [f"wmBurst{i:02d}" for i in range(25)]
    for customer in customers:
        sandbox.add_customer_text(customer, "转人工")
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())
    robot = [m for m in sandbox.staff_messages() if m.get("key") == "robot-key-123"]
    assert len(robot) == 19
    assert runtime.parts().staff.robot_pending() == 6
    sandbox.advance(61)
    runtime.scheduler(threading.Event()).tick(clock.advance(minutes=1).timestamp())
    drain(runtime.worker())
    robot = [m for m in sandbox.staff_messages() if m.get("key") == "robot-key-123"]
    assert len(robot) == 20 and "另有 6 位客户等待接待" in robot[-1]["markdown"]["content"]
    assert runtime.parts().staff.robot_pending() == 0
    assert runtime.worker().inbox.depth()["dead"] == 0
