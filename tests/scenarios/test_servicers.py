"""WeCom's servicer list is the truth (issue 11 item 2), end to end (webhook -> worker -> Redis -> sandbox WeCom):
a receiving servicer missing from consultants.yaml is handed chats with the defaults and named by user/get;
kf/servicer/list is asked at most once a minute and servicer_status_change counts at once; doctor lists
both kinds of mismatch."""

from __future__ import annotations

import threading
from zoneinfo import ZoneInfo

from bot.content.team import DEFAULT_MAX_CONCURRENT, load_team, pick, with_servicers
from bot.records.handoffs import Handoffs
from handlers.actions import ServicerChanged
from handlers.events import on_event
from handlers.messages import KfMessage
from tests.scenarios import test_handoff_e2e as e2e
from tests.scenarios.test_doctor import doctor
from tests.scenarios.test_handoff_e2e import (
    CUSTOMER,
    card_click,
    cards_to,
    open_handoff,
    say,
    to_customer,
)
from tests.scenarios.test_staff_cards import kf_event
from tests.support import ROOT, drain

clock = e2e.clock  # the handoff scenarios' fixtures: a settable clock (Monday 10:00), the sandbox desk
desk_env = e2e.desk_env
TZ = ZoneInfo("Asia/Shanghai")
STOPPED = {"li.consultant": 1, "wang.consultant": 1, "zhao.supervisor": 1}


def session(sandbox, customer: str) -> tuple[int, str]:
    """(service_state, servicer_userid) of a customer's kf session, as the sandbox holds it."""
    _, state = sandbox.handle("GET", "/sandbox/state", b"")
    s = next(s for s in state["sessions"] if s["external_userid"] == customer)
    return s["service_state"], s["servicer_userid"]


def handoff_of(runtime, customer: str):
    return Handoffs(runtime.r, TZ).open_for(customer)


def test_an_unlisted_receiving_servicer_gets_the_chat_card_and_alert_named_by_wecom(desk_env, service, runtime,
                                                                                       clock):
    """The kf account's one receiving servicer is not in consultants.yaml: the chat goes to them (not the queue),
    with their business card, a text naming 顾问张三 (user/get), their alert, and the claim reads 已由张三接待."""
    sandbox = desk_env
    sandbox.set_servicers({"zhang.new": 0, **STOPPED}, names={"zhang.new": "张三"})
    say(sandbox, service, runtime, "这个沙发多少钱")
    assert session(sandbox, CUSTOMER) == (3, "zhang.new")
    out = to_customer(sandbox)
    assert [d["msgtype"] for d in out] == ["text", "business_card"]
    assert "顾问张三" in out[0]["text"]["content"]
    assert out[1]["business_card"] == {"userid": "zhang.new"}
    h = open_handoff(runtime)
    assert h.consultant == "zhang.new"
    (alert,) = cards_to(sandbox, "zhang.new")
    assert alert["template_card"]["task_id"] == h.task_id
    rows = {r["keyname"]: r["value"] for r in alert["template_card"]["horizontal_content_list"]}
    assert rows["分配给"] == "张三"  # the alert names them by their WeCom name
    assert not cards_to(sandbox, "li.consultant")  # not a queued chat: nobody else is told

    service.post(card_click("zhang.new", f"claim:{h.id}", h.task_id, "CODE-ZHANG"))
    drain(runtime.worker())
    assert open_handoff(runtime).claimed_by == "zhang.new"
    update = sandbox.requests("message/update_template_card")[-1]["json"]
    assert update["response_code"] == "CODE-ZHANG" and update["button"]["replace_name"] == "已由张三接待"
    assert len(sandbox.requests("user/get")) == 1  # the name is remembered (a day)


def test_the_supervisors_escalation_card_names_the_unlisted_servicer(desk_env, service, runtime, clock):
    """Unanswered: the ladder has no backup for a default servicer (the robot), then the team's supervisor, whose
    card names the original consultant by their WeCom name."""
    sandbox = desk_env
    sandbox.set_servicers({"zhang.new": 0, **STOPPED}, names={"zhang.new": "张三"})
    say(sandbox, service, runtime, "这个沙发多少钱")
    scheduler, worker = runtime.scheduler(threading.Event()), runtime.worker()
    for _ in range(2):
        scheduler.tick(clock.advance(minutes=6).timestamp())
        drain(worker)
    assert [e.to for e in open_handoff(runtime).escalations] == ["robot", "zhao.supervisor"]
    (card,) = cards_to(sandbox, "zhao.supervisor")
    rows = {i["keyname"]: i["value"] for i in card["template_card"]["horizontal_content_list"]}
    assert rows["原顾问"] == "张三"


def test_yaml_consultants_win_ties_and_a_name_wecom_will_not_give_is_the_userid(desk_env, service, runtime):
    sandbox = desk_env
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 1, "zhao.supervisor": 1, "a.new": 0})
    say(sandbox, service, runtime, "多少钱")
    assert open_handoff(runtime).consultant == "li.consultant"  # 0 open each: the YAML one first
    say(sandbox, service, runtime, "多少钱", "wmSecond0001")
    assert handoff_of(runtime, "wmSecond0001").consultant == "a.new"  # li has one now
    text = to_customer(sandbox, "wmSecond0001")[0]["text"]["content"]
    assert "顾问a.new" in text  # user/get answered 60111: the userid
    assert len(sandbox.requests("kf/servicer/list")) == 1  # one list for both handoffs


def test_the_servicer_list_is_asked_again_after_a_minute(desk_env, service, runtime, clock):
    sandbox = desk_env
    say(sandbox, service, runtime, "多少钱")
    assert open_handoff(runtime).consultant == "li.consultant"
    # zhang.new joins and receives; no event says so, only the list
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0, "zhang.new": 0},
                          names={"zhang.new": "张三"})
    clock.advance(seconds=30)
    say(sandbox, service, runtime, "多少钱", "wmSecond0001")
    assert handoff_of(runtime, "wmSecond0001").consultant == "zhao.supervisor"  # the cached list, 30 s old
    clock.advance(seconds=31)
    say(sandbox, service, runtime, "多少钱", "wmThird00001")
    assert handoff_of(runtime, "wmThird00001").consultant == "zhang.new"
    assert len(sandbox.requests("kf/servicer/list")) == 2


def test_servicer_status_change_counts_on_the_next_handoff_without_waiting_for_the_list(desk_env, service, runtime):
    """li.consultant stops receiving (event status 2): the next chat goes to 赵经理 without li ever being tried and
    without asking kf/servicer/list again; li starts again (status 1) and is chosen first again."""
    sandbox = desk_env
    say(sandbox, service, runtime, "多少钱")
    assert open_handoff(runtime).consultant == "li.consultant"
    kf_event(sandbox, service, runtime, {"event_type": "session_status_change", "external_userid": CUSTOMER,
                                         "change_type": 3})  # li is free again
    assert open_handoff(runtime) is None
    listed = len(sandbox.requests("kf/servicer/list"))

    kf_event(sandbox, service, runtime, {"event_type": "servicer_status_change", "servicer_userid": "li.consultant",
                                         "status": 2})
    say(sandbox, service, runtime, "多少钱", "wmSecond0001")
    assert handoff_of(runtime, "wmSecond0001").consultant == "zhao.supervisor"
    tried = [q["json"].get("servicer_userid") for q in sandbox.requests("kf/service_state/trans")
             if q["json"]["external_userid"] == "wmSecond0001"]
    assert tried == ["zhao.supervisor"]

    kf_event(sandbox, service, runtime, {"event_type": "servicer_status_change", "servicer_userid": "li.consultant",
                                         "status": 1})
    say(sandbox, service, runtime, "多少钱", "wmThird00001")
    assert handoff_of(runtime, "wmThird00001").consultant == "li.consultant"
    assert len(sandbox.requests("kf/servicer/list")) == listed  # both from the patched cache


def test_doctor_lists_servicers_missing_from_the_yaml_and_consultants_who_are_not_servicers(settings, sandbox):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 1, "zhang.new": 0})
    rc, text = doctor(settings)
    assert "接待人员 zhang.new 不在 consultants.yaml：将按默认设置分配" in text
    assert "consultants not servicers of this account: zhao.supervisor" in text
    assert "li.consultant 不在" not in text and rc == 0, text  # warnings, not failures


def test_with_servicers_appends_defaults_for_receiving_unknown_servicers_only():
    team = load_team(ROOT / "content" / "consultants.yaml", TZ)
    grown = with_servicers(team, {"zhang.new": 0, "b.gone": 1, "li.consultant": 0, "a.new": 0}, {"zhang.new": "张三"})
    assert [c.userid for c in grown.consultants] == [*(c.userid for c in team.consultants), "a.new", "zhang.new"]
    zhang = grown.get("zhang.new")
    assert (zhang.name, zhang.title, zhang.card.type, zhang.max_concurrent) == ("张三", "顾问", "business_card",
                                                                                DEFAULT_MAX_CONCURRENT)
    assert grown.get("a.new").name == "a.new" and grown.get("li.consultant") == team.get("li.consultant")
    assert with_servicers(team, {"li.consultant": 0}, {}) is team
    sunday_night = e2e.last_weekday_at(6, 23)  # nobody of the YAML on duty; WeCom's 接待中 is what counts
    a = pick(grown, owner=None, receiving={"zhang.new": 0}, load={}, now=sunday_night)
    assert (a.userid, a.state) == ("zhang.new", 3)


def test_the_event_status_is_mapped_to_receiving():
    def actions(status):
        msg = KfMessage.from_api({"msgid": "e1", "origin": 4, "msgtype": "event", "event": {
            "event_type": "servicer_status_change", "open_kfid": "wkA", "servicer_userid": "li", "status": status}})
        return [a for a in on_event(msg, None, None) if isinstance(a, ServicerChanged)]

    assert actions(1) == [ServicerChanged("wkA", "li", True)]  # 1 接待中
    assert actions("2") == [ServicerChanged("wkA", "li", False)]  # 2 停止接待
    assert actions(0) == [] and actions(None) == []
