"""Daily counters for the console and /metrics, derived incrementally from the event stream (and SOP
counter deltas), or recorded directly.

Keys (one hash tag, so a fold and its cursor move are one transaction on a Redis Cluster too; about 400
small hashes, whatever the number of customers):
  wecom:{daily}:<YYYY-MM-DD>   hash name -> count for that local day (kept DAILY_TTL)
  wecom:{daily}:totals         hash name -> count since the start (Prometheus counters)
  wecom:{daily}:cursor         last event-stream id folded in
  wecom:{daily}:sop_last       SOP engine counters at the last fold (deltas go to the day of the fold)
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from bot.records.store import COUNTERS as STORE_COUNTERS
from bot.records.store import EVENTS, DeleteIf
from bot.times import DEFAULT_TZ, from_ts
from sop.engine import COUNTERS as SOP_COUNTERS

DAILY = "wecom:{daily}:"
TOTALS = "wecom:{daily}:totals"
CURSOR = "wecom:{daily}:cursor"
SOP_LAST = "wecom:{daily}:sop_last"
LOCK = "wecom:rollup:lock"
DAILY_TTL = 400 * 86400


def day_of(at: float | datetime, tz: ZoneInfo = DEFAULT_TZ) -> str:
    """The local day (YYYY-MM-DD) of a timestamp."""
    moment = at if isinstance(at, datetime) else from_ts(at, tz)
    return moment.astimezone(tz).date().isoformat()


def record_daily(r: redis.Redis, name: str, at: float | datetime, n: int = 1, tz: ZoneInfo = DEFAULT_TZ) -> None:
    """Add `n` to counter `name` for the local day of `at` (and to its total)."""
    key = DAILY + day_of(at, tz)
    with r.pipeline(transaction=False) as p:
        p.hincrby(key, name, n).expire(key, DAILY_TTL).hincrby(TOTALS, name, n)
        p.execute()


def days_back(today: date, days: int) -> list[date]:
    """The `days` local days ending with `today`, oldest first."""
    return [today - timedelta(days=i) for i in range(days - 1, -1, -1)]


def daily(r: redis.Redis, days: Iterable[date]) -> dict[str, dict[str, int]]:
    """day (ISO) -> {name: count} for each day."""
    names = [d.isoformat() for d in days]
    with r.pipeline(transaction=False) as p:
        for name in names:
            p.hgetall(DAILY + name)
        rows = p.execute()
    return {name: {k: int(v) for k, v in row.items()} for name, row in zip(names, rows, strict=True)}


def totals(r: redis.Redis) -> dict[str, int]:
    """name -> count since the start."""
    return {k: int(v) for k, v in r.hgetall(TOTALS).items()}


def names_of(kind: str, data: dict[str, Any], campaign_of: Any = None) -> list[str]:
    """The counter names one event adds to."""
    names = [f"event:{kind}"]
    if kind in ("message_in", "message_while_human"):
        names.append("message_in")
        if kind == "message_in":
            names.append(f"intent:{data.get('intent') or 'none'}")
        else:
            names.append("message_while_human")
    elif kind == "reply_sent":
        names.append("reply_sent")
    elif kind == "reply_not_sent":
        names.append(f"reply_not_sent:{data.get('reason') or 'unknown'}")
    elif kind == "coupon":
        status = data.get("status") or "unknown"
        names.append(f"coupon:{status}")
        if status == "issued" and data.get("code") and campaign_of:
            names.append(f"coupon_issued:{campaign_of(data['code']) or 'unknown'}")
    elif kind == "handoff_opened":
        names += ["handoff", f"handoff:{data.get('intent') or 'unknown'}"]
    elif kind == "touch":
        outcome = str(data.get("outcome") or "")
        head = outcome.split(":", 1)[0] or "unknown"
        names.append(f"touch:{head}")
        if head == "sent":
            names.append(f"touch:{outcome}")
    elif kind == "touch_failed":
        names.append(f"touch_failed:{data.get('reason') or 'unknown'}")
    return names


def rollup(r: redis.Redis, tz: ZoneInfo = DEFAULT_TZ, budget: int = 50_000, batch: int = 2000) -> int:
    """Fold new events (and SOP counter deltas) into the daily counters; returns events folded.

    Cheap when called often (scrapes, page views, scheduler ticks); one process at a time by lock.
    Each batch and its cursor move are one transaction, so a crash never counts an event twice."""
    me = f"{time.time()}:{threading.get_ident()}"
    if not r.set(LOCK, me, nx=True, px=10_000):
        return 0
    try:
        done = 0
        cursor = r.get(CURSOR) or "0-0"
        codes: dict[str, str | None] = {}

        def campaign_of(code: str) -> str | None:
            if code not in codes:
                codes[code] = r.get(f"wecom:coupon:code:{code}")
            return codes[code]

        while done < budget:
            entries = r.xrange(EVENTS, min=f"({cursor}", count=batch)
            if not entries:
                break
            incr: Counter[tuple[str, str]] = Counter()
            for _, f in entries:
                try:
                    data = json.loads(f.get("data") or "{}")
                    at = float(f.get("at") or time.time())
                except (ValueError, TypeError):
                    continue
                day = day_of(at, tz)
                for name in names_of(f.get("kind", ""), data, campaign_of):
                    incr[(day, name)] += 1
            cursor = entries[-1][0]
            _write(r, incr, {CURSOR: cursor})
            done += len(entries)
        _fold_sop(r, tz)
        return done
    finally:
        DeleteIf(r)(LOCK, me)


def _write(r: redis.Redis, incr: Counter, sets: dict[str, str]) -> None:
    """Apply (day, name) increments and plain SETs in one transaction."""
    with r.pipeline(transaction=True) as p:
        for (day, name), n in incr.items():
            p.hincrby(DAILY + day, name, n)
            p.hincrby(TOTALS, name, n)
        for day in {d for d, _ in incr}:
            p.expire(DAILY + day, DAILY_TTL)
        for k, v in sets.items():
            p.set(k, v)
        p.execute()


def _fold_sop(r: redis.Redis, tz: ZoneInfo) -> None:
    """SOP engine counters (deferred, skipped:<reason>, ...) have no time: their growth goes to today."""
    with r.pipeline(transaction=False) as p:  # not a transaction: three slots on a cluster
        p.hgetall(SOP_COUNTERS).hgetall(SOP_LAST).hget(STORE_COUNTERS, "sop_failed")
        now_c, last, failed = p.execute()
    if failed is not None:
        now_c["failed"] = failed
    if not now_c:
        return
    today = day_of(time.time(), tz)
    incr: Counter[tuple[str, str]] = Counter()
    for name, value in now_c.items():
        delta = int(value) - int(last.get(name, 0))
        if delta > 0 and not name.startswith("j:"):
            incr[(today, f"sop:{name}")] += delta
    with r.pipeline(transaction=True) as p:
        for (day, name), n in incr.items():
            p.hincrby(DAILY + day, name, n)
        if incr:
            p.expire(DAILY + today, DAILY_TTL)
        p.delete(SOP_LAST)
        p.hset(SOP_LAST, mapping=now_c)
        p.execute()
