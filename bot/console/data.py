"""What the console pages show, read from Redis as the running bot wrote it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.records import daily, handoff_stats
from bot.records.customers import Customers
from bot.records.handoffs import Handoffs
from bot.records.store import EVENTS
from bot.times import from_ts
from intents.labels import LABELS_ZH
from sop.plan import Rules

INTENT_NAMES = {**LABELS_ZH, "faq": "常见问题", "none": "非文本/未识别"}
STATE_NAMES = {"open": "等待中", "claimed": "已认领", "answered": "已回复", "closed": "已结束"}
SOP_OUTCOMES = (("sent", "已发送"), ("deferred", "已推迟"), ("skipped", "已跳过"), ("failed", "失败"),
                ("reminded", "转员工提醒"))
EVENT_NAMES = {"message_in": "客户消息", "message_while_human": "客户消息（人工接待中）", "reply_sent": "机器人发送",
               "reply_not_sent": "未发送", "coupon": "优惠券", "handoff_requested": "请求人工",
               "handoff_opened": "转人工", "handoff_claimed": "顾问认领", "handoff_first_reply": "顾问首次回复",
               "handoff_closed": "转人工结束", "touch": "SOP 触达", "touch_failed": "SOP 触达失败",
               "mass_task": "群发任务", "unsubscribed": "退订", "welcome_sent": "欢迎语", "send_failed": "发送失败",
               "staff_alert": "员工提醒", "robot_alert": "群机器人提醒"}


def intent_name(label: str) -> str:
    """Chinese name of an intent label (the label itself when unknown)."""
    return f"{INTENT_NAMES[label]}（{label}）" if label in INTENT_NAMES else label


def overview(r: redis.Redis, book: Any, tz: ZoneInfo, days: int, now: datetime | None = None) -> dict[str, Any]:
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
    return {
        "days": days, "labels": labels, "since": since, "now": now,
        "messages": series("message_in"), "replies": series("reply_sent"),
        "messages_total": total.get("message_in", 0), "replies_total": total.get("reply_sent", 0),
        "intents": [(intent_name(k), v) for k, v in by_prefix("intent:")],
        "handoffs": series("handoff"), "handoff_stats": hstats,
        "coupons": coupons, "coupon_groups": [(c["campaign"], [c["issued"], c["redeemed"], c["expired"]])
                                              for c in coupons],
        "coupons_issued_period": issued_period,
        "coupon_results": by_prefix("coupon:"),
        "sop": {name: series(f"sop:{key}") for key, name in SOP_OUTCOMES},
        "sop_totals": {name: total.get(f"sop:{key}", 0) for key, name in SOP_OUTCOMES},
        "sop_skipped": by_prefix("sop:skipped:"), "sop_deferred": by_prefix("sop:deferred:"),
        "sop_failed": by_prefix("touch_failed:"),
    }


def live_handoffs(r: redis.Redis, tz: ZoneInfo, now: datetime | None = None) -> dict[str, Any]:
    """The live queue (waiting, claimed, overdue) and per-consultant numbers."""
    now = now or datetime.now(tz)
    book = Handoffs(r, tz)
    live = book.list("open") + book.list("claimed") + book.list("answered")
    live.sort(key=lambda h: h.created_at)
    rows = []
    per: dict[str, Counter[str]] = {}
    for h in live:
        overdue = h.first_reply_at is None and now > h.deadline
        rows.append({"h": h, "waited_min": int((now - h.created_at).total_seconds() // 60), "overdue": overdue,
                     "state_name": STATE_NAMES.get(h.state, h.state), "intent_name": intent_name(h.intent)})
        c = per.setdefault(h.holder or "（排队中）", Counter())
        c[h.state] += 1
        c["overdue"] += overdue
    stats = handoff_stats.stats(book, now, now - timedelta(days=7))
    groups = [(name, [c["open"], c["claimed"], c["answered"], c["overdue"]]) for name, c in sorted(per.items())]
    return {"rows": rows, "per_consultant": sorted(per.items()), "consultant_groups": groups, "stats": stats, "now": now,
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


def timeline(r: redis.Redis, book: Any, tz: ZoneInfo, customer: str, scan: int = 20000) -> dict[str, Any]:
    """One customer: record, tags, intents, coupons, handoffs and the recent event timeline."""
    rec = Customers(r).get(customer)
    coupons = book.coupons_of(customer) if book else []
    handoffs = [h for h in Handoffs(r, tz).list(None, limit=2000) if h.customer == customer]
    hids = {h.id for h in handoffs}
    items = []
    for _, f in r.xrevrange(EVENTS, count=scan):
        try:
            data = json.loads(f.get("data") or "{}")
        except ValueError:
            continue
        if data.get("customer") != customer and data.get("handoff") not in hids:
            continue
        kind = f.get("kind", "")
        items.append({"at": datetime.fromtimestamp(float(f.get("at") or 0), tz), "kind": kind,
                      "kind_name": EVENT_NAMES.get(kind, kind), "detail": _detail(kind, data)})
    for tag, ts in rec.tags.items():
        items.append({"at": from_ts(ts, tz), "kind": "tag", "kind_name": "打标签", "detail": tag})
    items.sort(key=lambda i: i["at"], reverse=True)
    return {"rec": rec, "coupons": coupons, "handoffs": handoffs, "events": items[:500],
            "intents": sorted(((intent_name(k), v) for k, v in rec.intents.items()), key=lambda kv: -kv[1]),
            "first_seen": from_ts(rec.first_seen, tz) if rec.first_seen else None,
            "last_seen": from_ts(rec.last_seen, tz) if rec.last_seen else None,
            "exists": Customers(r).exists(customer)}


def _detail(kind: str, d: dict[str, Any]) -> str:
    """One line describing an event (no secrets: events carry none)."""
    if kind in ("message_in", "message_while_human"):
        intent = f" → {intent_name(d['intent'])}" if d.get("intent") else ""
        return f"「{d.get('text') or '[' + str(d.get('msgtype')) + ']'}」{intent}"
    if kind in ("reply_sent", "reply_not_sent"):
        text = d.get("text") or f"[{d.get('msgtype', '')}]"
        return f"{text}" + (f"（{d['reason']}）" if d.get("reason") else "")
    if kind == "coupon":
        return f"{d.get('status')} {d.get('code') or ''}"
    if kind == "touch":
        return f"{d.get('journey')}/{d.get('step')} {d.get('channel') or ''} → {d.get('outcome')}"
    if kind == "handoff_opened":
        return f"{intent_name(d.get('intent', ''))} → {d.get('consultant') or '排队'}（{d.get('reason', '')}）"
    keep = {k: v for k, v in d.items() if k not in ("customer",)}
    return json.dumps(keep, ensure_ascii=False)[:200]


def next_days(r: redis.Redis, tz: ZoneInfo, days: int = 7, now: datetime | None = None) -> dict[str, Any]:
    """Pending SOP touches per journey per local day for the next `days` days."""
    from sop.engine import DUE, Ref

    now = now or datetime.now(tz)
    end = now + timedelta(days=days)
    period = [now.date() + timedelta(days=i) for i in range(days)]
    grid: dict[str, Counter[date]] = {}
    overdue: Counter[str] = Counter()
    for member, score in r.zrangebyscore(DUE, "-inf", end.timestamp(), withscores=True):
        ref = Ref.parse(member)
        when = from_ts(score, tz)
        if when < now:
            overdue[ref.journey] += 1
            when = now
        grid.setdefault(ref.journey, Counter())[when.date()] += 1
    return {"days": period, "labels": [d.strftime("%m-%d") for d in period],
            "grid": {j: [c.get(d, 0) for d in period] for j, c in sorted(grid.items())}, "overdue": overdue}


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
