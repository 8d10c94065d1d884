"""Journey YAML validation and the validate/plan commands."""

from __future__ import annotations

import io
import json
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.records.customers import Customer
from sop import journeys
from sop.cli import plan_cmd, segment_cmd, validate_cmd
from sop.plan import Rules

SH = ZoneInfo("Asia/Shanghai")

GOOD = """\
id: demo
title: 演示
priority: 10
trigger: customer_added
steps:
  - id: hi
    wait: 0
    kind: welcome
    content:
      text: 你好
  - id: d1
    wait: 1d
    at: "10:00"
    kind: education
    content:
      link: {title: 指南, url: "https://example.com/a"}
"""


def write(tmp_path: Path, text: str, name: str = "j.yaml") -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    return [str(e) for e in journeys.validate(write(tmp_path, text))]


def test_default_journeys_validate():
    found, errors = journeys.load_dir()
    assert errors == []
    ids = {j.id for j in found}
    assert {"new_customer_week", "coupon_expiry", "purchase_guide", "birthday", "winback_30", "winback_60",
            "member_day"} <= ids
    week = next(j for j in found if j.id == "new_customer_week")
    assert 5 <= len(week.steps) <= 6 and max(s.wait for s in week.steps) <= timedelta(days=7)
    assert week.steps[0].kind == "welcome"
    member = next(j for j in found if j.id == "member_day")
    assert member.trigger.monthday == 18


def test_good_file_loads(tmp_path):
    (j,) = journeys.load(write(tmp_path, GOOD))
    assert j.steps[1].at == time(10) and j.steps[1].wait == timedelta(days=1)
    assert j.steps[1].content["link"]["url"] == "https://example.com/a"


@pytest.mark.parametrize("old,new,line,key,words", [
    ("priority: 10\n", "priority: 10\ncolour: red\n", 4, "colour", "unknown key"),
    ("    wait: 1d\n", "    wait: 1 week\n", 12, "steps[1].wait", "bad duration"),
    ('    at: "10:00"\n', '    at: "25:00"\n', 13, "steps[1].at", "'25:00' is not a time of day"),
    ("  - id: d1\n", "  - id: hi\n", 11, "steps[1].id", "duplicate step id"),
    ("trigger: customer_added\n", "trigger: moon_phase\n", 4, "trigger", "unknown trigger"),
    ("    kind: education\n", "    kind: education\n    chanel: staff\n", 15, "steps[1].chanel", "unknown key"),
    ('url: "https://example.com/a"', 'url: "ftp://x"', 16, "steps[1].content.link.url", "http(s) URL"),
])
def test_errors_name_file_line_and_key(tmp_path, old, new, line, key, words):
    assert old in GOOD
    errs = errors_of(tmp_path, GOOD.replace(old, new))
    assert len(errs) == 1, errs
    assert errs[0].startswith(f"{tmp_path / 'j.yaml'}:{line}: {key}: ")
    assert words in errs[0]


def test_all_errors_are_collected(tmp_path):
    bad = GOOD.replace("wait: 1d", "wait: soon").replace('"10:00"', '"9 pm"').replace("priority: 10", "priority: high")
    errs = errors_of(tmp_path, bad)
    assert len(errs) == 3 and all(":" in e for e in errs)


def test_yaml_syntax_error_and_duplicate_journey_ids(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    write(tmp_path, "id: [oops\n", "c.yaml")
    errs = [str(e) for e in journeys.validate(tmp_path)]
    assert any(e.startswith(f"{tmp_path / 'b.yaml'}:1: id: duplicate journey id 'demo'") for e in errs), errs
    assert any(e.startswith(f"{tmp_path / 'c.yaml'}:") and "invalid YAML" in e for e in errs), errs


def test_calendar_trigger_and_segment(tmp_path):
    text = GOOD.replace("trigger: customer_added\n",
                        "trigger:\n  type: calendar\n  weekdays: [wed, fri]\n  segment: {lifecycle: [active]}\n")
    (j,) = journeys.load(write(tmp_path, text))
    assert j.trigger.weekdays == (2, 4) and j.segment.lifecycle == ("active",)
    errs = errors_of(tmp_path, text.replace("weekdays: [wed, fri]", "weekdays: [wed, caturday]"))
    assert len(errs) == 1 and "weekdays[1]" in errs[0]


def test_validate_cmd(tmp_path):
    out = io.StringIO()
    assert validate_cmd(None, out) == 0 and out.getvalue().startswith("ok: ")
    out = io.StringIO()
    assert validate_cmd(write(tmp_path, GOOD.replace("wait: 1d", "wait: x")), out) == 1
    assert f"{tmp_path / 'j.yaml'}:12: steps[1].wait: bad duration" in out.getvalue()


def test_plan_cmd_json_for_a_new_customer():
    out = io.StringIO()
    start = datetime(2024, 12, 2, 23, 50, tzinfo=SH)
    assert plan_cmd(list(journeys.load()), Rules(), None, start, 14, True, out, SH) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows and all(set(r) == {"journey", "step", "at", "due", "channel", "decision", "reason"} for r in rows)
    assert all(r["at"].endswith("+08:00") for r in rows)
    assert {r["decision"] for r in rows} <= {"send", "defer", "skip", "remind"}
    assert rows[0]["journey"] == "new_customer_week" and rows[0]["at"] == "2024-12-02T23:50:00+08:00"
    week = [r for r in rows if r["journey"] == "new_customer_week"]
    assert len(week) == 6
    # Nothing reaches the customer at night, and never more than 3 a day.
    for r in rows:
        t = datetime.fromisoformat(r["at"])
        if r["step"] != "welcome" and r["decision"] in ("send", "remind"):
            assert time(8) <= t.time() < time(22)


def test_plan_cmd_existing_customer_text_and_segment():
    first = datetime(2024, 10, 1, 9, tzinfo=SH).timestamp()
    rec = Customer(id="c1", first_seen=first, last_inbound=first, tags={})
    out = io.StringIO()
    plan_cmd(list(journeys.load()), Rules(), rec, datetime(2024, 11, 1, tzinfo=SH), 20, False, out, SH)
    text = out.getvalue()
    assert "winback_30/benefit" in text and "member_day/announce" in text and "2024-11-18" in text
    out = io.StringIO()
    segment_cmd(list(journeys.load()), Rules(), [rec, None], datetime(2024, 11, 1, tzinfo=SH), 20, out, SH)
    assert out.getvalue().startswith("2 customers")
