"""Replies to SOP steps end to end: the day-1 question goes out over kf, the customer answers "2", and the
bot tags, answers and issues the coupon; real callbacks, real Redis, the sandbox as WeCom, one shared clock."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import pytest

from sop import journeys
from tests.support import drain, kf_notice, make_settings, sop_due

CUSTOMER = "wmAnswers"
QUESTION = "回复数字即可"
PROMO_REPLY = "优惠活动一有消息就通知您"
PROMO_TAG_ID = "etPromo"


def _option(text: str) -> journeys.ReplyOption:
    """The shipped day-1 option that `text` chooses."""
    (week,) = [j for j in journeys.load() if j.id == "new_customer_week"]
    step = week.step("day1_hello")
    assert step is not None
    return next(o for o in step.replies if text in o.words)


@pytest.fixture()
def settings(sandbox, redis_url, r):
    """The repository's settings, with 关注优惠 mirrored to a WeCom corp tag (so the sandbox sees the tag)."""
    s = make_settings(sandbox.url, redis_url)[0]
    return dataclasses.replace(s, corp_tags={"关注优惠": PROMO_TAG_ID})


class Customer:
    """One customer of the service under test, on the sandbox's clock (sandbox.advance() moves the runtime
    too), with the one scheduler of that runtime (a second one would stand by behind the first one's lease)."""

    def __init__(self, sandbox, service, runtime, id: str = CUSTOMER) -> None:
        runtime.clock = sandbox.now
        self.sandbox, self.service, self.runtime, self.id = sandbox, service, runtime, id
        self.scheduler = runtime.scheduler(threading.Event())

    def pull(self) -> None:
        assert self.service.post(kf_notice(self.sandbox.callback_token(), create_time=time.time_ns())).status_code == 200
        drain(self.runtime.worker())

    def write(self, text: str) -> list[dict]:
        """The customer writes `text`; what the sandbox was asked to do about it (kf sends and tag marks)."""
        before = len(self.sandbox.requests())
        self.sandbox.add_customer_text(self.id, text)
        self.pull()
        return [r for r in self.sandbox.requests()[before:]
                if r["path"] in ("/cgi-bin/kf/send_msg", "/cgi-bin/externalcontact/mark_tag")]

    def tick(self) -> None:
        self.scheduler.tick(self.sandbox.now())
        drain(self.runtime.worker())

    def day1_question(self) -> Customer:
        """A new customer writes, gets the welcome touch, then (a day later, 20:00) the day-1 question over kf."""
        self.runtime.customers.set_owner(self.id, "li.consultant")  # a contact of a staff member: tags are mirrored
        self.write("你好")  # first contact: enrolled in the new-customer week
        self.tick()  # the welcome step
        due = next(score for member, score in sop_due(self.runtime.r).items()
                   if member.startswith(f"new_customer_week|day1_hello|{self.id}|"))
        self.sandbox.advance(due - self.sandbox.now() + 1)
        self.tick()
        mine = [d for d in self.sandbox.delivered() if d["touser"] == self.id]
        assert QUESTION in mine[-1]["text"]["content"]
        return self

    @property
    def tags(self) -> set[str]:
        return set(self.runtime.customers.get(self.id).tags)

    def coupons(self) -> list:
        return self.runtime.coupons().coupons_of(self.id)


def texts(requests: list[dict]) -> list[str]:
    return [r["json"]["text"]["content"] for r in requests if r["path"] == "/cgi-bin/kf/send_msg"]


@pytest.mark.parametrize("answer", ["2", "２", "2️⃣", "2。", "选2", "优惠活动"])
def test_answer_2_tags_replies_and_issues_the_coupon_in_order(sandbox, service, runtime, answer):
    c = Customer(sandbox, service, runtime).day1_question()
    requests = c.write(answer)
    assert [r["path"].rsplit("/", 1)[1] for r in requests] == ["mark_tag", "send_msg", "send_msg"]
    assert requests[0]["json"]["add_tag"] == [PROMO_TAG_ID] and requests[0]["json"]["external_userid"] == CUSTOMER
    reply, coupon_text = texts(requests)
    assert reply == _option("2").reply
    (coupon,) = c.coupons()
    assert coupon.code in coupon_text
    assert "关注优惠" in c.tags


@pytest.mark.parametrize(("answer", "tag"), [("1", "关注新品"), ("保养", "关注保养")])
def test_answers_1_and_3_tag_and_reply_without_a_coupon(sandbox, service, runtime, answer, tag):
    c = Customer(sandbox, service, runtime).day1_question()
    assert texts(c.write(answer)) == [_option(answer).reply]
    assert tag in c.tags and c.coupons() == []


def test_the_question_is_answered_once_and_other_messages_route_as_usual(sandbox, service, runtime):
    c = Customer(sandbox, service, runtime).day1_question()
    other = texts(c.write("你们几点下班"))  # not an option: the usual route, and the question stays open
    assert other and PROMO_REPLY not in "".join(other) and "关注优惠" not in c.tags
    assert texts(c.write("2"))[0] == _option("2").reply
    again = texts(c.write("2"))  # answered already: "2" is just a message again
    assert again and PROMO_REPLY not in "".join(again)
    assert len(c.coupons()) == 1


def test_after_48_hours_2_routes_as_usual(sandbox, service, runtime):
    c = Customer(sandbox, service, runtime).day1_question()
    sandbox.advance(48 * 3600 + 60)
    late = c.write("2")
    assert texts(late) and PROMO_REPLY not in "".join(texts(late))
    assert not [r for r in late if r["path"].endswith("mark_tag")] and "关注优惠" not in c.tags


def test_a_replayed_answer_is_performed_once(sandbox, service, runtime):
    c = Customer(sandbox, service, runtime).day1_question()
    assert len(c.write("2")) == 3
    runtime.r.delete(f"wecom:kf:{{{sandbox.open_kfid}}}:cursor")  # the cursor lost: the page is pulled again
    before = len(sandbox.requests())
    c.pull()
    assert not [r for r in sandbox.requests()[before:] if r["path"].endswith(("send_msg", "mark_tag"))]


def test_an_option_can_enrol_a_journey(sandbox, redis_url, r, tmp_path):
    from bot.content import Content
    from bot.runtime import Runtime
    from bot.web.envelope import CallbackCrypto
    from tests.support import Service

    copy = tmp_path / "journeys"
    shutil.copytree(journeys.DEFAULT_DIR, copy)
    path = copy / "new_customer_week.yaml"
    path.write_text(path.read_text().replace("        tag: 关注保养\n",
                                             "        tag: 关注保养\n        journey: purchase_guide\n"))
    s = make_settings(sandbox.url, redis_url)[0]
    s = dataclasses.replace(s, content={**s.content, "journeys": copy})
    runtime = Runtime(s, r, content=Content(s))
    service = Service(runtime.app(), CallbackCrypto(s.token, s.aes_key, s.corp_id), s.callback_path)
    try:
        c = Customer(sandbox, service, runtime).day1_question()
        assert texts(c.write("3")) == [_option("3").reply]
    finally:
        service.stop()
    assert [m for m in sop_due(r) if m.startswith(f"purchase_guide|day3_guide|{CUSTOMER}|")]


def test_one_question_gets_one_answer_and_a_retried_touch_does_not_reopen_it(r):
    from sop.replies import OFFER, Offers

    offers, options = Offers(r), (journeys.ReplyOption(("1",), tag="a"), journeys.ReplyOption(("2",), tag="b"))
    sent = time.time()
    assert offers.offer("c1", "j", "q", "t1", options, sent, 48)
    assert 48 * 3600 < r.ttl(OFFER % "c1") <= 48 * 3600 + 60
    assert offers.answer("c1", "m0", "3", sent + 5) is None  # not an option: the question stays open
    first = offers.answer("c1", "m1", "2", sent + 10)
    assert first is not None and (first.touch_id, first.option.tag) == ("t1", "b")
    assert offers.answer("c1", "m2", "1", sent + 11) is None  # another message: answered already
    assert offers.answer("c1", "m1", "2", sent + 10) == first  # the answering message retried: the same answer
    assert not offers.offer("c1", "j", "q", "t1", options, sent + 20, 48)  # the same touch again: still answered
    assert offers.answer("c1", "m3", "1", sent + 30) is None
    assert offers.offer("c1", "j", "q2", "t2", options, sent + 40, 1)  # a later question replaces it
    assert offers.answer("c1", "m4", "1", sent + 40 + 3601) is None  # too late
    assert offers.answer("c1", "m5", "1", sent + 38) is None  # written before the question was sent
    assert offers.answer("c1", "m6", "1", sent + 60).option.tag == "a"
