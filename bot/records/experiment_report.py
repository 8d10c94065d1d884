"""An experiment's numbers as operators read them: per arm the rates with 95% intervals, the difference to the
baseline (the holdout, else the first variant) and a verdict in Chinese that will not call a winner too early.

The verdict makes `comparisons` comparisons (each variant with the baseline, and the best two variants with each
other when both beat the holdout) and reads each at the Bonferroni level 1 - 0.05 / m, so that all of them
together call a false winner at most 5% of the time; the intervals shown per arm stay 95% ones. Arms removed from
the YAML are shown but take no part in the verdict. `report` is pure (counters in, the `experiments stats --json`
object out); `reports` reads the counters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from statistics import NormalDist
from typing import Any

from bot.records.experiments import Declared, Experiments
from bot.records.intervals import Z95, newcombe, wilson
from sop.variants import HOLDOUT, OUTCOMES

__all__ = ["ALPHA", "GONE", "MIN_PER_ARM", "METRIC_LABELS", "arm_label", "chart_groups", "comparisons", "gone_arms",
           "report", "reports"]

MIN_PER_ARM = 100  # customers per arm before any verdict
ALPHA = 0.05  # the chance of any false call the verdict allows itself, over all of its comparisons
METRIC_LABELS = {"replied": "回复率", "redeemed": "核销率", "purchased": "购买率", "unsubscribed": "退订率",
                 "contact_deleted": "删好友率"}
LOWER_IS_BETTER = frozenset({"unsubscribed", "contact_deleted"})
GONE = "（已从配置中删除）"  # what a removed arm "sends"
OPEN = "（部分客户观察期未结束）"  # the verdict's end while some customers' windows are still open


def arm_label(arm: str) -> str:
    """How an arm is named in Chinese: 对照组 for the holdout, 「A」 for a variant."""
    return "对照组" if arm == HOLDOUT else f"「{arm}」"


def gone_arms(d: Declared, counts: Mapping[str, float]) -> list[str]:
    """Arms with customers that the YAML no longer declares (a removed or renamed variant, a holdout set to 0)."""
    return sorted({k.rsplit("|", 1)[0] for k in counts if k.endswith("|assigned")} - set(d.arms))


def comparisons(arms: int, holdout: bool) -> int:
    """The verdict's comparisons among `arms` arms (holdout counted): each with the baseline, plus the best two."""
    return max(1, arms - 1 + (1 if holdout and arms >= 3 else 0))


def _z(m: int) -> float:
    """The two-sided normal quantile for ALPHA shared by `m` comparisons (Bonferroni)."""
    return Z95 if m == 1 else NormalDist().inv_cdf(1 - ALPHA / (2 * m))


def _level(m: int) -> str:
    """The verdict's interval level in words: 95%, or e.g. 98.3%, corrected for 3 comparisons."""
    return "95% 区间" if m == 1 else f"按 {m} 项比较校正的 {(1 - ALPHA / m) * 100:.1f}% 区间"


def _pair(bounds: tuple[float, float] | None) -> list[float] | None:
    return list(bounds) if bounds is not None else None


def _pts(x: float) -> str:
    return f"{x * 100:+.1f}"


def _arm(name: str, counts: Mapping[str, float], base: str | None, n_base: int, share: float,
         sends: str | None) -> dict[str, Any]:
    """One arm's numbers (`sends` None: removed from the YAML); differences (arm minus baseline) where both have some."""
    n = int(counts.get(f"{name}|assigned", 0))
    outcomes: dict[str, Any] = {}
    for kind in OUTCOMES:
        k = int(counts.get(f"{name}|{kind}", 0))
        k_base = int(counts.get(f"{base}|{kind}", 0))
        compare = base is not None and name != base
        outcomes[kind] = {
            "count": k, "rate": k / n if n else None, "interval": _pair(wilson(k, n)),
            "diff": k / n - k_base / n_base if compare and n and n_base else None,
            "diff_interval": _pair(newcombe(k, n, k_base, n_base)) if compare else None}
    revenue = float(counts.get(f"{name}|revenue", 0.0))
    per = revenue / n if n else None
    base_per = counts.get(f"{base}|revenue", 0.0) / n_base if n_base else None
    return {"name": name, "holdout": name == HOLDOUT, "share": share, "sends": GONE if sends is None else sends,
            "assigned": n, "outcomes": outcomes,
            "orders": int(counts.get(f"{name}|orders", 0)), "revenue": revenue, "revenue_per_customer": per,
            "revenue_diff": per - base_per if base is not None and name != base and per is not None
            and base_per is not None else None,
            "gone": sends is None, "verdict_interval": None}


def _verdict(arm: dict[str, Any], base: dict[str, Any], metric: str, minimum: int, m: int) -> tuple[str, int]:
    """(sentence, sign): +1 better than the baseline, -1 worse, 0 none; sets the arm's corrected verdict_interval."""
    label, what = METRIC_LABELS[metric], arm_label(arm["name"])
    if arm["gone"]:
        return "已从配置中删除：仍显示其客户的数字，不参与结论", 0
    if arm["assigned"] < minimum or base["assigned"] < minimum:
        return (f"样本太少：{what} {arm['assigned']} 位、{arm_label(base['name'])} {base['assigned']} 位客户"
                f"（每组至少 {minimum} 位），尚无结论"), 0
    o, b = arm["outcomes"][metric], base["outcomes"][metric]
    lo, hi = newcombe(o["count"], arm["assigned"], b["count"], base["assigned"], _z(m)) or (0.0, 0.0)
    arm["verdict_interval"] = [lo, hi]
    if lo <= 0 <= hi:
        return (f"尚无结论：{what}的{label}与{arm_label(base['name'])}相差 {_pts(o['diff'])} 个百分点，"
                f"{_level(m)} {_pts(lo)} ~ {_pts(hi)} 包含 0，可能只是随机波动"), 0
    higher = lo > 0
    better = higher != (metric in LOWER_IS_BETTER)
    return (f"{what}{'更好' if better else '更差'}：{label}比{arm_label(base['name'])}{'高' if higher else '低'} "
            f"{abs(o['diff']) * 100:.1f} 个百分点（{_level(m)} {_pts(lo)} ~ {_pts(hi)}）"), 1 if better else -1


def _between(one: dict[str, Any], two: dict[str, Any], metric: str, m: int) -> str:
    """The best two variants, both better than the holdout, with each other (`one` the better by its rate)."""
    label = METRIC_LABELS[metric]
    k1, k2 = one["outcomes"][metric]["count"], two["outcomes"][metric]["count"]
    lo, hi = newcombe(k1, one["assigned"], k2, two["assigned"], _z(m)) or (0.0, 0.0)
    a, b = arm_label(one["name"]), arm_label(two["name"])
    if lo <= 0 <= hi:
        return f"{a}与{b}之间尚无明显差异（{_level(m)} {_pts(lo)} ~ {_pts(hi)} 包含 0）"
    diff = k1 / one["assigned"] - k2 / two["assigned"]
    return (f"{a}比{b}更好：{label}{'高' if diff > 0 else '低'} {abs(diff) * 100:.1f} 个百分点"
            f"（{_level(m)} {_pts(lo)} ~ {_pts(hi)}）")


def _overall(arms: list[dict[str, Any]], base: dict[str, Any], metric: str, minimum: int, m: int) -> str:
    """One plain sentence for the experiment, about the arms still in the YAML."""
    live = [a for a in arms if not a["gone"]]
    if not any(a["assigned"] for a in live):
        return "还没有客户进入这个实验"
    small = min(live, key=lambda a: a["assigned"])
    if small["assigned"] < minimum:
        return (f"样本太少：每组至少需要 {minimum} 位客户才下结论（{arm_label(small['name'])}目前 "
                f"{small['assigned']} 位），尚无结论")
    others = [a for a in live if a is not base]
    if not any(a["sign"] for a in others):
        return (f"尚无结论：各组与{arm_label(base['name'])}的{METRIC_LABELS[metric]}之差，"
                f"{_level(m)}都包含 0，可能只是随机波动")
    said = "；".join(a["verdict"] for a in others if a["sign"])
    lower = metric in LOWER_IS_BETTER  # the better of two has the lower rate
    better = sorted((a for a in others if a["sign"] > 0),
                    key=lambda a: (a["outcomes"][metric]["rate"] or 0) * (1 if lower else -1))
    if len(better) >= 2 and base["holdout"]:  # both help: is one better than the other?
        said += "；" + _between(better[0], better[1], metric, m)
    return said


def report(d: Declared, counts: Mapping[str, float], minimum: int = MIN_PER_ARM,
           open_until: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The `experiments stats --json` object of one experiment from its counters, windows open if `open_until` > `now`."""
    e = d.experiment
    names = list(d.arms) if e.holdout else [a.name for a in e.arms]
    gone = gone_arms(d, counts)
    base = HOLDOUT if e.holdout else names[0]
    n_base = int(counts.get(f"{base}|assigned", 0))
    shares = e.shares()
    arms = [_arm(name, counts, base, n_base, shares.get(name, 0.0), d.arms.get(name)) for name in [*names, *gone]]
    baseline = next(a for a in arms if a["name"] == base)
    m = comparisons(len(names), bool(e.holdout))
    for a in arms:
        a["verdict"], a["sign"] = ("基准组（其他组与它比较）", 0) if a is baseline else \
            _verdict(a, baseline, e.metric, minimum, m)
    verdict = _overall(arms, baseline, e.metric, minimum, m)
    windows_open = open_until is not None and now is not None and open_until > now
    if windows_open and verdict != "还没有客户进入这个实验":
        verdict += OPEN
    for a in arms:
        del a["sign"]
    return {"id": e.id, "kind": d.kind, "title": d.title, "metric": e.metric, "window_days": e.window_days,
            "holdout": e.holdout, "baseline": base, "min_per_arm": minimum, "arms": arms, "verdict": verdict,
            "comparisons": m, "verdict_level": 1 - ALPHA / m, "windows_open": windows_open,
            "open_until": open_until.isoformat() if open_until is not None else None}


def reports(experiments: Experiments, declared: Iterable[Declared], minimum: int = MIN_PER_ARM,
            now: datetime | None = None) -> list[dict[str, Any]]:
    """The report of every declared experiment, from Redis, as of `now` (default the current time)."""
    now = now or datetime.now(experiments.tz)
    return [report(d, experiments.counts(d.experiment.id), minimum, experiments.open_until(d.experiment.id), now)
            for d in declared]


def chart_groups(row: Mapping[str, Any]) -> list[tuple[str, list[float]]]:
    """Per arm (in Chinese), each outcome's rate in percent, for a grouped bar chart of one report."""
    return [(arm_label(a["name"]), [round((a["outcomes"][k]["rate"] or 0) * 100, 1) for k in OUTCOMES])
            for a in row["arms"]]
