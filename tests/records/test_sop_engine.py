"""The SOP engine on a real Redis: enrolment, ticks with an injected clock, leases, concurrency, reload."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.queue.inbox import Inbox
from bot.records.customers import Customer, Customers
from sop import journeys
from sop.engine import PENDING, Engine, pending_counts
from sop.journeys import Journey, Segment, Step, Trigger
from sop.plan import Rules
from tests.support import engine_for, sop_due, sop_keys

SH = ZoneInfo("Asia/Shanghai")
MON_2350 = datetime(2024, 12, 2, 23, 50, tzinfo=SH)
ENTRY_KEYS = {"touch_id", "journey", "step", "customer", "channel", "content", "kind", "due", "at", "decision",
              "reason", "priority"}


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2024, 12, day, hh, mm, tzinfo=SH)


def step(sid, wait=timedelta(0), kind="education", channel="auto", at_=None, text="你好"):
    return Step(sid, wait, kind, channel, {"text": text}, at_, None)


def week(**kw) -> Journey:
    steps = (step("welcome", kind="welcome"), step("d1", timedelta(days=1), at_=time(10)),
             step("d2", timedelta(days=2), at_=time(10), kind="offer"))
    return Journey("week", "新客", 50, Trigger("customer_added"), steps, kw.get("stop_on", frozenset()), Segment())


def entries(r) -> list[dict]:
    return [json.loads(e.data) for e in Inbox(r).peek() if e.kind == "touch"]


def run_until(engine: Engine, now: datetime) -> None:
    while engine.tick(now).claimed:
        pass


def test_welcome_at_once_then_day1_at_ten_not_at_night(r):
    e = engine_for(r, [week()], Rules(), SH)
    (w,) = e.welcome("c1", "customer_added", MON_2350)
    assert w.step == "welcome" and w.content == {"text": "你好"}
    assert e.welcome("c1", "customer_added", MON_2350) == []  # idempotent
    assert e.tick(at(3, 9, 59)).claimed == 0
    res = e.tick(at(3, 10))
    assert (res.claimed, res.sent, res.emitted) == (1, 1, 1)
    (entry,) = entries(r)
    assert set(entry) == ENTRY_KEYS
    assert (entry["step"], entry["channel"], entry["decision"], entry["at"]) == (
        "d1", "mass_task", "send", "2024-12-03T10:00:00+08:00")
    assert e.history("c1").sent_by_day == {date(2024, 12, 2): 1, date(2024, 12, 3): 1}


def test_enroll_is_idempotent_and_night_steps_defer(r):
    j = Journey("late", "晚", 10, Trigger("tag", tag="要优惠"), (step("a", timedelta(hours=2)),), frozenset(), Segment())
    e = engine_for(r, [j], Rules(), SH)
    assert e.enroll("c1", "tag", at(2, 21), tag="要优惠") == 1
    assert e.enroll("c1", "tag", at(2, 21), tag="要优惠") == 0
    assert e.enroll("c1", "tag", at(2, 21), tag="其他") == 0
    res = e.tick(at(2, 23))
    assert res.deferred == 1 and res.reasons["deferred:quiet_hours"] == 1
    assert next(iter(sop_due(r).values())) == at(3, 8).timestamp()
    assert e.tick(at(3, 8)).sent == 1
    assert e.counters()["deferred"] == 1 and e.counters()["sent"] == 1


def test_kf_window_then_mass_task_quota_then_staff_reminder(r):
    steps = tuple(step(f"s{i}", timedelta(days=i), at_=time(12), kind=f"k{i}") for i in range(1, 8))
    j = Journey("many", "多", 10, Trigger("purchase"), steps, frozenset(), Segment())
    e = engine_for(r, [j], Rules(), SH)
    Customers(r).saw_message("c1", at(1, 11).timestamp())
    e.enroll("c1", "purchase", at(1, 12))
    for day in range(2, 9):
        run_until(e, at(day, 12))
    got = [(x["step"], x["channel"], x["decision"], x["reason"]) for x in entries(r)]
    assert got == [("s1", "kf", "send", "kf_window_open"), ("s2", "mass_task", "send", "kf_window_closed"),
                   ("s3", "mass_task", "send", "kf_window_closed"), ("s4", "mass_task", "send", "kf_window_closed"),
                   ("s5", "mass_task", "send", "kf_window_closed"), ("s6", "staff", "remind", "mass_quota_used"),
                   ("s7", "staff", "remind", "mass_quota_used")]
    assert e.counters()["reminded:mass_quota_used"] == 2


def test_stop_conditions(r):
    j = Journey("wb", "唤醒", 10, Trigger("silence", days=30), (step("a", at_=time(20)), step("b", timedelta(days=3), at_=time(20))),
                frozenset({"replied", "handed_off"}), Segment())
    e = engine_for(r, [j], Rules(), SH)
    e.enroll("c1", "silence", at(1, 9), days=30)
    e.enroll("c2", "silence", at(1, 9), days=30)
    e.enroll("c3", "silence", at(1, 9), days=30)
    e.enroll("c4", "silence", at(1, 9), days=30)
    e.note_customer_message("c1", at(1, 12))
    e.note_fact("c2", "handed_off", at(1, 12))
    Customers(r).set_unsubscribed("c3")
    res = e.tick(at(1, 20))
    assert res.reasons["skipped:stopped:replied"] == 1 and res.reasons["skipped:stopped:handed_off"] == 1
    assert res.reasons["skipped:stopped:unsubscribed"] == 1 and res.sent == 1
    assert [m.split("|")[2] for m in list(sop_due(r))] == ["c4"]  # stopped journeys do not continue
    assert r.xlen("wecom:sop:{sop}:skips") == 3


def test_ignored_three_in_a_row_then_a_reply_resets(r):
    steps = tuple(step(f"o{i}", timedelta(days=i), at_=time(12), kind="offer") for i in range(1, 6))
    j = Journey("offers", "券", 10, Trigger("purchase"), steps, frozenset(), Segment())
    e = engine_for(r, [j], Rules(mass_quota=99), SH)
    e.enroll("c1", "purchase", at(1, 12))
    for day in (2, 3, 4, 5):
        run_until(e, at(day, 12))
    assert e.counters()["skipped:ignored:offer"] == 1
    assert "c1|offer" in e.fatigued() and "c1|offer" in e.fatigued(["c1"])
    assert not r.exists("wecom:sop:{sop}:fatigued")  # in the customer's history: nothing grows in one key
    e.note_customer_message("c1", at(5, 13))
    run_until(e, at(6, 12))
    assert [x["step"] for x in entries(r)] == ["o1", "o2", "o3", "o5"]


def test_two_engines_ticking_concurrently_never_emit_a_touch_twice(r, redis_url):
    from bot.redis_server import connect

    j = Journey("one", "一", 10, Trigger("purchase"), (step("a", timedelta(hours=1)),), frozenset(), Segment())
    engine_for(r, [j], Rules(daily_cap=99, mass_quota=99), SH).enroll_many(
        (f"c{i}", "purchase", at(2, 9), {}) for i in range(3000))
    engines = [engine_for(connect(redis_url), [j], Rules(daily_cap=99, mass_quota=99), SH) for _ in range(4)]
    claimed = [0] * len(engines)

    def work(i: int) -> None:
        while n := engines[i].tick(at(2, 12), batch=50).claimed:
            claimed[i] += n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [x["touch_id"] for x in entries(r)]
    assert sum(claimed) == 3000 and len(ids) == 3000 and len(set(ids)) == 3000
    assert all(claimed)  # every engine did some of the work
    assert pending_counts(r)["due"] == 0 and pending_counts(r)["inflight"] == 0


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["before_put", "after_put"])
def test_crash_mid_batch_then_another_scheduler_emits_each_touch_once(r, where):
    j = Journey("one", "一", 10, Trigger("purchase"), (step("a", timedelta(hours=1)), step("b", timedelta(days=1), at_=time(12))),
                frozenset(), Segment())
    dead = engine_for(r, [j], Rules(), SH)
    dead.enroll_many((f"c{i}", "purchase", at(2, 9), {}) for i in range(20))
    real = dead.emit

    def crashing(items, ttl):
        if where == "after_put":
            real(items, ttl)
        raise Crash()

    dead.emit = crashing
    with pytest.raises(Crash):
        dead.tick(at(2, 12))
    crashed = pending_counts(r)["inflight"]  # all 20 on one shard; on a cluster those of the first shard ticked
    assert crashed > 0  # claimed and leased, not lost
    other = engine_for(r, [j], Rules(), SH)
    assert other.tick(at(2, 12)).claimed == 20 - crashed  # the lease still holds
    res = other.tick(at(2, 12, 2))  # lease (60 s) expired: reclaimed
    assert res.claimed == crashed and res.emitted == (crashed if where == "before_put" else 0)
    ids = [x["touch_id"] for x in entries(r)]
    assert len(ids) == 20 == len(set(ids))
    assert pending_counts(r)["inflight"] == 0 and pending_counts(r)["due"] == 20  # the next steps are scheduled once


def test_reload_invalid_keeps_old_and_valid_moves_by_step_id(r, tmp_path: Path):
    src = (journeys.DEFAULT_DIR / "purchase_guide.yaml").read_text(encoding="utf-8")
    (tmp_path / "p.yaml").write_text(src, encoding="utf-8")
    e = engine_for(r, journeys.load(tmp_path), Rules(), SH)
    e.enroll("c1", "purchase", at(1, 12))
    (tmp_path / "p.yaml").write_text(src.replace("wait: 3d", "wait: three days"), encoding="utf-8")
    errors = e.reload(tmp_path)
    assert errors and ":" in str(errors[0]) and "purchase_guide" in e.journeys
    (tmp_path / "p.yaml").write_text(src.replace("宝贝收到了吗？", "新版：宝贝收到了吗？"), encoding="utf-8")
    assert e.reload(tmp_path) == []
    run_until(e, at(4, 20))
    (entry,) = entries(r)
    assert entry["step"] == "day3_guide" and entry["content"]["text"].startswith("新版：")


def test_removed_journey_is_skipped(r, tmp_path: Path):
    e = engine_for(r, [week()], Rules(), SH)
    e.enroll("c1", "customer_added", MON_2350)
    e.journeys = {}
    assert e.tick(at(3, 0)).reasons["skipped:journey_removed"] == 1


def test_scan_calendar_silence_and_birthdays(r):
    member = Journey("md", "会员日", 40, Trigger("calendar", monthday=18), (step("a", at_=time(10)),),
                     frozenset(), Segment(lifecycle=("active", "silent")))
    wb = Journey("wb", "唤醒", 30, Trigger("silence", days=30), (step("a", at_=time(20)),), frozenset({"replied"}), Segment())
    bday = Journey("bd", "生日", 90, Trigger("birthday"), (step("a", at_=time(9, 30), kind="greeting"),), frozenset(), Segment())
    e = engine_for(r, [member, wb, bday], Rules(), SH)
    old = at(1, 9) - timedelta(days=40)
    people = [Customer("new", first_seen=at(15, 9).timestamp(), last_inbound=at(15, 9).timestamp()),
              Customer("old", first_seen=old.timestamp(), last_inbound=(at(18, 8) - timedelta(days=30)).timestamp())]
    e.set_birthday("new", date(1990, 12, 18))
    assert e.scan_calendar(at(17, 9), people) == 0
    assert e.scan_calendar(at(18, 0, 5), people) == 2  # "old" for member day, "new" for the birthday
    assert e.scan_calendar(at(18, 6), people) == 0  # idempotent within the day
    assert e.scan_silence(at(18, 9), people) == 1 and e.scan_silence(at(18, 10), people) == 0
    run_until(e, at(18, 20))
    assert sorted((x["journey"], x["customer"]) for x in entries(r)) == [("bd", "new"), ("md", "old"), ("wb", "old")]


def test_naive_times_are_refused(r):
    e = engine_for(r, [week()], Rules(), SH)
    with pytest.raises(ValueError):
        e.enroll("c1", "customer_added", datetime(2024, 12, 2, 10))


def tagged() -> Journey:
    """Two steps, started by the 要优惠 tag."""
    return Journey("tagged", "标签", 10, Trigger("tag", tag="要优惠"),
                   (step("a", timedelta(days=1), at_=time(12)), step("b", timedelta(days=2), at_=time(12))),
                   frozenset(), Segment())


def test_a_trigger_while_the_run_is_pending_changes_nothing_and_a_later_one_restarts_it(r):
    e = engine_for(r, [tagged()], Rules(), SH)
    assert e.enroll("c1", "tag", at(2, 9), tag="要优惠") == 1
    assert e.enroll("c1", "tag", at(1, 9), tag="要优惠") == 0  # older than the live one
    assert e.enroll("c1", "tag", at(2, 15), tag="要优惠") == 0  # step a is pending: the run goes on
    assert [m.split("|")[1] for m in list(sop_due(r))] == ["a"]
    assert e.tick(at(3, 12)).sent == 1
    assert e.enroll("c1", "tag", at(3, 15), tag="要优惠") == 0  # step b is pending now
    assert [m.split("|")[1] for m in list(sop_due(r))] == ["b"]
    assert e.tick(at(4, 12)).sent == 1 and pending_counts(r)["due"] == 0
    assert sum(r.hlen(k) for k in sop_keys(r, PENDING)) == 0
    assert e.enroll("c1", "tag", at(4, 15), tag="要优惠") == 1  # the run ended: a newer trigger starts it again
    assert pending_counts(r)["due"] == 1


def test_a_newer_trigger_supersedes_a_pending_step_written_before_the_pending_index(r):
    e = engine_for(r, [tagged()], Rules(), SH)
    assert e.enroll("c1", "tag", at(2, 9), tag="要优惠") == 1
    for key in sop_keys(r, PENDING):  # as an engine before PENDING left it
        r.delete(key)
    assert e.enroll("c1", "tag", at(2, 15), tag="要优惠") == 1  # restarts the journey
    res = e.tick(at(3, 12))
    assert res.reasons["skipped:superseded"] == 1 and res.sent == 1


def test_a_second_price_question_keeps_one_follow_up_pending(r):
    e = engine_for(r, list(journeys.load()), Rules(), SH)
    assert e.enroll("c1", "intent", at(2, 10), intent="price") == 1
    assert e.enroll("c1", "intent", at(2, 16), intent="price") == 0
    assert e.enroll("c1", "intent", at(3, 11), intent="price") == 0
    assert [m.split("|")[:3] for m in list(sop_due(r))] == [["price_followup", "followup", "c1"]]
    assert next(iter(sop_due(r).values())) == at(4, 10).timestamp()  # 48 h after the first question
    run_until(e, at(4, 10))
    assert [(x["journey"], x["decision"]) for x in entries(r)] == [("price_followup", "remind")]
    assert e.enroll("c1", "intent", at(5, 10), intent="price") == 1  # asked again after the follow-up: a new one


def test_note_failed_gives_the_slot_back_and_note_sent_counts_manual_sends(r):
    e = engine_for(r, [week()], Rules(daily_cap=1), SH)
    e.enroll("c1", "customer_added", at(2, 9))
    e.tick(at(2, 9))  # welcome via mass task (no welcome code)
    (entry,) = entries(r)
    assert e.history("c1").sent_by_day[date(2024, 12, 2)] == 1
    e.note_failed("c1", entry, at(2, 9, 1), entry["channel"])
    h = e.history("c1")
    assert h.sent_by_day[date(2024, 12, 2)] == 0 and h.mass_by_month["2024-12"] == 0 and h.ignored["welcome"] == 0
    e.note_sent("c1", entry, at(2, 9, 5), "manual")
    h = e.history("c1")
    assert h.sent_by_day[date(2024, 12, 2)] == 1 and h.mass_by_month["2024-12"] == 0 and h.ignored["welcome"] == 1


def test_released_claims_of_a_dead_holder_are_claimed_again_at_once_and_emitted_once(r):
    j = Journey("one", "一", 10, Trigger("purchase"), (step("a", timedelta(hours=1)),), frozenset(), Segment())
    dead = engine_for(r, [j], Rules(), SH)
    dead.enroll_many((f"c{i}", "purchase", at(2, 9), {}) for i in range(20))
    real = dead.emit

    def crashing(items, ttl):
        real(items, ttl)
        raise Crash()

    dead.emit = crashing
    with pytest.raises(Crash):
        dead.tick(at(2, 12))
    crashed = pending_counts(r)["inflight"]
    assert crashed > 0
    other = engine_for(r, [j], Rules(), SH)
    assert other.release_claims(at(2, 12)) == crashed  # a scheduler that took over: no wait for the 60 s lease
    run_until(other, at(2, 12))
    ids = [x["touch_id"] for x in entries(r)]
    assert len(ids) == 20 == len(set(ids))
    assert pending_counts(r) == {"due": 0, "inflight": 0}
