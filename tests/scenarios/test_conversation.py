"""The conversation as a customer reads it: order and tone, end to end (webhook -> worker -> sandbox WeCom)."""

from __future__ import annotations

from bot.queue.inbox import Inbox
from bot.records.handoffs import Handoffs
from bot.records.store import Store
from tests.scenarios.test_handoff_e2e import TZ, Clock, last_weekday_at
from tests.support import drain, kf_notice


def say(sandbox, service, runtime, customer: str, text: str) -> None:
    sandbox.add_customer_text(customer, text)
    assert service.post(kf_notice(sandbox.callback_token())).status_code == 200
    drain(runtime.worker())


def transcript(sandbox, customer: str) -> list[str]:
    """What the customer received, in order ("[名片]" for a business card)."""
    out = []
    for d in sandbox.delivered():
        if d["touser"] == customer:
            out.append(d["text"]["content"] if d["msgtype"] == "text" else f"[{d['msgtype']}]")
    return out


def test_first_contact_gets_the_welcome_then_the_answer_in_one_message(sandbox, service, runtime):
    say(sandbox, service, runtime, "wmFirst001", "有优惠吗")
    lines = transcript(sandbox, "wmFirst001")
    assert len(lines) == 1  # one of the five messages WeCom allows, not two
    welcome, answer = lines[0].split("\n\n", 1)
    assert welcome.startswith("您好，欢迎") and "券码" in answer
    say(sandbox, service, runtime, "wmFirst001", "有优惠吗")  # asked again: no second welcome
    again = transcript(sandbox, "wmFirst001")[1:]
    assert len(again) == 1 and again[0].startswith("您已经领过") and "欢迎" not in again[0]


def test_a_first_hello_gets_one_greeting_not_two(sandbox, service, runtime):
    say(sandbox, service, runtime, "wmHello001", "你好")
    lines = transcript(sandbox, "wmHello001")
    assert len(lines) == 1 and lines[0].startswith("您好，欢迎") and "\n\n" not in lines[0]
    say(sandbox, service, runtime, "wmHello001", "你好")  # later greetings are answered as usual
    assert len(transcript(sandbox, "wmHello001")) == 2


def test_complaint_by_day_opens_with_an_apology_then_the_card(sandbox, service, runtime):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    runtime.clock = Clock(last_weekday_at(0, 10))
    say(sandbox, service, runtime, "wmComplain1", "你好")
    say(sandbox, service, runtime, "wmComplain1", "质量太差了，我要投诉")
    lines = transcript(sandbox, "wmComplain1")[1:]
    assert lines[0].startswith("非常抱歉") and "小李" in lines[0] and "分钟内" in lines[0]
    assert lines[1] == "[business_card]" and len(lines) == 2
    assert sandbox.service_state("wmComplain1") == 3


def test_complaint_at_night_apologises_and_says_when(sandbox, service, runtime):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    runtime.clock = Clock(last_weekday_at(2, 23))  # Wednesday 23:00: nobody on duty
    say(sandbox, service, runtime, "wmNight0001", "你好")
    say(sandbox, service, runtime, "wmNight0001", "你们的东西太差了，我要投诉")
    lines = transcript(sandbox, "wmNight0001")[1:]
    assert len(lines) == 1 and lines[0].startswith("非常抱歉") and "非工作时间" in lines[0] and "明天" in lines[0]


def test_queued_chat_hears_its_place_then_the_one_queue_text_wecom_allows(sandbox, service, runtime):
    sandbox.set_servicers({"li.consultant": 1, "wang.consultant": 1, "zhao.supervisor": 1})  # nobody receiving
    runtime.clock = Clock(last_weekday_at(0, 10))
    say(sandbox, service, runtime, "wmQueue0001", "你好")
    say(sandbox, service, runtime, "wmQueue0001", "转人工")
    say(sandbox, service, runtime, "wmQueue0002", "你好")
    say(sandbox, service, runtime, "wmQueue0002", "转人工")
    first, second = transcript(sandbox, "wmQueue0001")[1:], transcript(sandbox, "wmQueue0002")[1:]
    assert "排队" in first[0] and "您是下一位" in first[0]
    assert "前面还有1位" in second[0]
    on_event = [d for d in sandbox.delivered() if d["touser"] == "wmQueue0002" and d.get("code")]
    assert len(on_event) == 1 and on_event[0]["text"]["content"] == second[1]  # via the transfer's msg_code
    assert sandbox.service_state("wmQueue0002") == 2
    sent_in_queue = [q for q in sandbox.requests("kf/send_msg")
                     if q["json"]["touser"] == "wmQueue0002" and q["at"] > on_event[0]["at"]]
    assert sent_in_queue == []  # nothing WeCom would refuse in state 2
    assert Handoffs(runtime.r, TZ).open_for("wmQueue0002") is not None


def test_a_95018_send_asks_wecom_who_holds_the_chat_and_the_bot_stops_cleanly(sandbox, service, runtime, r):
    say(sandbox, service, runtime, "wmHeld00001", "你好")
    sandbox.set_servicers({"li.consultant": 0})
    sandbox.set_service_state("wmHeld00001", 3, "li.consultant")  # picked up in the WeCom client, unannounced
    say(sandbox, service, runtime, "wmHeld00001", "发票怎么开")
    assert len(transcript(sandbox, "wmHeld00001")) == 1  # only the first answer
    assert sandbox.requests("kf/service_state/get")  # asked who has it
    held = [e for e in Store(r).events(100) if e["kind"] == "session_held"]
    assert held and held[0]["servicer"] == "li.consultant" and held[0]["state"] == 3
    assert Inbox(r).dead_letters() == [] and Inbox(r).depth()["pending"] == 0
    before = len(sandbox.requests("kf/send_msg"))
    say(sandbox, service, runtime, "wmHeld00001", "在吗？？？")
    assert len(sandbox.requests("kf/send_msg")) == before  # nothing sent while a person holds the chat
    sandbox.add_event({"event_type": "session_status_change", "change_type": 3, "external_userid": "wmHeld00001",
                       "old_servicer_userid": "li.consultant"})
    sandbox.set_service_state("wmHeld00001", 0)
    say(sandbox, service, runtime, "wmHeld00001", "发票怎么开")  # the session ended: the bot answers again
    assert len(transcript(sandbox, "wmHeld00001")) == 2


def test_a_pick_up_in_the_wecom_client_silences_the_bot(sandbox, service, runtime):
    say(sandbox, service, runtime, "wmPicked001", "你好")
    sandbox.add_event({"event_type": "session_status_change", "change_type": 1, "external_userid": "wmPicked001",
                       "new_servicer_userid": "wang.consultant"})
    sandbox.set_service_state("wmPicked001", 3, "wang.consultant")
    before = len(sandbox.requests("kf/send_msg"))
    say(sandbox, service, runtime, "wmPicked001", "在吗")
    assert len(sandbox.requests("kf/send_msg")) == before


def test_a_first_hello_whose_welcome_send_fails_for_now_still_gets_it_once(sandbox, service, runtime):
    sandbox.queue("kf/send_msg", {"_http_status": 502}, times=4)  # one attempt's tries, none performed
    say(sandbox, service, runtime, "wmRetryHi01", "你好")
    lines = transcript(sandbox, "wmRetryHi01")
    assert len(lines) == 1 and lines[0].startswith("您好，欢迎")


def test_a_95018_while_the_session_changes_back_is_tried_again(sandbox, service, runtime):
    say(sandbox, service, runtime, "wmFlip00001", "你好")
    sandbox.queue("kf/send_msg", {"errcode": 95018, "errmsg": "send msg session status invalid"})  # state is 0
    say(sandbox, service, runtime, "wmFlip00001", "发票怎么开")
    assert len(transcript(sandbox, "wmFlip00001")) == 2  # answered on the retry, not dropped


def test_the_handoff_text_is_sent_before_the_transfer_even_when_it_needs_a_retry(sandbox, service, runtime):
    sandbox.set_servicers({"li.consultant": 0, "wang.consultant": 0, "zhao.supervisor": 0})
    runtime.clock = Clock(last_weekday_at(0, 10))
    say(sandbox, service, runtime, "wmOrder0001", "你好")
    sandbox.queue("kf/send_msg", {"_http_status": 502}, times=4)  # the text fails for this attempt
    say(sandbox, service, runtime, "wmOrder0001", "这个沙发多少钱")
    lines = transcript(sandbox, "wmOrder0001")[1:]
    assert "小李" in lines[0] and lines[1] == "[business_card]"
    text_at = next(d["at"] for d in sandbox.delivered() if d["touser"] == "wmOrder0001" and "小李" in str(d))
    trans_at = next(q["at"] for q in sandbox.requests("kf/service_state/trans"))
    assert text_at < trans_at and sandbox.service_state("wmOrder0001") == 3


def test_two_quick_messages_of_one_customer_are_handled_one_after_the_other(sandbox, service, runtime):
    import dataclasses
    import threading

    from bot.queue.worker import Worker

    say(sandbox, service, runtime, "wmQuick001", "你好")  # known from now on
    one = dataclasses.replace(runtime.settings.worker, batch=1)  # each worker takes one entry
    first, second = (Worker(runtime.inbox, runtime.parts(), one, name) for name in ("w-first", "w-second"))
    sandbox.add_customer_text("wmQuick001", "怎么安装")
    sandbox.add_customer_text("wmQuick001", "几天发货")
    assert service.post(kf_notice(sandbox.callback_token())).status_code == 200
    assert first.run_once() == 1 and runtime.inbox.depth()["length"] == 2  # the pull queued both messages
    sandbox.latency = 0.3  # every WeCom call now takes 0.3 s: two workers on the two messages overlap
    threads = [threading.Thread(target=first.run_once), threading.Thread(target=second.run_once)]
    threads[0].start()
    threading.Event().wait(0.1)
    threads[1].start()
    for t in threads:
        t.join(10)
    replies = [d for d in sandbox.delivered() if d["touser"] == "wmQuick001"][1:]
    assert len(replies) == 2
    # the second message waited for the first one's reply: its answer came a whole WeCom call later, after it
    assert replies[1]["at"] - replies[0]["at"] >= 0.25
    assert "安装" in replies[0]["text"]["content"] and "安装" not in replies[1]["text"]["content"]
    assert not runtime.r.exists("wecom:cust:{wmQuick001}:turn")  # given back
