"""Consultants YAML: validation with file:line, working hours, and the assignment rules."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.content.team import ConfigError, Team, load_team, next_on_duty, on_duty, pick

TZ = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
LI, WANG, ZHAO = "li.consultant", "wang.consultant", "zhao.supervisor"


def at(day: int, hh: int, mm: int = 0) -> datetime:
    """A moment in the week of Mon 2026-01-26 (day 0 = Monday) in Shanghai."""
    return datetime(2026, 1, 26, hh, mm, tzinfo=TZ) + timedelta(days=day)


MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "consultants.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


BASE = """\
robot_key_env: WECOM_ROBOT_KEY
sla_minutes: {default: 5, complaint: 3}
consultants:
  - userid: a
    name: 小A
    card: {type: business_card}
    hours: {mon-fri: "09:00-18:00"}
    max_concurrent: 2
    backup: b
    supervisor: s
  - userid: b
    name: 小B
    card: {type: business_card}
    hours: {mon-fri: "09:00-18:00"}
    max_concurrent: 2
    supervisor: s
  - userid: s
    name: 主管
    card: {type: business_card}
    hours: {mon-fri: "09:00-18:00"}
    max_concurrent: 2
"""


@pytest.fixture()
def team(tmp_path: Path) -> Team:
    return load_team(write(tmp_path, BASE), TZ)


# ---- the shipped file ------------------------------------------------------------------------


def test_shipped_file_loads() -> None:
    team = load_team(ROOT / "content" / "consultants.yaml", TZ)
    assert [c.userid for c in team.consultants] == [LI, WANG, ZHAO]
    li, wang, zhao = team.consultants
    assert li.card.type == "business_card" and wang.card.type == "link" and wang.card.url.startswith("https://")
    assert li.backup == WANG and li.supervisor == ZHAO and zhao.supervisor is None
    assert team.sla_seconds("complaint") == 180 and team.sla_seconds("price") == 300
    assert team.sla_seconds("whatever") == 300
    assert team.robot_key({"WECOM_ROBOT_KEY": "k"}) == "k" and team.robot_key({}) is None


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("old,new,line,message", [
    ("    max_concurrent: 2\n    backup: b", "    max_concurrent: 2\n    colour: red\n    backup: b", 9,
     "consultants[0].colour: unknown key"),
    ('hours: {mon-fri: "09:00-18:00"}\n    max_concurrent: 2\n    backup',
     'hours: {mon-fri: "9am-6pm"}\n    max_concurrent: 2\n    backup', 7, "consultants[0].hours.mon-fri: expected a time"),
    ("backup: b", "backup: nobody", 9, "consultants[0].backup: unknown consultant 'nobody'"),
    ("backup: b", "backup: a", 9, "cannot be their own backup"),
    ("userid: b", "userid: a", 11, "duplicate userid 'a' (first on line 4)"),
    ("robot_key_env: WECOM_ROBOT_KEY", "robot_key_env: abc-123", 1, "robot_key_env: expected the NAME"),
    ("{default: 5, complaint: 3}", "{default: 0}", 2, "sla_minutes.default: expected a positive number"),
    ("max_concurrent: 2\n    backup", "max_concurrent: 0\n    backup", 8, "expected a whole number >= 1"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, line: int, message: str) -> None:
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_team(path, TZ)
    assert str(exc.value).startswith(f"{path}:{line}: ")
    assert message in str(exc.value)


def test_supervisor_cycle_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "    supervisor: b\n")  # s -> b -> s
    with pytest.raises(ConfigError, match=r":10: consultants\[0\]\.supervisor: supervisor cycle: a -> s -> b -> s"):
        load_team(path, TZ)


@pytest.mark.parametrize("hours,message", [
    ('{mon-fri: "09:00-18:00", fri: "10:00-12:00"}', "fri is already given by 'mon-fri'"),
    ('{mon: "09:00-12:00, 11:00-13:00"}', "periods overlap"),
    ('{mon: "22:00-03:00", tue: "02:00-10:00"}', "hours on tue overlap hours on mon"),
    ('{sun: "22:00-03:00", mon: "02:00-10:00"}', "overlap"),
    ('{mon: "09:00-09:00"}', "empty"),
    ('{funday: "09:00-18:00"}', "expected days like"),
    ('{mon: "25:00-26:00"}', "not a time of day"),
    ("{mon: off}", "no working hours at all"),
    ("{}", "expected a mapping of days to hours"),
])
def test_bad_hours(tmp_path: Path, hours: str, message: str) -> None:
    path = write(tmp_path, BASE.replace('hours: {mon-fri: "09:00-18:00"}', f"hours: {hours}", 1))
    with pytest.raises(ConfigError, match=message) as exc:
        load_team(path, TZ)
    assert str(exc.value).startswith(f"{path}:7: consultants[0].hours")


@pytest.mark.parametrize("card,message", [
    ("{type: link, title: 加我}", "missing key 'url'"),
    ("{type: link, url: ftp://x, title: 加我}", r"expected an http\(s\) URL"),
    ("{type: link, url: 'https://x', title: " + "长" * 50 + "}", "too long: 150 bytes, WeCom allows 128"),
    ("{type: business_card, url: 'https://x'}", "unknown key for a business_card card"),
    ("{type: qr}", "expected business_card or link"),
])
def test_bad_cards(tmp_path: Path, card: str, message: str) -> None:
    path = write(tmp_path, BASE.replace("card: {type: business_card}", f"card: {card}", 1))
    with pytest.raises(ConfigError, match=message) as exc:
        load_team(path, TZ)
    assert str(exc.value).startswith(f"{path}:6: consultants[0].card")


def test_missing_file_and_bad_top_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_team(tmp_path / "nope.yaml", TZ)
    with pytest.raises(ConfigError, match=r":1: teams: unknown key"):
        load_team(write(tmp_path, "teams: []\n"), TZ)


# ---- working hours ---------------------------------------------------------------------------


def hours_team(tmp_path: Path, hours: str) -> Team:
    return load_team(write(tmp_path, BASE.replace('hours: {mon-fri: "09:00-18:00"}', f"hours: {hours}", 1)), TZ)


def test_office_hours_and_weekends(team: Team) -> None:
    a = team.consultants[0]
    assert not on_duty(a, at(MON, 8, 59)) and on_duty(a, at(MON, 9)) and on_duty(a, at(FRI, 17, 59))
    assert not on_duty(a, at(FRI, 18)) and not on_duty(a, at(SAT, 12)) and not on_duty(a, at(SUN, 12))
    assert next_on_duty(a, at(FRI, 18, 30)) == at(MON + 7, 9)
    assert next_on_duty(a, at(SAT, 12)) == at(MON + 7, 9)
    assert next_on_duty(a, at(WED, 7)) == at(WED, 9)
    assert next_on_duty(a, at(WED, 10)) == at(WED, 10)  # on duty: now


def test_other_timezone_input_is_converted(team: Team) -> None:
    utc = ZoneInfo("UTC")
    a = team.consultants[0]
    assert on_duty(a, datetime(2026, 1, 26, 1, 0, tzinfo=utc))  # 09:00 in Shanghai
    assert next_on_duty(a, datetime(2026, 1, 26, 0, 0, tzinfo=utc)).tzinfo == TZ
    with pytest.raises(ValueError):
        on_duty(a, datetime(2026, 1, 26, 9))


def test_across_midnight_and_split_shift(tmp_path: Path) -> None:
    night = hours_team(tmp_path, '{fri: "22:00-02:00", sun: "21:00-24:00", tue: "09:00-12:00, 13:30-18:00"}')
    a = night.consultants[0]
    assert on_duty(a, at(FRI, 23)) and on_duty(a, at(SAT, 1, 59)) and not on_duty(a, at(SAT, 2))
    assert not on_duty(a, at(THU, 23)) and not on_duty(a, at(FRI, 1))
    assert on_duty(a, at(SUN, 23, 59)) and not on_duty(a, at(MON + 7, 0))
    assert not on_duty(a, at(TUE, 12, 30)) and next_on_duty(a, at(TUE, 12, 30)) == at(TUE, 13, 30)
    assert next_on_duty(a, at(SAT, 3)) == at(SUN, 21)
    assert next_on_duty(a, at(SUN, 0, 30)) == at(SUN, 21)
    assert next_on_duty(a, at(TUE, 18)) == at(FRI, 22)


def test_day_ranges_wrap_and_daily(tmp_path: Path) -> None:
    wrap = hours_team(tmp_path, '{fri-mon: "10:00-16:00"}').consultants[0]
    assert [bool(d) for d in wrap.hours] == [True, False, False, False, True, True, True]
    daily = hours_team(tmp_path, '{daily: "10:00-16:00"}').consultants[0]
    assert all(daily.hours)
    lists = hours_team(tmp_path, '{"sat,sun": ["10:00-12:00", "14:00-16:00"]}').consultants[0]
    assert lists.hours[5] == ((600, 720), (840, 960))


# ---- assignment ------------------------------------------------------------------------------

ALL_RECEIVING = {"a": 0, "b": 0, "s": 0}


@pytest.mark.parametrize("owner,receiving,load,when,expect", [
    # owner preferred even when busier than others
    ("b", ALL_RECEIVING, {"a": 0, "b": 1}, at(MON, 10), ("b", 3, "owner")),
    # owner stopped receiving -> least loaded
    ("b", {"a": 0, "b": 1, "s": 0}, {"a": 1, "s": 0}, at(MON, 10), ("s", 3, "least_loaded")),
    # owner at capacity -> least loaded
    ("b", ALL_RECEIVING, {"b": 2, "a": 1}, at(MON, 10), ("s", 3, "least_loaded")),
    # unknown owner (left the team) -> least loaded; ties by YAML order
    ("gone", ALL_RECEIVING, {}, at(MON, 10), ("a", 3, "least_loaded")),
    (None, ALL_RECEIVING, {"a": 1}, at(MON, 10), ("b", 3, "least_loaded")),
    # not a servicer at all (missing from the servicer list)
    (None, {"s": 0}, {}, at(MON, 10), ("s", 3, "least_loaded")),
    # everyone at capacity -> queue
    (None, ALL_RECEIVING, {"a": 2, "b": 2, "s": 2}, at(MON, 10), (None, 2, "queue_at_capacity")),
    # none receiving -> queue
    ("a", {"a": 1, "b": 1, "s": 1}, {}, at(MON, 10), (None, 2, "queue_none_receiving")),
    # receiving but off duty -> queue off hours
    ("a", ALL_RECEIVING, {}, at(SAT, 10), (None, 2, "queue_off_hours")),
])
def test_assignment_table(team: Team, owner, receiving, load, when, expect) -> None:
    got = pick(team, owner=owner, receiving=receiving, load=load, now=when)
    assert (got.userid, got.state, got.reason) == expect
    assert got.off_hours == (expect[2] == "queue_off_hours")
    assert got.supervisor is None


def test_off_hours_names_next_period_and_owner(tmp_path: Path, team: Team) -> None:
    got = pick(team, owner="b", receiving=ALL_RECEIVING, load={}, now=at(FRI, 20))
    assert got.off_hours and got.next_available == at(MON + 7, 9) and got.next_userid == "b"
    shifted = load_team(write(tmp_path, BASE.replace('hours: {mon-fri: "09:00-18:00"}', 'hours: {sat: "10:00-12:00"}', 2)), TZ)
    got = pick(shifted, owner="s", receiving=ALL_RECEIVING, load={}, now=at(FRI, 20))
    assert got.next_available == at(SAT, 10) and got.next_userid == "a"  # earliest wins over the owner


def test_exclude_skips_a_consultant(team: Team) -> None:
    # e.g. the first choice answered 95019 (stopped receiving) between choice and transfer
    got = pick(team, owner="a", receiving=ALL_RECEIVING, load={}, now=at(MON, 10), exclude={"a"})
    assert (got.userid, got.reason) == ("b", "least_loaded")
    got = pick(team, owner="a", receiving=ALL_RECEIVING, load={}, now=at(MON, 10), exclude={"a", "b", "s"})
    assert (got.userid, got.state) == (None, 2)


def test_complaint_jumps_the_queue_and_names_the_supervisor(team: Team) -> None:
    full = {"a": 2, "b": 2, "s": 3}
    normal = pick(team, owner="a", receiving=ALL_RECEIVING, load=full, now=at(MON, 10))
    assert (normal.userid, normal.state) == (None, 2)
    urgent = pick(team, owner="a", receiving=ALL_RECEIVING, load=full, now=at(MON, 10), priority=True)
    assert (urgent.userid, urgent.state, urgent.reason, urgent.supervisor) == ("a", 3, "priority_over_capacity", "s")
    free = pick(team, owner=None, receiving=ALL_RECEIVING, load={"a": 1}, now=at(MON, 10), priority=True)
    assert (free.userid, free.reason, free.supervisor) == ("b", "least_loaded", "s")
    night = pick(team, owner="a", receiving=ALL_RECEIVING, load={}, now=at(SUN, 3), priority=True)
    assert (night.state, night.reason, night.supervisor) == (2, "queue_off_hours", "s")
