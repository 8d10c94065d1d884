"""Replies to SOP steps without Redis: normalising answers, matching an option, validating `replies:` with
file and line, and `sop plan` showing them."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sop import journeys
from sop.cli import plan_cmd, validate_cmd
from sop.plan import Rules
from sop.replies import ReplyOption, match, normalise

SH = ZoneInfo("Asia/Shanghai")

ASKING = """\
id: ask
title: 问一问
priority: 10
trigger: customer_added
steps:
  - id: q
    wait: 0
    kind: interaction
    content:
      text: 回复 1 或 2
    replies_for_hours: 24
    replies:
      - match: ["1", 新品]
        tag: 关注新品
        reply: 好的
      - match: [2, 优惠活动]
        coupon: true
        journey: other
"""
OTHER = """\
id: other
title: 另一个
priority: 10
trigger: {type: tag, tag: 关注优惠}
steps:
  - id: s
    wait: 1d
    kind: offer
    content:
      text: 优惠来啦
"""


def write(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


@pytest.mark.parametrize("said", ["2", "２", "2️⃣", "2。", "选2", " 2 !", "我选2吧", "第二个", "2😊", "選2"])
def test_ways_of_writing_2(said):
    assert normalise(said) == "2"


def test_words_are_compared_without_case_spaces_or_trailing_punctuation():
    assert normalise("优惠活动！") == normalise("优惠 活动") == "优惠活动"
    assert normalise("VIP") == "vip"
    assert normalise("。。") == "" and normalise("22") == "22"


def test_match_picks_exactly_one_option():
    one, two = ReplyOption(("1", "新品"), tag="a"), ReplyOption(("2", "优惠活动"), tag="b")
    assert match((one, two), "２") is two and match((one, two), "新品～") is one
    assert match((one, two), "12") is None and match((one, two), "") is None and match((one, two), "新品和优惠活动") is None
    assert match((one, ReplyOption(("１",), tag="c")), "1") is None  # two options would answer: none does


def test_a_step_with_replies_loads(tmp_path):
    found = {j.id: j for j in journeys.load(write(tmp_path, ask=ASKING, other=OTHER))}
    step = found["ask"].step("q")
    assert step is not None and step.replies_for_hours == 24
    assert step.replies == (ReplyOption(("1", "新品"), "关注新品", "好的"),
                            ReplyOption(("2", "优惠活动"), coupon=True, journey="other"))
    assert found["other"].steps[0].replies == () and found["other"].steps[0].replies_for_hours == 48


def test_bad_options_are_reported_with_file_and_line(tmp_path):
    bad = ASKING.replace('      - match: [2, 优惠活动]\n        coupon: true\n        journey: other\n',
                         '      - match: ["２", "。"]\n        tag: 5\n'
                         '      - match: 新品\n'
                         '      - match: "3"\n        coupon: "yes"\n'
                         '      - match: "4"\n        journey: nowhere\n'
                         '      - match: "5"\n        journey: other\n')
    path = write(tmp_path, ask=bad, other=OTHER.replace("{type: tag, tag: 关注优惠}", "coupon_issued")) / "ask.yaml"
    out = io.StringIO()
    assert validate_cmd(tmp_path, out) == 1
    errors = out.getvalue().splitlines()
    expected = [
        f'{path}:{line_of(path, "。")}: steps[0].replies[1].match[1]: expected an answer',
        f"{path}:{line_of(path, 'tag: 5')}: steps[0].replies[1].tag: expected non-empty text",
        f"{path}:{line_of(path, 'match: 新品')}: steps[0].replies[2]: an option needs at least one of",
        f"{path}:{line_of(path, 'yes')}: steps[0].replies[3].coupon: expected true or false",
        f"{path}:{line_of(path, 'nowhere')}: steps[0].replies[4].journey: unknown journey 'nowhere'",
        f"{path}:{line_of(path, 'journey: other')}: steps[0].replies[5].journey: journey 'other' follows an "
        "issued coupon",
    ]
    for want in expected:
        assert any(e.startswith(want) for e in errors), (want, errors)


def test_answers_must_be_unique_once_normalised(tmp_path):
    dup = ASKING.replace("[2, 优惠活动]", "[２, 优惠活动！]").replace('["1", 新品]', '["1", 优惠活动]')
    path = write(tmp_path, ask=dup, other=OTHER) / "ask.yaml"
    (err,) = [str(e) for e in journeys.validate(tmp_path)]
    assert err.startswith(f"{path}:{line_of(path, '[２, 优惠活动！]')}: steps[0].replies[1].match[1]: '优惠活动！' "
                          "reads as '优惠活动', which already answers option 1")


@pytest.mark.parametrize(("change", "where", "message"), [
    (("replies_for_hours: 24", "replies_for_hours: 0"), "replies_for_hours", "must be between 1 and 720"),
    (("    replies:\n      - match", "    replies: []\n    unused:\n      - match"), "replies",
     "expected a non-empty list of options"),
    (("    kind: interaction\n", "    kind: interaction\n    channel: staff\n"), "replies",
     "a staff step is sent by a person"),
])
def test_step_level_reply_errors(tmp_path, change, where, message):
    errs = [str(e) for e in journeys.validate(write(tmp_path, ask=ASKING.replace(*change), other=OTHER))]
    assert any(f": steps[0].{where}: {message}" in e for e in errs), errs


def test_plan_shows_the_replies_and_keeps_its_json(tmp_path):
    found = list(journeys.load(write(tmp_path, ask=ASKING, other=OTHER)))
    start = datetime(2024, 12, 2, 10, tzinfo=SH)
    out = io.StringIO()
    plan_cmd(found, Rules(), None, start, 2, False, out, SH)
    lines = out.getvalue().splitlines()
    row = next(i for i, line in enumerate(lines) if "ask/q" in line)
    assert lines[row + 1] == ('    replies (within 24 h of a kf send): "1" "新品" -> tag 关注新品, reply | '
                              '"2" "优惠活动" -> journey other, coupon')
    out = io.StringIO()
    plan_cmd(found, Rules(), None, start, 2, True, out, SH)
    assert all(set(json.loads(line)) == {"journey", "step", "at", "due", "channel", "decision", "reason"}
               for line in out.getvalue().splitlines())


def test_the_shipped_day1_question_has_its_three_answers():
    week = next(j for j in journeys.load() if j.id == "new_customer_week")
    step = week.step("day1_hello")
    assert step is not None and step.replies_for_hours == 48
    assert [match(step.replies, said).tag for said in ("1", "2", "3")] == ["关注新品", "关注优惠", "关注保养"]
    assert [o.coupon for o in step.replies] == [False, True, False]
    assert all(o.reply for o in step.replies)
