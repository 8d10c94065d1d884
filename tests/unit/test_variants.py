"""Experiments, pure: intervals against hand computation and Newcombe's paper, assignment, YAML, verdicts."""

from __future__ import annotations

import math
import random
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bot.content.campaigns import describe_value, load_campaigns
from bot.records.experiment_report import report
from bot.records.experiments import Declared
from bot.records.intervals import newcombe, wilson
from sop import journeys
from sop.variants import HOLDOUT, Arm, Experiment, bucket


def test_wilson_matches_a_hand_computation():
    # p = 0.1, z = 1.96: centre = (0.1 + 1.96²/200) / (1 + 1.96²/100) = 0.119208 / 1.038415 = 0.114798;
    # half = 1.96 / 1.038415 * sqrt(0.0009 + 1.96²/40000) = 1.887479 * 0.031566 = 0.059581.
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.0552, abs=5e-5) and hi == pytest.approx(0.1744, abs=5e-5)
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=5e-5))  # Newcombe's table: 0/10 -> 0 to 0.2775
    assert wilson(3, 0) is None


@pytest.mark.parametrize(("k1", "n1", "k2", "n2", "lo", "hi"), [
    (56, 70, 48, 80, 0.0524, 0.3339),  # Newcombe (1998), Table II example (a), method 10
    (9, 10, 3, 10, 0.1705, 0.8090),    # example (b)
    (5, 56, 0, 29, -0.0381, 0.1926),   # example (d)
    (0, 10, 0, 20, -0.1611, 0.2775),   # example (g)
])
def test_newcombe_hybrid_score_matches_the_paper(k1, n1, k2, n2, lo, hi):
    got = newcombe(k1, n1, k2, n2)
    assert got == (pytest.approx(lo, abs=5e-5), pytest.approx(hi, abs=5e-5))


def test_assignment_is_stable_and_near_its_weights():
    e = Experiment("coupon:x", (Arm("A", 1), Arm("B", 3)), holdout=0.1)
    assert e.shares() == {HOLDOUT: 0.1, "A": pytest.approx(0.225), "B": pytest.approx(0.675)}
    customers = [f"wm{i:05d}" for i in range(10_000)]
    arms = [e.pick(c) for c in customers]
    assert arms == [e.pick(c) for c in customers]  # deterministic
    seen = Counter(arms)
    chi2 = sum((seen[a] - 10_000 * s) ** 2 / (10_000 * s) for a, s in e.shares().items())
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001
    assert 0 <= bucket("a", "b") < 1 and bucket("a", "b") != bucket("b", "b")


def _journey(tmp_path, step: str):
    path = tmp_path / "j.yaml"
    path.write_text(textwrap.dedent("""\
        id: exp_j
        title: 实验旅程
        priority: 10
        trigger: first_contact
        steps:
        """) + textwrap.indent(textwrap.dedent(step), "  "), encoding="utf-8")
    return journeys.load_dir(tmp_path)


def test_a_step_with_variants_and_a_holdout(tmp_path):
    found, errors = _journey(tmp_path, """\
        - id: offer
          wait: 1d
          kind: offer
          holdout: 0.1
          window_days: 3
          metric: replied
          variants:
            - {name: A, weight: 1, content: {text: 你好A}}
            - {name: B, weight: 2, content: {text: 你好B}}
        """)
    assert errors == []
    step = found[0].steps[0]
    assert step.experiment == Experiment("exp_j.offer", (Arm("A", 1), Arm("B", 2)), 0.1, 3, "replied")
    assert step.variants == {"A": {"text": "你好A"}, "B": {"text": "你好B"}} and step.content == {"text": "你好A"}


def test_step_variant_errors_name_file_line_and_key(tmp_path):
    _, errors = _journey(tmp_path, """\
        - id: offer
          kind: offer
          holdout: 1.5
          content: {text: 共用}
          variants:
            - {name: A, weight: 0, content: {text: x}}
            - {name: A, content: {text: y}}
            - {name: holdout, content: {text: z}}
            - {name: C, content: {nope: 1}}
        """)
    path = tmp_path / "j.yaml"
    said = [str(e) for e in errors]
    assert f"{path}:8: steps[0].holdout: expected a number from 0 to 0.9" in said[0]
    assert any(s.startswith(f"{path}:11: steps[0].variants[0].weight: must be more than 0") for s in said)
    assert any(s.startswith(f"{path}:12: steps[0].variants[1].name: duplicate variant name") for s in said)
    assert any(s.startswith(f"{path}:13: steps[0].variants[2].name:") and "holdout" in s for s in said)
    assert any(s.startswith(f"{path}:14: steps[0].variants[3].content.nope: unknown key") for s in said)
    assert any(s.startswith(f"{path}:9: steps[0].content: a step with variants") for s in said)
    _, errors = _journey(tmp_path, """\
        - id: offer
          kind: offer
          holdout: 0.2
          content: {text: x}
        """)
    assert [str(e) for e in errors] == [f"{path}:8: steps[0].holdout: holdout without variants (an experiment "
                                        "needs its variants: name, weight, content)"]


CAMPAIGN = """\
campaigns:
  - name: ab
    title: 满减券
    shape: spend_save
    threshold: 199
    amount: 30
    budget: 100
    valid_days: 3
    holdout: 0.1
    variants:
      - name: full_reduction
        weight: 1
      - name: no_threshold
        weight: 1
        shape: amount
        amount: 15
        title: 无门槛券
"""


def test_a_campaign_with_variants(tmp_path):
    path = tmp_path / "coupons.yaml"
    path.write_text(CAMPAIGN, encoding="utf-8")
    (c,) = load_campaigns(path)
    assert c.experiment == Experiment("coupon:ab", (Arm("full_reduction", 1), Arm("no_threshold", 1)), 0.1)
    a, b = c.arm("full_reduction"), c.arm("no_threshold")
    assert (a.variant, describe_value(a), a.title) == ("full_reduction", "满199减30", "满减券")
    assert (b.variant, describe_value(b), b.title, b.budget) == ("no_threshold", "无门槛减15元", "无门槛券", 100)
    assert c.arm(HOLDOUT) is c and c.holdout_reply.startswith("暂时没有")
    path.write_text(CAMPAIGN.replace("        amount: 15\n", "        threshold: 15\n"), encoding="utf-8")
    with pytest.raises(Exception) as exc:
        load_campaigns(path)
    assert str(exc.value).startswith(f"{path}:16: campaigns[0].variants[1].threshold: not used by shape 'amount'")


def _declared(holdout: float = 0.1) -> Declared:
    e = Experiment("coupon:x", (Arm("A", 1), Arm("B", 1)), holdout)
    return Declared(e, "coupon", "满减券", ({HOLDOUT: "不发券"} if holdout else {}) | {"A": "满减", "B": "无门槛"})


def test_report_numbers_and_verdicts():
    counts = {"holdout|assigned": 80, "holdout|purchased": 48, "A|assigned": 70, "A|purchased": 56,
              "A|revenue": 7000.0, "A|orders": 60, "B|assigned": 120, "B|purchased": 75}
    out = report(_declared(), counts, minimum=50)
    assert [a["name"] for a in out["arms"]] == [HOLDOUT, "A", "B"] and out["baseline"] == HOLDOUT
    a = out["arms"][1]
    bought = a["outcomes"]["purchased"]
    assert bought["rate"] == pytest.approx(0.8) and bought["diff"] == pytest.approx(0.2)
    assert bought["diff_interval"] == [pytest.approx(0.0524, abs=5e-5), pytest.approx(0.3339, abs=5e-5)]
    assert a["revenue_per_customer"] == pytest.approx(100.0) and a["revenue_diff"] == pytest.approx(100.0)
    assert a["verdict"].startswith("「A」更好：购买率比对照组高 20.0 个百分点")
    assert out["arms"][2]["verdict"].startswith("尚无结论")  # 75/120 vs 48/80: the interval holds 0
    assert out["verdict"].startswith("「A」更好")
    assert report(_declared(), counts)["verdict"].startswith("样本太少")  # 70 < 100 per arm
    first = report(_declared(holdout=0), {"A|assigned": 3, "B|assigned": 2})
    assert first["baseline"] == "A" and first["arms"][0]["outcomes"]["purchased"]["diff"] is None
    assert math.isclose(first["arms"][1]["share"], 0.5) and "样本太少" in first["verdict"]


def test_report_compares_two_arms_that_both_beat_the_holdout():
    counts = {"holdout|assigned": 230, "holdout|purchased": 16, "A|assigned": 1012, "A|purchased": 139,
              "B|assigned": 1030, "B|purchased": 131}
    out = report(_declared(), counts)
    assert [a["verdict"][:6] for a in out["arms"][1:]] == ["「A」更好：", "「B」更好："]
    assert out["verdict"].endswith("「A」与「B」之间尚无明显差异（按 3 项比较校正的 98.3% 区间 -2.6 ~ +4.6 包含 0）")


def test_gone_arms_are_shown_but_take_no_part_in_the_verdict():
    counts = {"holdout|assigned": 230, "holdout|purchased": 16, "A|assigned": 1012, "A|purchased": 139,
              "B|assigned": 1030, "B|purchased": 131, "old|assigned": 4, "old|purchased": 1}
    out = report(_declared(), counts)
    gone = out["arms"][-1]
    assert (gone["name"], gone["gone"], gone["sends"], gone["assigned"]) == ("old", True, "（已从配置中删除）", 4)
    assert gone["verdict"].startswith("已从配置中删除") and "old" not in out["verdict"]
    assert out["verdict"].startswith("「A」更好") and out["comparisons"] == 3  # not 样本太少 for the 4 of 「old」
    assert [a["gone"] for a in out["arms"]] == [False, False, False, True]
    without = report(_declared(holdout=0), {"A|assigned": 150, "B|assigned": 150, "holdout|assigned": 2})
    assert [a["name"] for a in without["arms"]] == ["A", "B", HOLDOUT] and without["arms"][2]["gone"]
    assert without["verdict"].startswith("尚无结论") and without["comparisons"] == 1  # the holdout set to 0


def test_the_verdict_corrects_for_its_comparisons():
    # 41/200 vs 25/200: inside 95% it excludes 0, corrected for 3 comparisons (98.3%) it does not
    counts = {"holdout|assigned": 200, "holdout|purchased": 25, "A|assigned": 200, "A|purchased": 41,
              "B|assigned": 200, "B|purchased": 25}
    out = report(_declared(), counts)
    a = out["arms"][1]
    lo95, _ = a["outcomes"]["purchased"]["diff_interval"]  # shown: the 95% interval, as before
    assert lo95 > 0 and a["outcomes"]["purchased"]["diff_interval"] == [pytest.approx(x) for x in newcombe(41, 200, 25, 200)]
    assert a["verdict_interval"][0] < 0 < a["verdict_interval"][1]
    assert a["verdict"].startswith("尚无结论") and "按 3 项比较校正的 98.3% 区间" in a["verdict"]
    assert (out["comparisons"], out["verdict_level"]) == (3, pytest.approx(1 - 0.05 / 3))
    one = report(Declared(Experiment("coupon:y", (Arm("A", 1),), 0.5), "coupon", "券", {HOLDOUT: "", "A": ""}),
                 {k: v for k, v in counts.items() if not k.startswith("B|")})
    assert one["comparisons"] == 1 and one["verdict"].startswith("「A」更好") and "（95% 区间" in one["verdict"]
    # Under no difference at all, the verdict calls a winner or a loser at most 5% of the time (9% uncorrected).
    rng, calls = random.Random(14), 0
    for _ in range(2000):
        sim = {}
        for arm, n in ((HOLDOUT, 300), ("A", 600), ("B", 600)):
            sim |= {f"{arm}|assigned": n, f"{arm}|purchased": sum(rng.random() < 0.3 for _ in range(n))}
        calls += any(word in report(_declared(), sim)["verdict"] for word in ("更好", "更差"))
    assert calls / 2000 < 0.05


def test_lower_is_better_pairwise_names_the_better_arm():
    e = Experiment("coupon:u", (Arm("A", 1), Arm("B", 1)), 0.1, metric="unsubscribed")
    d = Declared(e, "coupon", "券", {HOLDOUT: "不发券", "A": "满减", "B": "无门槛"})
    counts = {"holdout|assigned": 400, "holdout|unsubscribed": 80, "A|assigned": 2000, "A|unsubscribed": 60,
              "B|assigned": 2000, "B|unsubscribed": 200}
    out = report(d, counts)
    assert [a["verdict"][:6] for a in out["arms"][1:]] == ["「A」更好：", "「B」更好："]
    assert out["verdict"].endswith("；「A」比「B」更好：退订率低 7.0 个百分点（按 3 项比较校正的 98.3% 区间 -8.9 ~ -5.2）")


def test_the_verdict_says_when_windows_are_still_open():
    counts = {"holdout|assigned": 230, "holdout|purchased": 16, "A|assigned": 1012, "A|purchased": 139,
              "B|assigned": 1030, "B|purchased": 131}
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    still = report(_declared(), counts, open_until=now + timedelta(days=2), now=now)
    assert still["verdict"].endswith("（部分客户观察期未结束）") and still["windows_open"] is True
    assert still["open_until"] == "2026-12-03T12:00:00+00:00"
    closed = report(_declared(), counts, open_until=now, now=now)  # the last window ends now: closed
    assert not closed["verdict"].endswith("（部分客户观察期未结束）") and closed["windows_open"] is False
    assert report(_declared(), {}, open_until=None, now=now)["verdict"] == "还没有客户进入这个实验"


def test_what_an_experiment_may_not_be(tmp_path):
    path = tmp_path / "j.yaml"
    _, errors = _journey(tmp_path, """\
        - id: hello
          kind: welcome
          holdout: 0.1
          variants:
            - {name: A, content: {text: 你好}}
        - id: later
          wait: 1d
          kind: offer
          variants:
            - {name: A, content: {text: 你好}}
        """)
    assert [str(e) for e in errors] == [
        f"{path}:9: steps[0].variants: a welcome step goes out with the 20-second welcome code: it cannot be an "
        "experiment (put the variants on a later step)",
        f"{path}:14: steps[1].variants: an experiment needs two variants, or one variant and a holdout share"]
    coupons = tmp_path / "coupons.yaml"
    coupons.write_text(CAMPAIGN.replace("    holdout: 0.1\n", "    holdout_reply: 下次再送您～\n"), encoding="utf-8")
    with pytest.raises(Exception) as exc:
        load_campaigns(coupons)
    assert str(exc.value) == f"{coupons}:9: campaigns[0].holdout_reply: only used with variants and a holdout share"
