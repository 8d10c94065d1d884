"""`wecom-bot experiments list|stats [--json]`: the A/B experiments the YAML declares, and how each arm does."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from bot.ops.common import runtime_or_exit, settings_or_exit
from bot.records.experiment_report import GONE, gone_arms, reports
from bot.records.experiments import Declared, Experiments, arms_of, declared
from sop.variants import HOLDOUT, OUTCOMES

__all__ = ["register", "listing", "print_arms", "print_list", "print_stats"]


def listing(experiments: Experiments, found: list[Declared]) -> list[dict[str, Any]]:
    """The `experiments list --json` array: each experiment's arms, shares and customers; removed arms last, as `stats`."""
    out = []
    for d in found:
        e, counts = d.experiment, experiments.counts(d.experiment.id)
        shares = e.shares()
        arms = [{"name": arm, "share": shares[arm], "sends": sends, "assigned": int(counts.get(f"{arm}|assigned", 0)),
                 "gone": False} for arm, sends in d.arms.items()]
        arms += [{"name": arm, "share": 0.0, "sends": GONE, "assigned": int(counts[f"{arm}|assigned"]), "gone": True}
                 for arm in gone_arms(d, counts)]
        out.append({"id": e.id, "kind": d.kind, "title": d.title, "metric": e.metric, "window_days": e.window_days,
                    "holdout": e.holdout, "arms": arms})
    return out


NONE = "no experiments: give a journey step or a coupon campaign `variants:` (README: Experiments)"


def print_list(rows: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    """Each experiment, then a table of its arms."""
    if not rows:
        print(NONE, file=out)
    for row in rows:
        print(f"{row['id']}  {row['title']}  ({row['kind']}, window {row['window_days']} days, "
              f"metric {row['metric']})", file=out)
        print(f"  {'arm':<16} {'share':>6} {'assigned':>9}  sends", file=out)
        for arm in row["arms"]:
            print(f"  {arm['name']:<16} {arm['share'] * 100:>5.0f}% {arm['assigned']:>9}  {arm['sends']}", file=out)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _diff(o: dict[str, Any]) -> str:
    if o["diff"] is None or o["diff_interval"] is None:
        return "—"
    lo, hi = o["diff_interval"]
    return f"{o['diff'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def print_stats(rows: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    """Per experiment: the rates per arm, the differences to the baseline with 95% intervals, the verdict."""
    if not rows:
        print(NONE, file=out)
    for row in rows:
        print(f"{row['id']}  {row['title']}  ({row['kind']}, window {row['window_days']} days, "
              f"baseline {row['baseline']})", file=out)
        print(f"  {'arm':<16} {'assigned':>8} " + " ".join(f"{k:>15}" for k in OUTCOMES) + f" {'revenue/cust':>12}",
              file=out)
        for arm in row["arms"]:
            rates = " ".join(f"{_pct(arm['outcomes'][k]['rate']):>15}" for k in OUTCOMES)
            per = arm["revenue_per_customer"]
            print(f"  {arm['name']:<16} {arm['assigned']:>8} {rates} {'—' if per is None else f'{per:.2f}':>12}",
                  file=out)
        print(f"  difference to the baseline, percentage points [95% interval] ({row['metric']} decides):", file=out)
        for arm in row["arms"]:
            if arm["name"] == row["baseline"]:
                continue
            parts = [f"{k} {_diff(arm['outcomes'][k])}" for k in OUTCOMES]
            money = arm["revenue_diff"]
            parts.append(f"revenue/customer {'—' if money is None else f'{money:+.2f}'}")
            print(f"  {arm['name']:<16} " + "; ".join(parts), file=out)
        print(f"  结论：{row['verdict']}", file=out)
        for arm in row["arms"]:
            if arm["name"] != row["baseline"] and arm["verdict"] not in row["verdict"]:
                print(f"    {arm['verdict']}", file=out)


def print_arms(experiments: Experiments | None, found: list[Declared], customer: str, tz: ZoneInfo,
               out: TextIO = sys.stdout) -> None:
    """`sop plan --customer`'s last part: the customer's arm of every experiment, recorded or the one they would get
    (None `experiments`: no Redis, every arm is the one they would get)."""
    if not found:
        return
    print("A/B experiments (variants):", file=out)
    for d, arm, got in arms_of(experiments, found, customer):
        name = "对照组/holdout: nothing is sent" if arm == HOLDOUT else f"variant {arm}: {d.arms.get(arm, '')}"
        when = (f"assigned {got.at.astimezone(tz):%Y-%m-%d %H:%M}, outcomes count until "
                f"{got.until.astimezone(tz):%Y-%m-%d %H:%M}" if got else "would get it: not assigned yet")
        print(f"  {d.experiment.id} ({d.title}): {name} ({when})", file=out)


def cmd_experiments(args: argparse.Namespace) -> int:
    """List the declared experiments, or their numbers."""
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        content = rt.content
        found = declared(content.journeys, content.campaigns) if content else []
        if args.experiment:
            found = [d for d in found if d.experiment.id == args.experiment]
            if not found:
                raise SystemExit(f"unknown experiment {args.experiment!r} (see `wecom-bot experiments list`)")
        if args.action == "list":
            rows = listing(rt.experiments, found)
            printer = print_list
        else:
            rows = reports(rt.experiments, found)
            printer = print_stats
        if args.json:
            print(json.dumps(rows if args.action == "list" else {"experiments": rows}, ensure_ascii=False))
        else:
            printer(rows, sys.stdout)
    finally:
        rt.close()
    return 0


def register(sub: Any) -> None:
    """Add `experiments` to the wecom-bot subparsers."""
    ex = sub.add_parser("experiments", help="A/B experiments of journey steps and coupon campaigns: the arms, "
                        "their outcomes, the difference to the holdout with a 95%% interval, a verdict",
                        description="list: each experiment the YAML declares (variants:, holdout:) with its arms, "
                        "shares and how many customers each holds. stats: per arm the share of customers who "
                        "replied, redeemed a coupon, purchased, unsubscribed or deleted the contact within the "
                        "window after assignment (Wilson 95% intervals), the difference to the holdout (or the first "
                        "variant) with a Newcombe 95% interval, revenue per customer, and a verdict in Chinese that "
                        "waits for enough customers.")
    ex.add_argument("action", choices=["list", "stats"], help="list: the experiments and arms; stats: the numbers")
    ex.add_argument("--experiment", metavar="ID", default=None,
                    help="only this experiment (journey_id.step_id, or coupon:campaign_name)")
    ex.add_argument("--json", action="store_true",
                    help="list: a JSON array; stats: one JSON object {\"experiments\": [...]} (README: Experiments)")
    ex.set_defaults(func=cmd_experiments)
