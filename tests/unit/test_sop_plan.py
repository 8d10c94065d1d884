"""plan.py and the preview simulation: pure, frozen clocks, no Redis."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from sop.journeys import Journey, Segment, Step, Trigger
from sop.plan import History, Rules, decide, schedule, touch_id
from sop.simulate import Profile, simulate

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
MON_2350 = datetime(2024, 12, 2, 23, 50, tzinfo=SH)  # a Monday


def at(day: int, hh: int, mm: int = 0, tz: ZoneInfo = SH) -> datetime:
    return datetime(2024, 12, day, hh, mm, tzinfo=tz)


def step(sid: str = "s", wait: timedelta = timedelta(0), kind: str = "education", channel: str = "auto",
         at_: time | None = None, window: tuple[time, time] | None = None) -> Step:
    return Step(sid, wait, kind, channel, {"text": "你好"}, at_, window)


def journey(jid: str = "j", *steps: Step, priority: int = 50, trigger: str = "customer_added",
            stop_on: frozenset[str] = frozenset(), **trig) -> Journey:
    return Journey(jid, jid, priority, Trigger(trigger, **trig), steps or (step(),), stop_on, Segment())


def touch(due: datetime, kind: str = "education", channel: str = "auto", stop_on=frozenset(), since=None,
          window=None):
    j = journey("j", step("s", kind=kind, channel=channel, window=window), stop_on=frozenset(stop_on))
    t = schedule(j, "c1", due, SH, since=since)[0]
    return replace(t, due=due)


KF_OPEN = dict(last_customer_message=at(2, 9))  # customer wrote Monday 09:00


# --- decide: table ---------------------------------------------------------------------------

CASES = [
    # (name, touch kwargs, history kwargs, now, expected (decision, channel, reason, at))
    ("kf window open", {}, KF_OPEN, at(2, 10), ("send", "kf", "kf_window_open", at(2, 10))),
    ("kf budget used -> mass task", {}, {**KF_OPEN, "bot_since": 5}, at(2, 10),
     ("send", "mass_task", "kf_budget_used", at(2, 10))),
    ("kf window closed after 48h -> mass task", {}, KF_OPEN, at(4, 9, 1),
     ("send", "mass_task", "kf_window_closed", at(4, 9, 1))),
    ("never wrote -> mass task", {}, {}, at(2, 10), ("send", "mass_task", "kf_window_closed", at(2, 10))),
    ("monthly quota used -> staff reminder", {}, {"mass_by_month": {"2024-12": 4}}, at(2, 10),
     ("remind", "staff", "mass_quota_used", at(2, 10))),
    ("last month's quota does not count", {}, {"mass_by_month": {"2024-11": 4}}, at(2, 10),
     ("send", "mass_task", "kf_window_closed", at(2, 10))),
    ("staff step always reminds", {"channel": "staff"}, KF_OPEN, at(2, 10), ("remind", "staff", "staff_step", at(2, 10))),
    ("quiet hours at night -> 08:00 next day", {}, KF_OPEN, at(2, 23), ("defer", "kf", "quiet_hours", at(3, 8))),
    ("quiet hours after midnight -> 08:00 same day", {}, KF_OPEN, at(3, 7, 59), ("defer", "kf", "quiet_hours", at(3, 8))),
    ("quiet hours end at 08:00", {}, KF_OPEN, at(3, 8), ("send", "kf", "kf_window_open", at(3, 8))),
    ("welcome exempt from quiet hours", {"kind": "welcome"}, KF_OPEN, at(2, 23, 50),
     ("send", "kf", "kf_window_open", at(2, 23, 50))),
    ("welcome code", {"kind": "welcome"}, {"welcome_code": True}, at(2, 23, 50),
     ("send", "welcome", "welcome_code", at(2, 23, 50))),
    ("staff reminders respect quiet hours too", {"channel": "staff"}, {}, at(2, 22, 30),
     ("defer", "staff", "quiet_hours", at(3, 8))),
    ("step window defers to its start", {"window": (time(10), time(21))}, KF_OPEN, at(2, 9),
     ("defer", "kf", "window", at(2, 10))),
    ("after the window -> next day", {"window": (time(10), time(21))}, KF_OPEN, at(2, 21, 30),
     ("defer", "kf", "window", at(3, 10))),
    ("daily cap -> next day same time", {}, {**KF_OPEN, "sent_by_day": {date(2024, 12, 2): 3}}, at(2, 10),
     ("defer", "kf", "daily_cap", at(3, 10))),
    ("cap counts the local day only", {}, {**KF_OPEN, "sent_by_day": {date(2024, 12, 1): 3}}, at(2, 10),
     ("send", "kf", "kf_window_open", at(2, 10))),
    ("daily cap late evening -> next day, not at night", {}, {**KF_OPEN, "sent_by_day": {date(2024, 12, 2): 3}},
     at(2, 21, 30), ("defer", "kf", "daily_cap", at(3, 21, 30))),
    ("staff reminders are not capped", {"channel": "staff"}, {"sent_by_day": {date(2024, 12, 2): 3}}, at(2, 10),
     ("remind", "staff", "staff_step", at(2, 10))),
    ("ignored 3 in a row stops the kind", {"kind": "offer"}, {**KF_OPEN, "ignored": {"offer": 3}}, at(2, 10),
     ("skip", "kf", "ignored:offer", at(2, 10))),
    ("other kinds still go", {"kind": "education"}, {**KF_OPEN, "ignored": {"offer": 3}}, at(2, 10),
     ("send", "kf", "kf_window_open", at(2, 10))),
    ("ignored twice still goes", {"kind": "offer"}, {**KF_OPEN, "ignored": {"offer": 2}}, at(2, 10),
     ("send", "kf", "kf_window_open", at(2, 10))),
    ("unsubscribed stops every journey", {}, {**KF_OPEN, "unsubscribed": True}, at(2, 10),
     ("skip", "kf", "stopped:unsubscribed", at(2, 10))),
    ("deleted contact stops", {}, {"deleted": True}, at(2, 10), ("skip", "mass_task", "stopped:contact_deleted", at(2, 10))),
    ("replied after the trigger stops", {"stop_on": {"replied"}, "since": at(1, 12)}, KF_OPEN, at(2, 10),
     ("skip", "kf", "stopped:replied", at(2, 10))),
    ("replied before the trigger does not", {"stop_on": {"replied"}, "since": at(2, 9, 30)}, KF_OPEN, at(2, 10),
     ("send", "kf", "kf_window_open", at(2, 10))),
    ("reply ignored when not a stop condition", {"since": at(1, 12)}, KF_OPEN, at(2, 10),
     ("send", "kf", "kf_window_open", at(2, 10))),
    ("handed off stops", {"stop_on": {"handed_off"}, "since": at(1, 12)}, {"handed_off_at": at(2, 9)}, at(2, 10),
     ("skip", "mass_task", "stopped:handed_off", at(2, 10))),
    ("purchased stops", {"stop_on": {"purchased"}, "since": at(1, 12)}, {"purchased_at": at(2, 9)}, at(2, 10),
     ("skip", "mass_task", "stopped:purchased", at(2, 10))),
    ("redeemed stops", {"stop_on": {"redeemed"}, "since": at(1, 12)}, {"redeemed_at": at(2, 9)}, at(2, 10),
     ("skip", "mass_task", "stopped:redeemed", at(2, 10))),
    ("deferred too long -> stale", {}, KF_OPEN, at(5, 10, 1), ("skip", "mass_task", "stale", at(5, 10, 1))),
]


@pytest.mark.parametrize("name,tkw,hkw,now,expected", CASES, ids=[c[0] for c in CASES])
def test_decide(name, tkw, hkw, now, expected):
    due = now if name != "deferred too long -> stale" else at(2, 10)
    d = decide(touch(due, **tkw), History(**hkw), now, Rules(), SH)
    assert (d.decision, d.channel, d.reason, d.at) == expected
    assert d.due == due


def test_decide_needs_aware_now():
    with pytest.raises(ValueError):
        decide(touch(at(2, 10)), History(), datetime(2024, 12, 2, 10), Rules(), SH)


def test_rules_are_configurable():
    rules = Rules(daily_cap=1, quiet_start=time(21), quiet_end=time(9), ignored_limit=5)
    h = History(sent_by_day={date(2024, 12, 2): 1}, ignored={"offer": 4}, **KF_OPEN)
    assert decide(touch(at(2, 10), kind="offer"), h, at(2, 10), rules, SH).reason == "daily_cap"
    assert decide(touch(at(2, 21, 30)), History(**KF_OPEN), at(2, 21, 30), rules, SH).at == at(3, 9)


# --- schedule --------------------------------------------------------------------------------

def test_schedule_day_n_at_time_counts_calendar_days():
    j = journey("j", step("welcome", kind="welcome"), step("d1", timedelta(days=1), at_=time(10)),
                step("h2", timedelta(hours=2)), step("d0", at_=time(20)), step("w", timedelta(days=2), window=(time(10), time(21))))
    due = {t.step: t.due for t in schedule(j, "c1", MON_2350, SH)}
    assert due == {"welcome": MON_2350, "d1": at(3, 10), "h2": at(3, 1, 50), "d0": at(3, 20), "w": at(5, 10)}


def test_touch_id_is_stable_and_distinct():
    j = journey("j", step("a"), step("b"))
    one, two = schedule(j, "c1", MON_2350, SH), schedule(j, "c1", MON_2350, SH)
    assert [t.touch_id for t in one] == [t.touch_id for t in two]
    assert len({t.touch_id for t in one}) == 2
    assert touch_id("j", "a", "c2", MON_2350) != one[0].touch_id
    assert touch_id("j", "a", "c1", MON_2350 + timedelta(days=1)) != one[0].touch_id


def test_schedule_rejects_naive_time():
    with pytest.raises(ValueError):
        schedule(journey(), "c1", datetime(2024, 12, 2, 10), SH)


def test_dst_timezone_keeps_local_times():
    """New York springs forward on 2024-03-10: day-N steps keep their wall-clock time."""
    sat = datetime(2024, 3, 9, 12, 0, tzinfo=NY)
    j = journey("j", step("d1", timedelta(days=1), at_=time(9)), step("d1b", timedelta(days=1)),
                step("h26", timedelta(hours=26)))
    due = {t.step: t.due for t in schedule(j, "c1", sat, NY)}
    assert due["d1"] == datetime(2024, 3, 10, 9, 0, tzinfo=NY) and due["d1"].utcoffset() == timedelta(hours=-4)
    assert due["d1b"].hour == 12 and due["d1b"].timestamp() - sat.timestamp() == 23 * 3600
    assert due["h26"].timestamp() - sat.timestamp() == 26 * 3600 and due["h26"].hour == 15
    # Quiet hours are local too: 23:00 in New York -> 08:00 New York the next morning.
    t = replace(schedule(journey(), "c1", sat, NY)[0], due=datetime(2024, 3, 9, 23, 0, tzinfo=NY))
    d = decide(t, History(), t.due, Rules(), NY)
    assert d.decision == "defer" and d.at == datetime(2024, 3, 10, 8, 0, tzinfo=NY)
    assert d.at.isoformat().endswith("-04:00")


# --- simulation: the issue's time-travel stories ---------------------------------------------------

def test_added_monday_night_gets_welcome_at_once_and_day1_at_ten():
    j = journey("week", step("welcome", kind="welcome"), step("d1", timedelta(days=1), at_=time(10)),
                step("h2", timedelta(hours=2), kind="interaction"))
    rows = simulate([j], Rules(), None, MON_2350, 3, SH)
    got = [(r.step, r.decision, r.at, r.channel, r.reason) for r in rows]
    assert got[0] == ("welcome", "send", MON_2350, "welcome", "welcome_code")
    assert got[1] == ("d1", "send", at(3, 10), "mass_task", "kf_window_closed")
    # h2 (due 01:50) follows d1 in order, so it goes right after d1, not at night.
    assert got[2][:3] == ("h2", "send", at(3, 10))


def test_daily_cap_by_priority():
    js = [journey(f"p{p}", step("s", timedelta(days=1), at_=time(10)), priority=p) for p in (10, 40, 20, 30)]
    rows = simulate(js, Rules(mass_quota=99, ignored_limit=99), None, MON_2350, 3, SH)
    assert [(r.journey, r.decision, r.reason, r.at, r.due) for r in rows] == [
        ("p40", "send", "kf_window_closed", at(3, 10), None), ("p30", "send", "kf_window_closed", at(3, 10), None),
        ("p20", "send", "kf_window_closed", at(3, 10), None), ("p10", "defer", "daily_cap", at(4, 10), at(3, 10)),
        ("p10", "send", "kf_window_closed", at(4, 10), at(3, 10))]


def test_ignored_three_in_a_row_stops_the_kind():
    j = journey("offers", *[step(f"o{i}", timedelta(days=i), kind="offer", at_=time(12)) for i in range(1, 6)],
                step("edu", timedelta(days=6), at_=time(12)))
    rows = simulate([j], Rules(mass_quota=99), None, MON_2350, 8, SH)
    assert [(r.step, r.decision, r.reason) for r in rows] == [
        ("o1", "send", "kf_window_closed"), ("o2", "send", "kf_window_closed"), ("o3", "send", "kf_window_closed"),
        ("o4", "skip", "ignored:offer"), ("o5", "skip", "ignored:offer"), ("edu", "send", "kf_window_closed")]


def test_mass_quota_then_staff_reminders_and_unsubscribed_stops_all():
    j = journey("weekly", *[step(f"w{i}", timedelta(days=i), at_=time(12)) for i in range(1, 7)])
    rows = simulate([j], Rules(ignored_limit=99), None, MON_2350, 8, SH)
    assert [r.channel for r in rows] == ["mass_task"] * 4 + ["staff"] * 2
    assert rows[-1].reason == "mass_quota_used" and rows[-1].decision == "remind"
    gone = Profile(id="c9", first_seen=MON_2350, unsubscribed=True)
    assert {r.reason for r in simulate([j], Rules(), gone, MON_2350, 8, SH)} == {"stopped:unsubscribed"}


def test_existing_customer_in_kf_window_gets_kf_then_quiet_hours_defer():
    j = journey("tagged", step("a", timedelta(hours=1)), trigger="tag", tag="要优惠")
    p = Profile(id="c1", first_seen=at(1, 9), last_inbound=at(2, 21), tags={"要优惠": at(2, 21, 30)})
    rows = simulate([j], Rules(), p, at(2, 0), 2, SH)
    assert [(r.decision, r.channel, r.reason, r.at, r.due) for r in rows] == [
        ("defer", "kf", "quiet_hours", at(3, 8), at(2, 22, 30)),
        ("send", "kf", "kf_window_open", at(3, 8), at(2, 22, 30))]


def test_silence_and_calendar_triggers_in_preview():
    win = journey("wb", step("s", at_=time(20)), trigger="silence", days=30,
                  stop_on=frozenset({"replied"}))
    md = replace(journey("md", step("s", at_=time(10)), trigger="calendar", monthday=18),
                 segment=Segment(lifecycle=("active", "silent")))
    p = Profile(id="c1", first_seen=datetime(2024, 10, 1, 9, tzinfo=SH), last_inbound=datetime(2024, 11, 5, 9, tzinfo=SH))
    rows = simulate([win, md], Rules(), p, at(1, 0), 20, SH)
    assert [(r.journey, r.at) for r in rows] == [("wb", at(5, 20)), ("md", at(18, 10))]
    new_rows = simulate([md], Rules(), None, at(17, 0), 3, SH)
    assert new_rows == []  # a new customer is not in the active/silent segment
