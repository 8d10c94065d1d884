"""Handoff records on a real Redis: idempotent open, atomic claims, replies, close, SLA, numbers."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.records import handoff_stats
from bot.records.handoff_stats import percentile
from bot.records.handoffs import Handoffs

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 1, 26, 10, 0, tzinfo=TZ)
KF = "wkSandboxKf0000000000000000000001"
C1, C2 = "wmCustomer0001", "wmCustomer0002"


def mins(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture()
def book(r) -> Handoffs:
    return Handoffs(r, TZ)


def open_(book: Handoffs, customer: str = C1, msgid: str = "msg1", now: datetime = T0, intent: str = "price",
          consultant: str | None = "li.consultant", sla: int = 300, **kw):
    return book.open(customer, KF, intent, ["多少钱"], "这个沙发多少钱", consultant, sla, now, msgid, **kw)


def test_open_is_idempotent_and_one_per_customer(book: Handoffs, r) -> None:
    h = open_(book)
    assert h.state == "open" and h.customer == C1 and h.matched == ("多少钱",) and h.cause_msgid == "msg1"
    assert h.created_at == T0 and h.created_at.tzinfo == TZ and h.deadline == T0 + mins(5)
    assert r.exists(f"wecom:handoff:{{{h.id}}}")
    assert open_(book) == h  # replayed message
    second = open_(book, msgid="msg2", now=T0 + mins(1), intent="complaint")
    assert second == h and second.cause_msgid == "msg1"  # still the open one
    assert book.open_for(C1) == h and book.open_for(C2) is None
    other = open_(book, customer=C2, msgid="msg1")
    assert other.id != h.id
    assert {x.id for x in book.list()} == {h.id, other.id} and book.list(state="claimed") == []
    with pytest.raises(ValueError):
        book.open(C1, KF, "price", [], "x", None, 300, datetime(2026, 1, 1), "m")


def test_concurrent_opens_make_one_handoff(book: Handoffs) -> None:
    results, barrier = [], threading.Barrier(10)

    def go(i: int) -> None:
        barrier.wait()
        results.append(open_(book, msgid=f"m{i}", now=T0 + timedelta(seconds=i)))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({h.id for h in results}) == 1 and len(book.list()) == 1


def test_concurrent_claims_exactly_one_wins(book: Handoffs) -> None:
    h = open_(book)
    results, barrier = {}, threading.Barrier(10)

    def go(i: int) -> None:
        barrier.wait()
        results[f"user{i}"] = book.claim(h.id, f"user{i}", T0 + mins(1))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(res.status for res in results.values())
    assert statuses == ["claimed"] + ["taken_by_other"] * 9
    winner = next(u for u, res in results.items() if res.status == "claimed")
    assert all(res.handoff.claimed_by == winner for res in results.values())
    assert book.claim(h.id, winner, T0 + mins(2)).status == "already_yours"
    got = book.get(h.id)
    assert got.state == "claimed" and got.claimed_at == T0 + mins(1)
    assert book.claim("nope", "x", T0).status == "unknown" and book.claim("nope", "x", T0).handoff is None


def test_first_reply_close_and_owner(book: Handoffs) -> None:
    h = open_(book)
    assert book.first_reply(C2, "li.consultant", T0) is None  # no handoff for that customer
    answered = book.first_reply(C1, "wang.consultant", T0 + mins(3))
    assert answered.state == "answered" and answered.first_reply_at == T0 + mins(3)
    assert answered.claimed_by == "wang.consultant" and answered.first_reply_by == "wang.consultant"  # reply = claim
    again = book.first_reply(C1, "li.consultant", T0 + mins(4))
    assert again.first_reply_at == T0 + mins(3)  # only the first counts
    assert book.claim(h.id, "li.consultant", T0 + mins(4)).status == "taken_by_other"
    assert book.owner_of(C1) == "wang.consultant"
    assert book.load() == {"wang.consultant": 1}
    closed = book.close(C1, T0 + mins(20), "session_end")
    assert closed.state == "closed" and closed.closed_at == T0 + mins(20) and closed.close_reason == "session_end"
    assert book.open_for(C1) is None and book.close(C1, T0 + mins(21), "again") is None
    assert book.close_id(h.id, T0 + mins(22), "again").closed_at == T0 + mins(20)  # first close stays
    assert book.claim(h.id, "li.consultant", T0 + mins(30)).status == "closed"
    assert book.load() == {}
    assert open_(book).id == h.id  # a replay of the old message is still that handoff
    fresh = open_(book, msgid="msg9", now=T0 + mins(40))
    assert fresh.id != h.id and fresh.state == "open" and book.open_for(C1) == fresh


def test_reply_before_the_handoff_does_not_count(book: Handoffs) -> None:
    open_(book, now=T0)
    assert book.first_reply(C1, "li.consultant", T0 - mins(2)) is None
    assert book.first_reply(C1, "li.consultant", T0 - timedelta(seconds=0.5)).state == "answered"


def test_escalation_ladder_due_times(book: Handoffs) -> None:
    h = open_(book, sla=300)
    other = open_(book, customer=C2, msgid="m2", now=T0 + mins(1), sla=180, intent="complaint")
    assert book.due_for_escalation(T0 + mins(3)) == []
    assert [x.id for x in book.due_for_escalation(T0 + mins(4))] == [other.id]
    assert [x.id for x in book.due_for_escalation(T0 + mins(5))] == [other.id, h.id]
    book.claim(h.id, "li.consultant", T0 + mins(2))  # claimed but unanswered: still due
    up = book.escalate(h.id, 1, "wang.consultant", T0 + mins(5))
    assert [(e.level, e.to, e.at) for e in up.escalations] == [(1, "wang.consultant", T0 + mins(5))]
    assert book.escalate(h.id, 1, "wang.consultant", T0 + mins(6)).escalations == up.escalations  # idempotent
    assert h.id not in {x.id for x in book.due_for_escalation(T0 + mins(9))}
    assert h.id in {x.id for x in book.due_for_escalation(T0 + mins(10))}
    book.escalate(h.id, 2, "zhao.supervisor", T0 + mins(10), next_in=mins(2))
    assert h.id in {x.id for x in book.due_for_escalation(T0 + mins(12))}
    top = book.escalate(h.id, 3, "robot", T0 + mins(12))
    assert top.level == 3 and [e.level for e in top.escalations] == [1, 2, 3]
    assert h.id not in {x.id for x in book.due_for_escalation(T0 + mins(600))}  # the ladder ends
    book.first_reply(C2, "li.consultant", T0 + mins(4))
    assert book.due_for_escalation(T0 + mins(600)) == []
    assert book.escalate(other.id, 1, "x", T0 + mins(700)).escalations == ()  # answered: nothing to record
    assert book.escalate("nope", 1, "x", T0) is None
    with pytest.raises(ValueError):
        book.escalate(h.id, 4, "x", T0)


def test_off_hours_alert_and_sla_start(book: Handoffs) -> None:
    morning = datetime(2026, 1, 27, 9, 0, tzinfo=TZ)
    h = open_(book, now=datetime(2026, 1, 26, 22, 0, tzinfo=TZ), off_hours=True, queued_until=morning)
    assert h.off_hours and h.sla_start == morning and h.deadline == morning + mins(5)
    assert book.due_for_alert(morning - mins(1)) == [] and book.due_for_escalation(morning) == []
    assert [x.id for x in book.due_for_alert(morning)] == [h.id]
    carded = book.set_card(h.id, "ho-1", "RC1", "li.consultant")
    assert carded.task_id == "ho-1" and carded.response_code == "RC1"
    book.set_card(h.id, "ho-2", "RC2", "wang.consultant")
    book.set_card(h.id, "ho-2", "RC2", "wang.consultant")
    got = book.get(h.id)
    assert got.task_id == "ho-1" and [c["task_id"] for c in got.cards] == ["ho-1", "ho-2"]
    assert book.due_for_alert(morning + mins(1)) == []
    assert [x.id for x in book.due_for_escalation(morning + mins(5))] == [h.id]
    assert book.set_card("nope", "t", "r") is None


def test_reassign_and_load(book: Handoffs) -> None:
    a = open_(book, consultant="li.consultant")
    open_(book, customer=C2, msgid="m2", consultant="li.consultant")
    open_(book, customer="wmCustomer0003", msgid="m3", consultant=None)
    assert book.load() == {"li.consultant": 2}
    book.claim(a.id, "li.consultant", T0 + mins(1))
    moved = book.reassign(a.id, "wang.consultant", T0 + mins(2))  # 转给同事 releases the claim
    assert moved.consultant == "wang.consultant" and moved.state == "open" and moved.claimed_by is None
    assert book.load() == {"li.consultant": 1, "wang.consultant": 1}
    book.first_reply(C1, "wang.consultant", T0 + mins(3))
    assert book.reassign(a.id, "li.consultant", T0 + mins(4)) is None  # answered: too late


def test_percentile() -> None:
    assert percentile([], 0.5) is None and percentile([7], 0.9) == 7
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile(list(range(1, 11)), 0.9) == pytest.approx(9.1)


def test_stats(book: Handoffs) -> None:
    # five price handoffs to li answered after 1..5 minutes (SLA 3 min), one complaint unanswered
    for i in range(1, 6):
        h = open_(book, customer=f"wm{i}", msgid=f"m{i}", now=T0, sla=180)
        book.claim(h.id, "li.consultant", T0 + mins(i) - timedelta(seconds=30))
        book.first_reply(f"wm{i}", "li.consultant", T0 + mins(i))
    late = open_(book, customer="wm9", msgid="m9", now=T0, sla=180, intent="complaint", consultant="wang.consultant")
    book.escalate(late.id, 1, "li.consultant", T0 + mins(3))
    pending = open_(book, customer="wm10", msgid="m10", now=T0 + mins(9), sla=180, consultant=None)
    open_(book, customer="wm11", msgid="m11", now=T0 - timedelta(days=10))
    stats = handoff_stats.stats(book, T0 + mins(10), since=T0 - timedelta(days=1))
    total = stats["total"]
    assert total["count"] == 7 and total["answered"] == 5 and total["open"] == 2 and total["claimed"] == 0
    assert total["escalations"] == 1 and total["escalated"] == 1 and total["escalations_by_level"] == {"1": 1}
    reply = stats["by_intent"]["price"]["time_to_first_reply"]
    assert reply == {"n": 5, "median": 180.0, "p90": 276.0, "within_sla": 0.6}
    claim = stats["by_intent"]["price"]["time_to_claim"]
    assert claim["median"] == 150.0 and claim["within_sla"] == 0.6
    # the unanswered complaint is past its SLA: a miss; the new one is still within: left out
    assert stats["by_intent"]["complaint"]["time_to_first_reply"] == {"n": 0, "median": None, "p90": None,
                                                                      "within_sla": 0.0}
    assert stats["total"]["time_to_first_reply"]["within_sla"] == pytest.approx(3 / 6, abs=1e-3)
    assert set(stats["by_consultant"]) == {"li.consultant", "wang.consultant", "queue"}
    assert stats["by_consultant"]["li.consultant"]["count"] == 5
    assert pending.id  # counted in total, left out of the share
