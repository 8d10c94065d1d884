"""Each route of the table and the actions its handler decides: pure, no Redis, no HTTP."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import handlers
from handlers.actions import (
    IssueCoupon,
    OptOut,
    Record,
    RequestHandoff,
    Seen,
    SendFailed,
    SendText,
    SessionChanged,
    StaffReplied,
    Tag,
    Welcome,
)
from handlers.context import Ctx
from handlers.messages import KfMessage
from intents.classify import Intent

REPLIES = {"default": "默认", "handoff": "转人工", "complaint": "投诉回复", "unsubscribe": "已退订",
           "unsupported": "只看文字"}
CTX = Ctx(replies=REPLIES, faq_answer=lambda topic: f"答案:{topic}")
HELD = Ctx(replies=REPLIES, faq_answer=CTX.faq_answer, human_holds=True)


def message(text: str = "你好", origin: int = 3, msgtype: str = "text", **extra: Any) -> KfMessage:
    """A sync_msg item from customer wm1 to kf account wk1."""
    item: dict[str, Any] = {"msgid": "m1", "open_kfid": "wk1", "external_userid": "wm1", "origin": origin,
                            "msgtype": msgtype, "send_time": 1700000000, **extra}
    if msgtype == "text":
        item["text"] = {"content": text}
    return KfMessage.from_api(item)


def intent(name: str, topic: str | None = None, matched: tuple[str, ...] = ("词",)) -> Intent:
    """A classification with that intent."""
    return Intent("…", name, topic, matched, False, "")


def seen(text: str = "你好", name: str | None = None, matched: tuple[str, ...] = (),
         fell_back: bool = False) -> Seen:
    """The Seen a customer's text message from message() starts with (intent() decides with confidence 1)."""
    return Seen("wk1", "wm1", "m1", text, "text", 1700000000, name, matched, 1.0 if name else None, fell_back)


def test_the_table_is_ordered_specific_to_general() -> None:
    names = [r.name for r in handlers.ROUTES]
    assert names[0] == "backlog" and names[-1] == "faq"
    assert names.index("other_origin") < names.index("human_holds") < names.index("non_text")
    assert names.index("complaint") < names.index("human_or_price") < names.index("discount")


def test_backlog_is_recorded_not_answered_nor_seen() -> None:
    name, actions = handlers.route(message(backlog=True), intent("price"), CTX)
    assert name == "backlog"
    assert actions == [Record("backlog_skipped", {"customer": "wm1", "msgid": "m1", "text": "你好"})]


def test_staff_reply_stops_the_clock_and_is_recorded() -> None:
    name, actions = handlers.route(message("我来", origin=5, servicer_userid="li"), None, CTX)
    assert name == "staff_reply"
    assert actions[0] == StaffReplied("wm1", "li", 1700000000)
    assert [type(a) for a in actions] == [StaffReplied, Record]


@pytest.mark.parametrize("event,expected", [
    ({"event_type": "enter_session", "welcome_code": "C1"}, Welcome("wk1", "wm1", "C1", 1700000000)),
    ({"event_type": "session_status_change", "change_type": 3, "new_servicer_userid": ""},
     SessionChanged("wm1", 3, "", 1700000000)),
    ({"event_type": "msg_send_fail", "fail_type": 6, "fail_msgid": "b1"}, SendFailed("wm1", 6, "b1")),
])
def test_kf_events(event: dict[str, Any], expected: Any) -> None:
    name, actions = handlers.route(message(origin=4, msgtype="event", event=event), None, CTX)
    assert name == "kf_event"
    assert actions[0].kind == "kf_event" and actions[1:] == [expected]  # type: ignore[union-attr]


def test_other_origins_leave_a_trace_only() -> None:
    name, actions = handlers.route(message(origin=9), None, CTX)
    assert (name, [type(a) for a in actions]) == ("other_origin", [Record])


def test_while_a_human_holds_the_chat_only_tags_and_a_silent_opt_out_remain() -> None:
    name, actions = handlers.route(message("多少钱"), intent("price"), HELD)
    assert name == "human_holds"
    assert actions == [seen("多少钱", "price", ("词",)), Record("message_while_human", {"customer": "wm1", "msgid": "m1",
                                                                             "text": "多少钱"}),
                       Tag("wm1", "询价")]
    _, actions = handlers.route(message("退订"), intent("unsubscribe"), HELD)
    assert actions[-1] == OptOut("wk1", "wm1", "")


def test_non_text_gets_the_unsupported_reply() -> None:
    name, actions = handlers.route(message(msgtype="image"), None, CTX)
    assert name == "non_text"
    assert actions[1:] == [SendText("wk1", "wm1", "只看文字")]


def test_without_a_classifier_the_default_reply() -> None:
    name, actions = handlers.route(message(), None, CTX)
    assert (name, actions) == ("unclassified", [seen(), SendText("wk1", "wm1", "默认")])


@pytest.mark.parametrize("name,route,reply,tag", [
    ("complaint", "complaint", "投诉回复", "投诉"),
    ("price", "human_or_price", "转人工", "询价"),
    ("human", "human_or_price", "转人工", "要人工"),
])
def test_handoffs(name: str, route: str, reply: str, tag: str) -> None:
    got, actions = handlers.route(message("文本"), intent(name), CTX)
    assert got == route
    assert actions[1:] == [Tag("wm1", tag), RequestHandoff("wk1", "wm1", name, ("词",), "文本", reply, "m1")]


def test_unsubscribe_confirms_once() -> None:
    name, actions = handlers.route(message("退订"), intent("unsubscribe"), CTX)
    assert (name, actions[1:]) == ("unsubscribe", [OptOut("wk1", "wm1", "已退订")])


def test_discount_issues_the_coupon_then_tags() -> None:
    name, actions = handlers.route(message("有优惠吗"), intent("discount"), CTX)
    assert (name, actions[1:]) == ("discount", [IssueCoupon("wk1", "wm1", "m1"), Tag("wm1", "要优惠")])


def test_anything_else_gets_the_faq_answer_of_its_topic() -> None:
    name, actions = handlers.route(message("怎么安装"), intent("other", topic="install"), CTX)
    assert name == "faq"
    assert actions[1:] == [SendText("wk1", "wm1", "答案:install"),
                           Record("faq", {"customer": "wm1", "topic": "install", "intent": "other"})]


def test_a_customer_message_is_seen_first_with_its_intent() -> None:
    _, actions = handlers.route(message("多少钱"), intent("price", matched=("多少钱",)), CTX)
    assert actions[0] == Seen("wk1", "wm1", "m1", "多少钱", "text", 1700000000, "price", ("多少钱",), 1.0)


def test_a_fallback_is_seen_as_one_and_the_third_offers_a_person() -> None:
    from intents.config import RepeatRule

    offer = RepeatRule(2, "offer", "要不要转人工？")
    ctx = Ctx(replies=REPLIES, faq_answer=lambda topic: f"答案:{topic}" if topic else "兜底", repeat=offer)
    _, actions = handlers.route(message("随便"), intent("other"), ctx)
    assert actions[0] == seen("随便", "other", ("词",), fell_back=True) and actions[1] == SendText("wk1", "wm1", "兜底")
    _, actions = handlers.route(message("随便"), intent("other"), replace(ctx, fallbacks=2))
    assert actions[0] == seen("随便", "other", ("词",), fell_back=False)  # the offer starts the count again
    assert actions[1] == SendText("wk1", "wm1", "要不要转人工？")
    assert actions[2] == Record("fallback_repeated", {"customer": "wm1", "fallbacks": 2, "then": "offer"})
    _, actions = handlers.route(message("随便"), intent("other"), replace(ctx, fallbacks=2, repeat=RepeatRule(2, "handoff", "转人工")))
    assert [type(a).__name__ for a in actions] == ["Seen", "Record", "RequestHandoff"]
