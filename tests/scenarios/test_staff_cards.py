"""Staff cards and commands end to end (webhook -> worker -> Redis -> sandbox WeCom): the customer's coupons and a
readable history on the alert, every copy of an alert updated once someone claims, the day's short numbers."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

from bot.records.handoffs import Handoffs
from bot.wecom import cards
from tests.scenarios import test_handoff_e2e as e2e
from tests.scenarios.test_handoff_e2e import CUSTOMER, TZ, card_click, cards_to, open_handoff, say
from tests.support import drain, kf_notice

clock = e2e.clock  # the fixtures of the handoff scenarios: a settable clock (Monday 10:00), the sandbox desk
desk_env = e2e.desk_env
LONG_ID = re.compile(r"\b\d{6}[0-9a-f]{10}\b")


def staff_says(sandbox, service, runtime, userid: str, text: str) -> str:
    """`userid` types `text` to the app; returns the app's answer."""
    body = (f"<xml><ToUserName><![CDATA[wwsandbox0000000001]]></ToUserName><FromUserName><![CDATA[{userid}]]>"
            f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{time.time_ns()}</MsgId><AgentID>1000002</AgentID></xml>")
    assert service.post(body).status_code == 200
    drain(runtime.worker())
    answers = [m for m in sandbox.staff_messages() if m.get("touser") == userid and m["msgtype"] == "text"]
    return answers[-1]["text"]["content"]


def kf_event(sandbox, service, runtime, event: dict) -> None:
    sandbox.add_event(event)
    assert service.post(kf_notice(sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
    drain(runtime.worker())


def rows(card: dict) -> list[tuple[str, str]]:
    return [(i["keyname"], i["value"]) for i in card["horizontal_content_list"]]


def updates(sandbox) -> list[dict]:
    return [r["json"] for r in sandbox.requests("message/update_template_card")]


def send_code(sandbox, userid: str) -> str:
    """The response_code message/send answered for the last card to `userid`."""
    return cards_to(sandbox, userid)[-1]["response_code"]


def nbytes(s: str) -> int:
    return len(s.encode())


def test_the_alert_shows_the_coupon_issued_seconds_before_and_a_readable_history(desk_env, service, runtime):
    say(desk_env, service, runtime, "有优惠吗")
    (coupon,) = runtime.coupons().coupons_of(CUSTOMER, now=datetime.fromtimestamp(runtime.clock(), TZ))
    say(desk_env, service, runtime, "这个沙发多少钱")
    card = cards_to(desk_env, "li.consultant")[0]["template_card"]
    shown = dict(rows(card))
    assert coupon.code in shown["优惠券"] and "未使用" in shown["优惠券"]
    expires = coupon.expires_at.astimezone(TZ)
    assert f"{expires.month}月{expires.day}日 {expires:%H:%M}" in shown["优惠券"]  # local time
    assert "新客专享券" in shown["优惠券"] or "券" in shown["优惠券"].split()[0]  # the campaign's title
    assert shown["客户"] == "沙盒客户0001" and "要优惠" in shown["标签"]
    quote = card["quote_area"]["quote_text"]
    assert "business_card" not in quote and "客服：「名片」" in quote
    assert quote.count("这个沙发多少钱") == 1  # quoted once, as 客户说
    assert all(nbytes(v) <= cards.LIMITS["value"] for _, v in rows(card))
    assert nbytes(quote) <= cards.LIMITS["quote.text"]


def test_a_claim_updates_the_supervisors_copy_of_the_complaint_alert_once(desk_env, service, runtime):
    say(desk_env, service, runtime, "质量太差了，我要投诉")
    h = open_handoff(runtime)
    assert {c["to"] for c in h.cards} == {"li.consultant", "zhao.supervisor"}
    zhao_code = send_code(desk_env, "zhao.supervisor")
    assert service.post(card_click("li.consultant", f"claim:{h.id}", h.task_id, "CODE-LI")).status_code == 200
    drain(runtime.worker())
    got = updates(desk_env)
    assert {"userids": ["li.consultant"], "agentid": 1000002, "response_code": "CODE-LI",
            "button": {"replace_name": "已由小李接待"}} in got  # the tapped card, with the click's code
    assert {"userids": ["zhao.supervisor"], "agentid": 1000002, "response_code": zhao_code,
            "button": {"replace_name": "已由小李接待"}} in got  # the supervisor's copy, with its send code
    assert len(got) == 2
    # the same claim again (a retried click, the command, WeCom's pick-up event): no copy is updated twice
    service.post(card_click("li.consultant", f"claim:{h.id}", h.task_id, "CODE-LI-2"))
    drain(runtime.worker())
    assert "已在您名下" in staff_says(desk_env, service, runtime, "li.consultant", f"接待 {h.no}")
    kf_event(desk_env, service, runtime, {"event_type": "session_status_change", "external_userid": CUSTOMER,
                                          "change_type": 1, "new_servicer_userid": "li.consultant"})
    assert [u["response_code"] for u in updates(desk_env)].count(zhao_code) == 1


def test_claim_by_number_from_the_app_updates_every_copy(desk_env, service, runtime):
    say(desk_env, service, runtime, "这个沙发多少钱")
    h = open_handoff(runtime)
    assert h.no == 1 and h.ref == "#1"
    card = cards_to(desk_env, "li.consultant")[0]["template_card"]
    assert card["main_title"]["title"].startswith("#1 ") and "接待 1" in card["main_title"]["desc"]
    answer = staff_says(desk_env, service, runtime, "li.consultant", "接待 1")
    assert answer.startswith("已接待 #1 沙盒客户0001")
    assert open_handoff(runtime).claimed_by == "li.consultant"
    assert updates(desk_env) == [{"userids": ["li.consultant"], "agentid": 1000002,
                                  "response_code": send_code(desk_env, "li.consultant"),
                                  "button": {"replace_name": "已由小李接待"}}]
    assert "找不到" in staff_says(desk_env, service, runtime, "li.consultant", "接待 7")


def test_pick_up_reported_by_wecom_updates_the_queued_alerts(sandbox, clock, service, runtime, monkeypatch):
    """Nobody receiving: the chat waits in the kf queue and the on-duty consultant and the supervisor get a
    card; 小李 picks it up in WeCom (session_status_change 1): both cards read 已由小李接待."""
    monkeypatch.delenv("WECOM_ROBOT_KEY", raising=False)
    sandbox.set_servicers({"li.consultant": 1, "wang.consultant": 1, "zhao.supervisor": 1})
    say(sandbox, service, runtime, "这个沙发多少钱")
    assert cards_to(sandbox, "li.consultant") and cards_to(sandbox, "zhao.supervisor")
    kf_event(sandbox, service, runtime, {"event_type": "session_status_change", "external_userid": CUSTOMER,
                                         "change_type": 1, "new_servicer_userid": "li.consultant"})
    assert open_handoff(runtime).claimed_by == "li.consultant"
    got = {(tuple(u["userids"]), u["response_code"], u["button"]["replace_name"]) for u in updates(sandbox)}
    assert got == {(("li.consultant",), send_code(sandbox, "li.consultant"), "已由小李接待"),
                   (("zhao.supervisor",), send_code(sandbox, "zhao.supervisor"), "已由小李接待")}


def test_a_copy_past_its_72_hours_or_without_a_code_is_left(desk_env, service, runtime, clock):
    say(desk_env, service, runtime, "质量太差了，我要投诉")
    h = open_handoff(runtime)
    Handoffs(runtime.r, TZ).set_card(h.id, cards.new_task_id(h.id, "robot"), None, to="robot")
    clock.advance(hours=73)
    service.post(card_click("li.consultant", f"claim:{h.id}", h.task_id, "CODE-LI"))
    drain(runtime.worker())
    assert [u["response_code"] for u in updates(desk_env)] == ["CODE-LI"]


def test_mine_lists_numbers_nicknames_chinese_intents_and_waiting_time(desk_env, service, runtime, clock):
    say(desk_env, service, runtime, "这个沙发到底多少钱呀，我想给客厅买一套大的")
    clock.advance(minutes=8)
    answer = staff_says(desk_env, service, runtime, "li.consultant", "我的")
    line = answer.splitlines()[1]
    assert line == "#1 沙盒客户0001 询价 等待8分钟：这个沙发到底多少钱呀，我想给客厅买一套大…"
    assert not LONG_ID.search(answer) and CUSTOMER not in answer and "price" not in answer
    assert "没有" in staff_says(desk_env, service, runtime, "wang.consultant", "我的")


def test_numbers_reset_each_local_day_and_the_number_names_todays(desk_env, service, runtime, clock):
    say(desk_env, service, runtime, "多少钱", "wmDayOne0001")
    say(desk_env, service, runtime, "转人工", "wmDayOne0002")
    book = Handoffs(runtime.r, TZ)
    first, second = book.open_for("wmDayOne0001"), book.open_for("wmDayOne0002")
    assert (first.no, second.no) == (1, 2) and first.day == second.day
    clock.advance(days=1)
    say(desk_env, service, runtime, "报价多少", "wmDayTwo0001")
    today = book.open_for("wmDayTwo0001")
    assert today.no == 1 and today.day != first.day
    assert staff_says(desk_env, service, runtime, "li.consultant", "接待1").startswith("已接待 #1")  # no space needed
    assert book.get(today.id).claimed_by == "li.consultant" and book.get(first.id).claimed_by is None
    # yesterday's #2 is still open and has no #2 today: the number finds it
    assert staff_says(desk_env, service, runtime, "zhao.supervisor", "结束 #2").startswith("已结束 #2")
    assert book.get(second.id).state == "closed"
    # the long id still works, and yesterday's number is shown with its day in 我的
    assert "已接待" in staff_says(desk_env, service, runtime, "zhao.supervisor", f"接待 {first.id}")
    mine = staff_says(desk_env, service, runtime, "zhao.supervisor", "我的")
    created = first.created_at
    assert f"#1（{created.month}月{created.day}日） 沙盒客户0001 询价" in mine


def test_history_lines_coupons_and_rows_stay_within_the_card_limits():
    assert cards.history_line("客服：business_card") == "客服：「名片」"
    assert cards.history_line("客服：link") == "客服：「链接」"
    assert cards.history_line("客服：link：添加您的专属顾问小王") == "客服：「链接：添加您的专属顾问小王」"
    assert cards.history_line("客服：msgmenu") == "客服：「菜单」"
    assert cards.history_line("客户：[image]") == "客户：「图片」"
    assert cards.history_line("客户：link") == "客户：link"  # what a customer typed stays as typed
    assert nbytes(cards.history_line("客户：" + "很长" * 200)) <= cards.HISTORY_LINE_BYTES
    now = datetime(2026, 12, 30, 10, 0, tzinfo=TZ)
    line = cards.coupon_line("会员日全场满三百减五十元超值专享大礼包优惠券", "ABCD2345", "issued",
                             datetime(2027, 1, 2, 23, 59, tzinfo=TZ), now)
    assert line.endswith(" ABCD2345 未使用 至2027年1月2日 23:59") and nbytes(line) <= cards.LIMITS["value"]
    assert "已过期" in cards.coupon_line("新客专享券", "X", "expired", now - timedelta(days=1), now)
    from tests.unit.test_cards import LI, handoff

    coupons = [f"券{i} CODE{i} 未使用" for i in range(4)]
    up = cards.alert_card(handoff(no=3, day="261230"), LI, "王女士", [], ["询价"], coupons, "t1",
                          touser="wang.consultant", level=1, now=datetime(2026, 1, 26, 10, 7, tzinfo=TZ))
    got = rows(up["template_card"])
    assert len(got) == cards.MAX_HORIZONTAL
    assert got[-2:] == [("优惠券", "券0 CODE0 未使用"), ("优惠券", "另有3张")]
    assert up["template_card"]["main_title"]["title"].startswith("#3 【超时】")
    assert nbytes(up["template_card"]["main_title"]["desc"]) <= cards.LIMITS["main_title.desc"]
