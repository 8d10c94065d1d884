"""One truth for the plan: `sop plan --customer` and the console's SOP page show what the engine holds in Redis
(pending steps, stopped journeys) before what would follow, through one function (sop.plan_view.customer_plan)."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.act.triggers import record_purchase
from bot.records.customers import Customers
from sop.cli import print_plan
from sop.plan_view import PENDING, STOPPED, CustomerPlan, customer_plan
from tests.scenarios.console_helpers import TOKEN, serve
from tests.scenarios.test_cli_sop import env, run  # noqa: F401 - the CLI's environment fixture
from tests.scenarios.test_console import login
from tests.support import sop_due

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2024, 12, 2, 10, 0, tzinfo=SH)  # a Monday: the customer is added
CID = "wmPlanTruth01"


def plan(runtime, r, start: datetime | None) -> CustomerPlan:
    rt = runtime
    return customer_plan(r, list(rt.content.journeys), rt.settings.sop_rules, rt.settings.timezone, Customers(r),
                         CID, start)


def pending_of(p: CustomerPlan) -> list[tuple[str, str]]:
    return [(t.journey, t.step) for t in p.pending]


def stopped_of(p: CustomerPlan) -> dict[str, str]:
    return {s.journey: s.reason for s in p.stopped}


@pytest.fixture()
def engine(runtime, r):
    """A customer added at T0 (welcome sent), who buys at 11:00, asks the price at 12:00 and gets a coupon at 13:00."""
    e = runtime.engine()
    Customers(r).saw_message(CID, T0.timestamp(), open_kfid="wk1")
    assert e.enroll(CID, "customer_added", T0) == 1
    assert e.tick(T0).sent == 1  # the welcome; day1_hello is next
    assert record_purchase(r, e, CID, "O-truth-1", T0 + timedelta(hours=1), 99.0) == (True, 1)
    assert e.enroll(CID, "intent", T0 + timedelta(hours=2), intent="price") == 1
    assert e.enroll(CID, "coupon_issued", T0 + timedelta(hours=3), expires_at=T0 + timedelta(days=7),
                    campaign="new-customer-10", key="CPN-TRUTH") == 1
    return e


def test_the_plan_lists_what_the_engine_holds_then_what_would_follow(engine, runtime, r):
    p = plan(runtime, r, T0 + timedelta(hours=5))
    assert pending_of(p) == [("new_customer_week", "day1_hello"), ("price_followup", "followup"),
                             ("purchase_guide", "day3_guide"), ("coupon_expiry", "remind")]
    assert [t.due for t in p.pending][1:] == [T0 + timedelta(hours=50), datetime(2024, 12, 5, 20, tzinfo=SH),
                                             T0 + timedelta(days=6)]
    assert all(t.due.utcoffset() == timedelta(hours=8) for t in p.pending)  # local times
    assert {t.channel for t in p.pending} <= {"kf", "mass_task", "staff"} and p.pending[1].channel == "staff"
    assert p.stopped == []
    # What would follow leaves out the steps of runs the engine holds: no new-customer week a second time.
    assert not any(row.journey in {j for j, _ in pending_of(p)} for row in p.following)
    assert [row.decision for row in p.rows[:4]] == [PENDING] * 4 and p.rows[4:] == p.following

    # A second (and third) price question: still one follow-up, due 48 h after the first.
    assert engine.enroll(CID, "intent", T0 + timedelta(hours=6), intent="price") == 0
    assert engine.enroll(CID, "intent", T0 + timedelta(days=1), intent="price") == 0
    assert [m.split("|")[0] for m in sop_due(r)].count("price_followup") == 1
    assert pending_of(plan(runtime, r, T0 + timedelta(hours=6))) == pending_of(p)

    # A handoff stops the journeys that stop on it; the coupon reminder stays pending.
    engine.note_fact(CID, "handed_off", T0 + timedelta(hours=7))
    p = plan(runtime, r, T0 + timedelta(hours=8))
    assert pending_of(p) == [("coupon_expiry", "remind")]
    assert stopped_of(p) == {"new_customer_week": "handed_off", "price_followup": "handed_off",
                             "purchase_guide": "handed_off"}
    assert all(s.at is None for s in p.stopped)  # skipped when their steps come due
    assert [row.decision for row in p.rows[:4]] == [PENDING, STOPPED, STOPPED, STOPPED]
    assert not any(row.journey in stopped_of(p) for row in p.following)

    # The ticks stop them; the plan still names them, now with when.
    for day in (3, 4, 5, 6):
        while engine.tick(datetime(2024, 12, day, 20, tzinfo=SH)).claimed:
            pass
    p = plan(runtime, r, datetime(2024, 12, 6, 21, tzinfo=SH))
    assert pending_of(p) == [("coupon_expiry", "remind")]
    assert stopped_of(p) == {"new_customer_week": "handed_off", "price_followup": "handed_off",
                             "purchase_guide": "handed_off"}
    assert all(s.at is not None for s in p.stopped)
    assert not any(row.journey in stopped_of(p) for row in p.following)


def test_the_cli_prints_the_engine_part_first(engine, runtime, r, env, capsys):  # noqa: F811
    engine.note_fact(CID, "handed_off", T0 + timedelta(hours=7))
    start = ["--start", (T0 + timedelta(hours=8)).isoformat()]
    assert run(["sop", "plan", "--customer", CID, *start]) == 0
    out = capsys.readouterr().out
    head, _, rest = out.partition("would follow (simulated")
    assert head.startswith("pending in the engine (Redis): 1\n2024-12-08 Sun 10:00  pending")
    assert "coupon_expiry/remind" in head and "stopped journeys: 3" in head
    assert "purchase_guide/day3_guide: handed_off" in head and "new_customer_week/" not in rest
    assert run(["sop", "plan", "--customer", CID, *start, "--json", "--pending"]) == 0
    first, *rows = capsys.readouterr().out.splitlines()
    engine_part = json.loads(first)
    assert [(t["journey"], t["step"], t["due"]) for t in engine_part["pending"]] == [
        ("coupon_expiry", "remind", "2024-12-08T10:00:00+08:00")]
    assert {s["journey"] for s in engine_part["stopped"]} == {"new_customer_week", "price_followup", "purchase_guide"}
    assert all(set(json.loads(row)) == {"journey", "step", "at", "due", "channel", "decision", "reason"}
               for row in rows)
    out = io.StringIO()
    p = plan(runtime, r, T0 + timedelta(hours=8))
    print_plan(p, list(runtime.content.journeys), True, out, SH, pending_json=True)
    assert json.loads(out.getvalue().splitlines()[0]) == engine_part  # the CLI prints the shared plan


def test_the_console_shows_the_same_plan(engine, runtime, sandbox, r):
    engine.note_fact(CID, "handed_off", T0 + timedelta(hours=7))
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, TOKEN, runtime.coupons)
    try:
        page = login(svc).get(svc.url + f"/admin/sop?customer={CID}").text
    finally:
        svc.stop()
    p = plan(runtime, r, None)  # the console plans from now
    table = re.search(r'<table id="plan">(.*?)</table>', page, flags=re.S)
    assert table is not None
    rows = [html.unescape(re.sub(r"<[^>]+>", " ", tr)) for tr in table.group(1).split("<tr>")[2:]]
    assert len(rows) == len(p.rows)
    held = [*p.pending, *p.stopped]
    assert pending_of(p) == [("coupon_expiry", "remind")] and len(held) == 4
    for text, item in zip(rows, held, strict=False):
        assert re.search(rf"(?<![\w]){re.escape(item.step)}(?![\w])", text), (item, text)
