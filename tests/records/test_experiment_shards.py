"""An experiment's per-customer hashes spread over shards (16 on a cluster), and what is read from them sums them up."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.records.experiments import SHARDS, Experiments
from bot.times import DEFAULT_TZ
from sop.variants import Arm, Experiment

AB = Experiment("welcome.tip", (Arm("A", 1.0), Arm("B", 1.0)), holdout=0.1, window_days=7)
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=DEFAULT_TZ)


def test_an_experiment_of_many_customers_spreads_over_the_shards(r):
    r.set(SHARDS, 16)  # what a cluster records on first use
    ex = Experiments(r, DEFAULT_TZ)
    customers = [f"wmExp{i:04d}" for i in range(200)]
    arms = {c: ex.assign(AB, c, T0 + timedelta(minutes=i)) for i, c in enumerate(customers)}
    keys = [k for k in r.scan_iter("wecom:exp:{welcome.tip*}:arms")]
    assert len(keys) >= 12 and max(r.hlen(k) for k in keys) < 40  # no one key holds them all
    for c in customers[:3]:
        ex.record(c, "replied", T0 + timedelta(hours=5))
        ex.record(c, "replied", T0 + timedelta(hours=6))  # once per customer and outcome
    counts = ex.counts(AB.id)
    assert sum(v for k, v in counts.items() if k.endswith("|assigned")) == 200
    assert sum(v for k, v in counts.items() if k.endswith("|replied")) == 3
    assert {arm: counts[f"{arm}|assigned"] for arm in set(arms.values())} == {
        arm: list(arms.values()).count(arm) for arm in set(arms.values())}
    assert ex.open_until(AB.id) == T0 + timedelta(minutes=199, days=7)
    assert all(ex.peek(AB, c) == (arms[c], True) for c in customers[:20])


def test_a_customer_keeps_their_arm_when_the_shard_count_changes(r):
    ex = Experiments(r, DEFAULT_TZ)  # one shard (a single server)
    first = ex.assign(AB, "wmMoved", T0)
    r.set(SHARDS, 16)
    moved = Experiments(r, DEFAULT_TZ)
    assert moved.assign(AB, "wmMoved", T0 + timedelta(days=1), arm="B" if first == "A" else "A") == first
    assert moved.peek(AB, "wmMoved") == (first, True)
    assert sum(v for k, v in moved.counts(AB.id).items() if k.endswith("|assigned")) == 1  # not counted again
