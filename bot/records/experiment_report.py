"""An experiment's numbers as operators read them: per arm the rates with 95% intervals, the difference to the
baseline (the holdout, else the first variant) and a verdict in Chinese that will not call a winner too early.

`report` is pure (counters in, the `experiments stats --json` object out); `reports` reads the counters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.records.experiments import Declared, Experiments
from bot.records.intervals import newcombe, wilson
from sop.variants import HOLDOUT, OUTCOMES

__all__ = ["MIN_PER_ARM", "METRIC_LABELS", "arm_label", "chart_groups", "report", "reports"]

MIN_PER_ARM = 100  # customers per arm before any verdict
METRIC_LABELS = {"replied": "回复率", "redeemed": "核销率", "purchased": "购买率", "unsubscribed": "退订率",
                 "contact_deleted": "删好友率"}
LOWER_IS_BETTER = frozenset({"unsubscribed", "contact_deleted"})


def arm_label(arm: str) -> str:
    """How an arm is named in Chinese: 对照组 for the holdout, 「A」 for a variant."""
    return "对照组" if arm == HOLDOUT else f"「{arm}」"


def _pair(bounds: tuple[float, float] | None) -> list[float] | None:
    return list(bounds) if bounds is not None else None


def _pts(x: float) -> str:
    return f"{x * 100:+.1f}"


def _arm(name: str, counts: Mapping[str, float], base: str | None, n_base: int, share: float,
         sends: str) -> dict[str, Any]:
    """One arm's numbers; differences (arm minus baseline) unless it is the baseline."""
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
    return {"name": name, "holdout": name == HOLDOUT, "share": share, "sends": sends, "assigned": n,
            "outcomes": outcomes,
            "orders": int(counts.get(f"{name}|orders", 0)), "revenue": revenue, "revenue_per_customer": per,
            "revenue_diff": per - base_per if base is not None and name != base and per is not None
            and base_per is not None else None}


def _verdict(arm: dict[str, Any], base: dict[str, Any], metric: str, minimum: int) -> tuple[str, int]:
    """(sentence, sign): +1 better than the baseline, -1 worse, 0 no conclusion (too few, or the interval has 0)."""
    label, what = METRIC_LABELS[metric], arm_label(arm["name"])
    if arm["assigned"] < minimum or base["assigned"] < minimum:
        return (f"样本太少：{what} {arm['assigned']} 位、{arm_label(base['name'])} {base['assigned']} 位客户"
                f"（每组至少 {minimum} 位），尚无结论"), 0
    o = arm["outcomes"][metric]
    lo, hi = o["diff_interval"]
    if lo <= 0 <= hi:
        return (f"尚无结论：{what}的{label}与{arm_label(base['name'])}相差 {_pts(o['diff'])} 个百分点，"
                f"95% 区间 {_pts(lo)} ~ {_pts(hi)} 包含 0，可能只是随机波动"), 0
    higher = lo > 0
    better = higher != (metric in LOWER_IS_BETTER)
    return (f"{what}{'更好' if better else '更差'}：{label}比{arm_label(base['name'])}{'高' if higher else '低'} "
            f"{abs(o['diff']) * 100:.1f} 个百分点（95% 区间 {_pts(lo)} ~ {_pts(hi)}）"), 1 if better else -1


def _overall(arms: list[dict[str, Any]], base: dict[str, Any], metric: str, minimum: int) -> str:
    """One plain sentence for the experiment."""
    if not any(a["assigned"] for a in arms):
        return "还没有客户进入这个实验"
    small = min(arms, key=lambda a: a["assigned"])
    if small["assigned"] < minimum:
        return (f"样本太少：每组至少需要 {minimum} 位客户才下结论（{arm_label(small['name'])}目前 "
                f"{small['assigned']} 位），尚无结论")
    others = [a for a in arms if a is not base]
    signs = [a["sign"] for a in others]
    if not any(signs):
        return (f"尚无结论：各组与{arm_label(base['name'])}的{METRIC_LABELS[metric]}之差，"
                "95% 区间都包含 0，可能只是随机波动")
    said = "；".join(a["verdict"] for a in others if a["sign"])
    better = sorted((a for a in others if a["sign"] > 0), key=lambda a: -(a["outcomes"][metric]["rate"] or 0))
    if len(better) >= 2 and base["holdout"]:  # both help: is one better than the other?
        one, two = better[0], better[1]
        k1, k2 = one["outcomes"][metric]["count"], two["outcomes"][metric]["count"]
        lo, hi = newcombe(k1, one["assigned"], k2, two["assigned"]) or (0.0, 0.0)
        said += (f"；{arm_label(one['name'])}与{arm_label(two['name'])}之间" +
                 (f"尚无明显差异（95% 区间 {_pts(lo)} ~ {_pts(hi)} 包含 0）" if lo <= 0 <= hi else
                  f"，{arm_label(one['name'])}的{METRIC_LABELS[metric]}更{'高' if lo > 0 else '低'}"
                  f"（差 95% 区间 {_pts(lo)} ~ {_pts(hi)}）"))
    return said


def report(d: Declared, counts: Mapping[str, float], minimum: int = MIN_PER_ARM) -> dict[str, Any]:
    """The `experiments stats --json` object of one experiment from its counters (Experiments.counts)."""
    e = d.experiment
    names = list(d.arms) if e.holdout else [a.name for a in e.arms]
    gone = sorted({k.split("|")[0] for k in counts} - set(names))  # arms since removed from the YAML
    base = HOLDOUT if e.holdout else names[0]
    n_base = int(counts.get(f"{base}|assigned", 0))
    shares = e.shares()
    arms = [_arm(name, counts, base, n_base, shares.get(name, 0.0), d.arms.get(name, "（已从配置中删除）"))
            for name in [*names, *gone]]
    baseline = next(a for a in arms if a["name"] == base)
    for a in arms:
        a["verdict"], a["sign"] = ("基准组（其他组与它比较）", 0) if a is baseline else \
            _verdict(a, baseline, e.metric, minimum)
    verdict = _overall(arms, baseline, e.metric, minimum)
    for a in arms:
        del a["sign"]
    return {"id": e.id, "kind": d.kind, "title": d.title, "metric": e.metric, "window_days": e.window_days,
            "holdout": e.holdout, "baseline": base, "min_per_arm": minimum, "arms": arms, "verdict": verdict}


def reports(experiments: Experiments, declared: Iterable[Declared], minimum: int = MIN_PER_ARM) -> list[dict[str, Any]]:
    """The report of every declared experiment, from Redis."""
    return [report(d, experiments.counts(d.experiment.id), minimum) for d in declared]


def chart_groups(row: Mapping[str, Any]) -> list[tuple[str, list[float]]]:
    """Per arm (in Chinese), each outcome's rate in percent, for a grouped bar chart of one report."""
    return [(arm_label(a["name"]), [round((a["outcomes"][k]["rate"] or 0) * 100, 1) for k in OUTCOMES])
            for a in row["arms"]]
