"""Handoff payloads: exact WeCom shapes, byte limits, and acceptance by the sandbox."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from bot.content.team import CardSpec, Consultant
from bot.records.handoffs import Escalation, Handoff
from bot.wecom.cards import (
    LIMITS,
    alert_card,
    app_text,
    claimed_card_update,
    clip,
    consultant_card,
    customer_text,
    digest_text,
    escalation_text,
    new_task_id,
    parse_button_key,
    robot_text,
    valid_task_id,
)
from bot.wecom.sandbox import Sandbox

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 1, 26, 10, 0, tzinfo=TZ)
CORP, SECRET, KF = "wwsandbox0000000001", "sandbox-secret", "wkSandboxKf0000000000000000000001"
HOURS = (((540, 1080),),) * 5 + ((), ())
LI = Consultant("li.consultant", "小李", "资深家居顾问", CardSpec("business_card"), HOURS, 8, "wang.consultant",
                "zhao.supervisor")
WANG = Consultant("wang.consultant", "小王", "家居顾问",
                  CardSpec("link", "https://work.weixin.qq.com/ca/cawcde000", "添加您的专属顾问小王", "一对一推荐", "MEDIA1"),
                  HOURS, 8)


def handoff(**kw) -> Handoff:
    base = dict(id="260126a1b2c3d4e5", customer="wmCustomer0001", open_kfid=KF, intent="price",
                matched=("多少钱",), text="这个沙发多少钱", consultant=LI.userid, state="open", created_at=NOW,
                claimed_at=None, claimed_by=None, first_reply_at=None, closed_at=None, escalations=(),
                task_id=None, response_code=None, sla_seconds=300, off_hours=False, queued_until=None)
    return Handoff(**{**base, **kw})


def nbytes(s: str) -> int:
    return len(s.encode())


# ---- shapes ----------------------------------------------------------------------------------


def test_consultant_card_shapes() -> None:
    assert consultant_card(LI) == {"msgtype": "business_card", "business_card": {"userid": "li.consultant"}}
    assert consultant_card(WANG, touser="wm1", open_kfid=KF) == {
        "touser": "wm1", "open_kfid": KF, "msgtype": "link",
        "link": {"title": "添加您的专属顾问小王", "desc": "一对一推荐", "url": "https://work.weixin.qq.com/ca/cawcde000",
                 "thumb_media_id": "MEDIA1"}}


def test_alert_card_shape() -> None:
    h = handoff()
    body = alert_card(h, LI, "王女士", ["客户：你好", "助手：您好～", "客户：这个沙发多少钱"], ["询价", "高价值"],
                      ["新客专享券（未使用）"], "ho-260126a1b2c3d4e5-alert-1", agentid=1000002)
    assert body["touser"] == "li.consultant" and body["agentid"] == 1000002 and body["msgtype"] == "template_card"
    card = body["template_card"]
    assert card["card_type"] == "button_interaction" and card["task_id"] == "ho-260126a1b2c3d4e5-alert-1"
    assert card["main_title"]["title"] == "客户询价，请5分钟内接待"
    assert {i["keyname"]: i["value"] for i in card["horizontal_content_list"]} == {
        "客户": "王女士", "原因": "询价（多少钱）", "分配给": "小李", "标签": "询价、高价值", "优惠券": "新客专享券（未使用）"}
    assert card["quote_area"]["quote_text"].startswith("客户说：这个沙发多少钱\n")
    assert "助手：您好～" in card["quote_area"]["quote_text"]
    keys = [b["key"] for b in card["button_list"]]
    assert keys == ["claim:260126a1b2c3d4e5", "pass:260126a1b2c3d4e5"]
    assert [parse_button_key(k) for k in keys] == [("claim", h.id), ("pass", h.id)]
    assert parse_button_key("other:1") is None and parse_button_key("claim:") is None


def test_complaint_and_escalated_titles() -> None:
    complaint = alert_card(handoff(intent="complaint", matched=("投诉", "差评"), sla_seconds=180), LI, "王女士", [],
                           [], [], "t1")["template_card"]
    assert complaint["main_title"]["title"] == "【优先】客户投诉，请3分钟内接待"
    assert complaint["source"]["desc_color"] == 2
    up = alert_card(handoff(), LI, "王女士", [], [], [], "t2", touser="wang.consultant", level=1,
                    now=NOW + timedelta(minutes=7))
    assert up["touser"] == "wang.consultant"
    assert up["template_card"]["main_title"]["title"].startswith("【超时】")
    assert "已等待7分钟" in up["template_card"]["main_title"]["desc"]
    assert {"keyname": "原顾问", "value": "小李"} in up["template_card"]["horizontal_content_list"]


def test_task_ids() -> None:
    tid = new_task_id("260126a1b2c3d4e5", "level1")
    assert valid_task_id(tid) and tid != new_task_id("260126a1b2c3d4e5", "level1")
    assert valid_task_id("a@b_c-1") and not valid_task_id("a b") and not valid_task_id("x" * 129)
    assert not valid_task_id("任务") and valid_task_id(new_task_id("任务" * 100))
    with pytest.raises(ValueError, match="invalid task_id"):
        alert_card(handoff(), LI, "x", [], [], [], "bad id!")


def test_claimed_update_and_texts() -> None:
    assert claimed_card_update("RC1", 1000002, ["li.consultant", "wang.consultant"], "小李") == {
        "userids": ["li.consultant", "wang.consultant"], "agentid": 1000002, "response_code": "RC1",
        "button": {"replace_name": "已由小李接待"}}
    long = claimed_card_update("RC1", 1, ["a"], "欧阳春花秋月何时了")["button"]["replace_name"]
    assert long.startswith("已由欧阳") and long.endswith("接待") and nbytes(long) <= LIMITS["button.text"]
    text = escalation_text(handoff(), "王女士", level=1, now=NOW + timedelta(minutes=6), assigned_name="小李")
    assert text.startswith("【超时未接待】客户询价已等待6分钟，请您作为备岗协助接待。") and "原顾问：小李" in text
    assert app_text(["a", "b"], 7, text) == {"touser": "a|b", "agentid": 7, "msgtype": "text",
                                             "text": {"content": text}}
    robot = robot_text(handoff(), "王女士", now=NOW + timedelta(minutes=16), assigned_name="小李",
                       notified=["小王", "赵经理"], mention=["zhao.supervisor"])
    content = robot["markdown"]["content"]
    assert robot["msgtype"] == "markdown" and "已等待16分钟" in content and "<@zhao.supervisor>" in content


def test_customer_texts() -> None:
    assert customer_text(LI) == "已为您安排资深家居顾问小李，预计5分钟内回复您，这是TA的名片："
    off = customer_text(LI, off_hours=True, next_available=datetime(2026, 1, 27, 9, 0, tzinfo=TZ), now=NOW)
    assert off == "现在是非工作时间，已为您登记，明天 09:00上班后资深家居顾问小李会第一时间回复您，请留意消息～"
    assert "2月2日 09:00" in customer_text(None, off_hours=True, next_available=datetime(2026, 2, 2, 9, tzinfo=TZ))
    assert "排队" in customer_text(None)
    assert customer_text(LI, complaint=True).startswith("非常抱歉")
    night = customer_text(LI, complaint=True, off_hours=True, next_available=datetime(2026, 1, 27, 9, 0, tzinfo=TZ),
                          now=NOW)
    assert night.startswith("非常抱歉") and "非工作时间" in night  # an apology at any hour
    assert "前面还有3位" in customer_text(None, ahead=3, minutes=10) and "10分钟" in customer_text(None, minutes=10)


# ---- byte limits -----------------------------------------------------------------------------


def test_clip_respects_utf8_boundaries() -> None:
    assert clip("价格", 6) == "价格"
    assert clip("价格多少", 7) == "价…"  # 3 bytes + 3-byte ellipsis; never half a character
    assert clip("😀😀😀", 9) == "😀…"
    assert clip("abc", 1) == "a"
    for n in range(40):
        out = clip("沙发😀价格abc" * 3, n)
        assert nbytes(out) <= n
        out.encode().decode()  # valid UTF-8


def test_long_chinese_stays_within_limits() -> None:
    long = "这款意大利进口真皮沙发三人位加贵妃位的价格是多少能不能再便宜一点" * 40
    h = handoff(text=long, matched=tuple(["价格", "多少钱", "便宜"] * 20))
    body = alert_card(h, LI, "王" * 100, [f"客户：{long}"] * 10, ["询价" * 30] * 5, ["满199减30" * 20] * 5,
                      new_task_id(h.id))
    card = body["template_card"]
    assert nbytes(card["source"]["desc"]) <= LIMITS["source.desc"]
    assert nbytes(card["main_title"]["title"]) <= LIMITS["main_title.title"]
    assert nbytes(card["main_title"]["desc"]) <= LIMITS["main_title.desc"]
    assert nbytes(card["sub_title_text"]) <= LIMITS["sub_title_text"]
    assert nbytes(card["quote_area"]["quote_text"]) <= LIMITS["quote.text"]
    assert card["quote_area"]["quote_text"].endswith("…")
    assert len(card["horizontal_content_list"]) <= 6
    for item in card["horizontal_content_list"]:
        assert nbytes(item["keyname"]) <= LIMITS["keyname"] and nbytes(item["value"]) <= LIMITS["value"]
    for button in card["button_list"]:
        assert nbytes(button["text"]) <= LIMITS["button.text"] and nbytes(button["key"]) <= LIMITS["button.key"]
    assert nbytes(escalation_text(h, long, level=2, now=NOW)) <= 2048
    assert nbytes(robot_text(h, long * 10, now=NOW)["markdown"]["content"]) <= 4096
    assert nbytes(app_text("a", 1, long * 10)["text"]["content"]) <= 2048
    assert nbytes(customer_text(Consultant("x", long, long, CardSpec("business_card"), HOURS))) <= 2048
    digest = digest_text([long] * 30)
    assert nbytes(digest) <= 2048 and digest.startswith("您有30条") and "另有" in digest
    wide = Consultant("w", "小王", "顾问", CardSpec("link", "https://x.example/a", long, long * 5), HOURS)
    link = consultant_card(wide)["link"]
    assert nbytes(link["title"]) <= 128 and nbytes(link["desc"]) <= 512


# ---- accepted by the sandbox ------------------------------------------------------------------


@pytest.fixture()
def sb() -> Sandbox:
    box = Sandbox(CORP, SECRET, KF).start()
    yield box
    box.stop()


def api(sb: Sandbox, path: str, body: dict, **params: str) -> dict:
    tok = requests.get(f"{sb.url}/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": SECRET},
                       timeout=5).json()["access_token"]
    data = json.dumps(body, ensure_ascii=False).encode()
    return requests.post(f"{sb.url}/cgi-bin/{path}", params={"access_token": tok, **params}, data=data,
                         timeout=5).json()


def test_payloads_accepted_by_sandbox(sb: Sandbox) -> None:
    sb.add_customer_text("wmCustomer0001", "这个沙发多少钱")
    for who in (LI, WANG):
        got = api(sb, "kf/send_msg", consultant_card(who, touser="wmCustomer0001", open_kfid=KF))
        assert got["errcode"] == 0, got
    text = {"touser": "wmCustomer0001", "open_kfid": KF, "msgtype": "text",
            "text": {"content": customer_text(LI, off_hours=True, next_available=NOW, now=NOW)}}
    assert api(sb, "kf/send_msg", text)["errcode"] == 0
    delivered = sb.delivered()
    assert [m["msgtype"] for m in delivered] == ["business_card", "link", "text"]
    assert delivered[0]["business_card"] == {"userid": "li.consultant"}

    h = handoff(intent="complaint", text="质量太差了" * 200)
    sent = api(sb, "message/send", alert_card(h, LI, "王女士", ["客户：质量太差了"], ["投诉"], [],
                                              new_task_id(h.id), agentid=1000002))
    assert sent["errcode"] == 0 and sent["response_code"]
    update = claimed_card_update(sent["response_code"], 1000002, ["li.consultant"], "小李")
    assert api(sb, "message/update_template_card", update)["errcode"] == 0
    assert api(sb, "message/send", app_text("wang.consultant", 1000002,
                                            escalation_text(h, "王女士", level=1, now=NOW)))["errcode"] == 0
    robot = requests.post(f"{sb.url}/cgi-bin/webhook/send", params={"key": "robot-key"},
                          data=json.dumps(robot_text(h, "王女士", now=NOW), ensure_ascii=False).encode(), timeout=5)
    assert robot.json()["errcode"] == 0
    staff = sb.staff_messages()
    assert [m["msgtype"] for m in staff] == ["template_card", "update_template_card", "text", "markdown"]
    assert staff[0]["template_card"]["main_title"]["title"] == "【优先】客户投诉，请5分钟内接待"


def test_escalation_record_type_is_public() -> None:
    h = handoff(escalations=(Escalation(1, "wang.consultant", NOW),))
    assert h.level == 1 and h.deadline == NOW + timedelta(minutes=5)
