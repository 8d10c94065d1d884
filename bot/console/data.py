"""What the console pages show, read from Redis as the running bot wrote it."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.records import daily, handoff_stats
from bot.records import labels as zh
from bot.records.customers import Customers
from bot.records.handoffs import Handoff, Handoffs
from bot.records.labels import Names
from bot.records.store import EVENTS
from bot.times import from_ts
from sop.plan import Rules

SOP_OUTCOMES = (("sent", "已发送"), ("deferred", "已推迟"), ("skipped", "已跳过"), ("failed", "失败"),
                ("reminded", "转员工提醒"))


def intent_name(label: str) -> str:
    """Chinese name of an intent label."""
    return zh.intent_zh(label)


def overview(r: redis.Redis, book: Any, tz: ZoneInfo, days: int, now: datetime | None = None,
             names: Names = Names()) -> dict[str, Any]:  # noqa: B008 - frozen default
    """Numbers for the overview page over the last `days` local days."""
    daily.rollup(r, tz)
    now = now or datetime.now(tz)
    period = daily.days_back(now.date(), days)
    per_day = daily.daily(r, period)
    labels = [d.strftime("%m-%d") for d in period]
    total: Counter[str] = Counter()
    for row in per_day.values():
        total.update(row)

    def series(name: str) -> list[int]:
        return [per_day[d.isoformat()].get(name, 0) for d in period]

    def by_prefix(prefix: str) -> list[tuple[str, int]]:
        return sorted(((k[len(prefix):], v) for k, v in total.items() if k.startswith(prefix) and v),
                      key=lambda kv: -kv[1])

    since = datetime.combine(period[0], datetime.min.time(), tz)
    hstats = handoff_stats.stats(Handoffs(r, tz), now, since)
    coupons = book.stats(now) if book else []
    issued_period = dict(by_prefix("coupon_issued:"))
    reasons = lambda prefix: [(zh.reason_zh(k), v) for k, v in by_prefix(prefix)]  # noqa: E731
    return {
        "days": days, "labels": labels, "since": since, "now": now,
        "messages": series("message_in"), "replies": series("reply_sent"),
        "messages_total": total.get("message_in", 0), "replies_total": total.get("reply_sent", 0),
        "intents": [(intent_name(k), v) for k, v in by_prefix("intent:")],
        "handoffs": series("handoff"), "handoff_stats": hstats,
        "handoff_people": _people(hstats, names),
        "coupons": coupons, "coupon_groups": [(names.campaign(c["campaign"]), [c["issued"], c["redeemed"], c["expired"]])
                                              for c in coupons],
        "coupons_issued_period": issued_period,
        "coupon_results": by_prefix("coupon:"),
        "sop": {name: series(f"sop:{key}") for key, name in SOP_OUTCOMES},
        "sop_totals": {name: total.get(f"sop:{key}", 0) for key, name in SOP_OUTCOMES},
        "sop_skipped": reasons("sop:skipped:"), "sop_deferred": reasons("sop:deferred:"),
        "sop_failed": reasons("touch_failed:"),
    }


def _people(stats: Any, names: Names) -> list[tuple[str, Any]]:
    """合计 and each consultant's handoff numbers, by name."""
    return [("合计", stats["total"])] + [(names.person(uid) if uid != "queue" else "（排队中）", b)
                                       for uid, b in stats["by_consultant"].items()]


def live_row(h: Handoff, now: datetime, names: Names) -> dict[str, Any]:
    """One handoff of the live queue as the page and its JSON show it."""
    overdue = h.first_reply_at is None and now > h.deadline
    return {"h": h, "id": h.id, "ref": h.ref if h.no else "", "customer": h.customer,
            "waited_min": int((now - h.created_at).total_seconds() // 60),
            "since": h.created_at.timestamp(), "overdue": overdue,
            "state": h.state, "state_name": zh.zh(h.state, "handoff_state"), "intent_name": intent_name(h.intent),
            "holder": names.person(h.holder) if h.holder else "（排队中）"}


def live_handoffs(r: redis.Redis, tz: ZoneInfo, now: datetime | None = None,
                  names: Names = Names()) -> dict[str, Any]:  # noqa: B008 - frozen default
    """The live queue (waiting, claimed, overdue) and per-consultant numbers."""
    now = now or datetime.now(tz)
    book = Handoffs(r, tz)
    live = book.list("open") + book.list("claimed") + book.list("answered")
    live.sort(key=lambda h: h.created_at)
    rows = []
    per: dict[str, Counter[str]] = {}
    for h in live:
        row = live_row(h, now, names)
        rows.append(row)
        c = per.setdefault(row["holder"], Counter())
        c[h.state] += 1
        c["overdue"] += row["overdue"]
    stats = handoff_stats.stats(book, now, now - timedelta(days=7))
    groups = [(name, [c["open"], c["claimed"], c["answered"], c["overdue"]]) for name, c in sorted(per.items())]
    return {"rows": rows, "per_consultant": sorted(per.items()), "consultant_groups": groups, "stats": stats, "now": now,
            "people": _people(stats, names),
            "waiting": sum(h.state == "open" for h in live), "claimed": sum(h.state == "claimed" for h in live),
            "answered": sum(h.state == "answered" for h in live), "overdue": sum(r["overdue"] for r in rows)}


def find_customers(r: redis.Redis, query: str, limit: int = 20) -> list[str]:
    """Customer ids equal to or containing `query` (exact match first)."""
    query = query.strip()
    if not query:
        return []
    customers = Customers(r)
    found = [query] if customers.exists(query) else []
    found += [c for c in customers.find_by_name(query, limit) if c not in found]
    pattern = "wecom:cust:{*" + _glob_escape(query) + "*}"
    for key in r.scan_iter(match=pattern, count=1000):
        cid = key[len("wecom:cust:{"):-1] if key.endswith("}") else None
        if cid and cid not in found:
            found.append(cid)
        if len(found) >= limit:
            break
    return found


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def timeline(r: redis.Redis, book: Any, tz: ZoneInfo, customer: str, scan: int = 20000,
             names: Names = Names()) -> dict[str, Any]:  # noqa: B008 - frozen default
    """One customer: record, tags, intents, coupons, handoffs and the recent event timeline (one row per
    message or event, each a short Chinese sentence; a message seen during a handoff is one row)."""
    rec = Customers(r).get(customer)
    coupons = book.coupons_of(customer) if book else []
    by_code = {c.code: c.campaign for c in coupons}
    names = dataclasses.replace(names, campaign_of_code=lambda code: by_code.get(code) or names.campaign_of_code(code))
    handoffs = [h for h in Handoffs(r, tz).list(None, limit=2000) if h.customer == customer]
    hids = {h.id for h in handoffs}
    items = []
    messages: dict[str, dict[str, Any]] = {}  # msgid -> its row
    for _, f in r.xrevrange(EVENTS, count=scan):
        try:
            data = json.loads(f.get("data") or "{}")
        except ValueError:
            continue
        if data.get("customer") != customer and data.get("handoff") not in hids:
            continue
        kind = f.get("kind", "")
        msgid = data.get("msgid") if kind in ("message_in", "message_while_human") else None
        if msgid and msgid in messages:  # the same message, recorded twice while a person holds the chat
            row = messages[msgid]
            if kind == "message_while_human":
                row["kind"], row["kind_name"] = kind, zh.event_name(kind)
            if data.get("intent") and "意图" not in row["detail"]:
                row["detail"] = zh.event_sentence("message_in", {**data}, names)
            continue
        row = {"at": datetime.fromtimestamp(float(f.get("at") or 0), tz), "kind": kind,
               "kind_name": zh.event_name(kind), "detail": zh.event_sentence(kind, data, names)}
        if msgid:
            messages[msgid] = row
        items.append(row)
    for tag, ts in rec.tags.items():
        items.append({"at": from_ts(ts, tz), "kind": "tag", "kind_name": zh.event_name("tag"),
                      "detail": zh.event_sentence("tag", {"tag": tag}, names)})
    items.sort(key=lambda i: i["at"], reverse=True)
    return {"rec": rec, "coupons": coupons, "handoffs": handoffs, "events": items[:500],
            "intents": sorted(((intent_name(k), v) for k, v in rec.intents.items()), key=lambda kv: -kv[1]),
            "first_seen": from_ts(rec.first_seen, tz) if rec.first_seen else None,
            "last_seen": from_ts(rec.last_seen, tz) if rec.last_seen else None,
            "exists": Customers(r).exists(customer)}


def next_days(r: redis.Redis, tz: ZoneInfo, days: int = 7, now: datetime | None = None,
              names: Names = Names()) -> dict[str, Any]:  # noqa: B008 - frozen default
    """Pending SOP touches per journey per local day for the next `days` days."""
    from sop.engine import Ref, due_until

    now = now or datetime.now(tz)
    end = now + timedelta(days=days)
    period = [now.date() + timedelta(days=i) for i in range(days)]
    grid: dict[str, Counter[date]] = {}
    overdue: Counter[str] = Counter()
    for member, score in due_until(r, end):
        ref = Ref.parse(member)
        when = from_ts(score, tz)
        if when < now:
            overdue[ref.journey] += 1
            when = now
        grid.setdefault(ref.journey, Counter())[when.date()] += 1
    rows = {j: [c.get(d, 0) for d in period] for j, c in sorted(grid.items())}
    return {"days": period, "labels": [d.strftime("%m-%d") for d in period], "grid": rows, "overdue": overdue,
            "titled": {names.journey(j): row for j, row in rows.items()}}


def plan_for(journeys: Any, r: redis.Redis, tz: ZoneInfo, customer: str, rules: Rules,
             days: int = 14) -> Any:
    """The customer's plan as `sop plan --customer` prints it (sop.plan_view.customer_plan): what the engine holds
    (rows with decision "pending" / "stopped") first, then what would follow; unknown customers preview as new."""
    from sop.plan_view import customer_plan

    customers = Customers(r)
    return customer_plan(r, list(journeys or ()), rules, tz, customers, customer, datetime.now(tz), days,
                         exists=customers.exists(customer))


def journey_errors(settings: Any, content: Any) -> list[str]:
    """Validation errors of the journeys on disk, and a kept-running-version note from content reload."""
    from sop import journeys as journeys_mod

    path = (settings.content or {}).get("journeys")
    errors = [str(e) for e in journeys_mod.load_dir(path)[1]] if path else []
    if content is not None and getattr(content, "error", None):
        errors.append(f"运行中的版本未更新：{content.error}")
    return errors
