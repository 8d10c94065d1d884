"""Metrics: daily counters, API/processing observations, heartbeats, /metrics and readiness.

Daily counters are derived incrementally from the event stream (and SOP counter deltas), or recorded directly.

Keys:
  wecom:daily:<YYYY-MM-DD>   hash name -> count for that local day (kept DAILY_TTL)
  wecom:totals               hash name -> count since the start (Prometheus counters)
  wecom:rollup:cursor        last event-stream id folded in
  wecom:rollup:sop_last      SOP engine counters at the last fold (deltas go to the day of the fold)
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import redis

from bot.records.store import COUNTERS as STORE_COUNTERS
from bot.records.store import EVENTS
from bot.times import DEFAULT_TZ, from_ts

DAILY = "wecom:daily:"
TOTALS = "wecom:totals"
CURSOR = "wecom:rollup:cursor"
SOP_LAST = "wecom:rollup:sop_last"
LOCK = "wecom:rollup:lock"
DAILY_TTL = 400 * 86400
SOP_COUNTERS = "wecom:sop:{sop}:counters"


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
    days = [d.isoformat() for d in days]
    with r.pipeline(transaction=False) as p:
        for d in days:
            p.hgetall(DAILY + d)
        rows = p.execute()
    return {d: {k: int(v) for k, v in row.items()} for d, row in zip(days, rows)}


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
        if r.get(LOCK) == me:
            r.delete(LOCK)


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
    with r.pipeline(transaction=False) as p:
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


# --- observations buffered in the process, flushed to Redis (so every process shows up) --------

API_CALLS = "wecom:metrics:api"  # "<path>|<errcode>" -> calls
API_SECONDS = "wecom:metrics:api_seconds"  # "<path>|<bucket index>|sum|count" -> value
PROC_COUNT = "wecom:metrics:processed"  # "<kind>|<outcome>" -> entries
PROC_SECONDS = "wecom:metrics:proc_seconds"  # "<kind>|<bucket index>|sum|count"
CALLBACKS = "wecom:metrics:callbacks"  # result -> callbacks, summed over every web process
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HEARTBEAT_WORKER = "wecom:heartbeat:worker:"
HEARTBEAT_SCHEDULER = "wecom:heartbeat:scheduler"
WORKER_TTL = 30
FLUSH_EVERY = 1.0

_lock = threading.Lock()
_buf: dict[str, Counter] = {API_CALLS: Counter(), API_SECONDS: Counter(), PROC_COUNT: Counter(),
                            PROC_SECONDS: Counter(), CALLBACKS: Counter()}
_last_flush = 0.0


def _bucket(seconds: float) -> int:
    """Index of the first bucket >= seconds (len(BUCKETS) for +Inf)."""
    return next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))


def _observe(count_key: str, seconds_key: str, label: str, count_label: str, seconds: float) -> None:
    with _lock:
        _buf[count_key][count_label] += 1
        hist = _buf[seconds_key]
        hist[f"{label}|{_bucket(seconds)}"] += 1
        hist[f"{label}|sum"] += seconds
        hist[f"{label}|count"] += 1


def observe_wecom_call(path: str, errcode: int | None, seconds: float) -> None:
    """One WeCom API call (errcode None: no answer); call it from the WeCom client."""
    path = path.split("?", 1)[0].removeprefix("/").removeprefix("cgi-bin/")
    _observe(API_CALLS, API_SECONDS, path, f"{path}|{'none' if errcode is None else errcode}", seconds)


def observe_processing(kind: str, outcome: str, seconds: float) -> None:
    """One inbox entry processed (outcome e.g. ok / retry / dead); call it from the worker."""
    _observe(PROC_COUNT, PROC_SECONDS, kind, f"{kind}|{outcome}", seconds)


def observe_callback(result: str) -> None:
    """One callback answered (accepted, duplicate, rejected_403, ...); call it from the webhook."""
    with _lock:
        _buf[CALLBACKS][result] += 1


def maybe_flush(r: redis.Redis) -> None:
    """flush() at most about once a second; never raises (the caller is on a hot path)."""
    if time.monotonic() - _last_flush >= FLUSH_EVERY:
        try:
            flush(r)
        except redis.RedisError:
            pass


def flush(r: redis.Redis) -> None:
    """Move the buffered observations of this process into Redis."""
    global _last_flush
    with _lock:
        taken = {k: v for k, v in _buf.items() if v}
        for k in taken:
            _buf[k] = Counter()
        _last_flush = time.monotonic()
    if not taken:
        return
    try:
        with r.pipeline(transaction=False) as p:
            for key, counts in taken.items():
                for field, n in counts.items():
                    if isinstance(n, float) and not n.is_integer():
                        p.hincrbyfloat(key, field, n)
                    else:
                        p.hincrby(key, field, int(n))
            p.execute()
    except redis.RedisError:
        with _lock:  # keep them for the next flush
            for k, v in taken.items():
                _buf[k].update(v)
        raise


def heartbeat_worker(r: redis.Redis, name: str, ttl: int = WORKER_TTL) -> None:
    """A worker is alive (call each loop); also flushes this process's observations about once a second."""
    r.set(HEARTBEAT_WORKER + name, f"{time.time():.0f}", ex=ttl)
    if time.monotonic() - _last_flush >= FLUSH_EVERY:
        flush(r)


def workers_alive(r: redis.Redis) -> list[str]:
    """Names of workers with a live heartbeat."""
    return sorted(k[len(HEARTBEAT_WORKER):] for k in r.scan_iter(match=HEARTBEAT_WORKER + "*", count=500))


def scheduler_age(r: redis.Redis) -> float | None:
    """Seconds since the scheduler's last heartbeat (None: none alive)."""
    raw = r.get(HEARTBEAT_SCHEDULER)
    return None if raw is None else max(0.0, time.time() - float(raw))


# --- readiness -----------------------------------------------------------------------------------

def config_problems(settings: Any) -> list[str]:
    """What is wrong with the loaded settings (empty when valid)."""
    from bot.config import AES_KEY_RE, TOKEN_RE

    out = []
    if not settings.corp_id:
        out.append("corp_id is empty (WECOM_CORP_ID)")
    if not TOKEN_RE.fullmatch(settings.token or ""):
        out.append("the callback Token must be 1-32 letters or digits (WECOM_TOKEN)")
    if not AES_KEY_RE.fullmatch(settings.aes_key or ""):
        out.append("the EncodingAESKey must be 43 letters or digits (WECOM_AES_KEY)")
    if not str(settings.api_base_url).startswith(("http://", "https://")):
        out.append("api_base_url must be an http(s) URL (WECOM_API_BASE_URL)")
    return out


def readiness(r: redis.Redis, settings: Any) -> tuple[bool, dict[str, Any]]:
    """Redis answers, config valid, a worker and the scheduler alive by heartbeat: (ok, JSON body)."""
    body: dict[str, Any] = {}
    problems = config_problems(settings)
    body["config"] = "ok" if not problems else problems
    try:
        r.ping()
        from bot.queue.inbox import Inbox

        body["redis"] = "ok"
        body["inbox"] = Inbox(r).depth()
        workers = workers_alive(r)
        age = scheduler_age(r)
    except redis.RedisError as exc:
        body.update(status="unavailable", redis=f"unreachable: {exc}")
        return False, body
    body["workers"] = workers or "none alive (no heartbeat within %ds)" % WORKER_TTL
    body["scheduler"] = {"heartbeat_age_seconds": round(age, 1)} if age is not None else "not alive (no heartbeat)"
    ok = not problems and bool(workers) and age is not None
    body["status"] = "ok" if ok else "unavailable"
    return ok, body


# --- /metrics ------------------------------------------------------------------------------------

def _labels(field: str, n: int) -> list[str]:
    """Split a 'a|b' hash field into n labels (the last takes the rest)."""
    parts = field.split("|")
    return parts[:n - 1] + ["|".join(parts[n - 1:])]


def _histogram(name: str, doc: str, label: str, raw: dict[str, str]) -> Any:
    """A HistogramMetricFamily from '<label>|<bucket index>|sum|count' fields."""
    from prometheus_client.core import HistogramMetricFamily

    fam = HistogramMetricFamily(name, doc, labels=[label])
    per: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        key, part = field.rsplit("|", 1)
        per.setdefault(key, {})[part] = float(value)
    for key, h in sorted(per.items()):
        cum, buckets = 0.0, []
        for i, b in enumerate(BUCKETS):
            cum += h.get(str(i), 0.0)
            buckets.append((repr(b), cum))
        buckets.append(("+Inf", h.get("count", cum + h.get(str(len(BUCKETS)), 0.0))))
        fam.add_metric([key], buckets, h.get("sum", 0.0))
    return fam


class BotCollector:
    """Reads Redis (and this process's callback counts) at scrape time."""

    def __init__(self, settings: Any, r: redis.Redis, callback_counts: Any, content: Any = None) -> None:
        self.settings, self.r, self.counts, self.content = settings, r, callback_counts, content

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cb = CounterMetricFamily("wecom_callbacks", "Callbacks by result (all web processes)", labels=["result"])
        up = GaugeMetricFamily("wecom_redis_up", "Redis answers")
        try:
            flush(self.r)
            totals = {k: int(v) for k, v in self.r.hgetall(CALLBACKS).items()}
        except redis.RedisError:  # Redis down: at least this process's own numbers
            totals = dict(getattr(self.counts, "counts", {}) or {})
        for result, n in sorted(totals.items()):
            cb.add_metric([result], n)
        yield cb
        try:
            rollup(self.r, self.settings.timezone)
            families = list(self._redis_families())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _redis_families(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from bot.queue.inbox import Inbox

        def gauge(name: str, doc: str, value: float) -> Any:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            return g

        def counter(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> Any:
            c = CounterMetricFamily(name, doc, labels=labels)
            for lv, v in rows:
                c.add_metric(lv, v)
            return c

        depth = Inbox(self.r).depth()
        yield gauge("wecom_inbox_length", "Entries in the inbox stream", depth["length"])
        yield gauge("wecom_inbox_pending", "Entries taken by a worker, not acknowledged", depth["pending"])
        yield gauge("wecom_inbox_lag", "Entries not yet read by any worker", depth["lag"])
        yield gauge("wecom_dead_letters", "Entries in the dead-letter stream", depth["dead"])
        tot = totals(self.r)

        def prefixed(prefix: str) -> list[tuple[list[str], float]]:
            return [([k[len(prefix):]], v) for k, v in sorted(tot.items()) if k.startswith(prefix)]

        yield counter("wecom_messages_in", "Customer messages processed", [], [([], tot.get("message_in", 0))])
        yield counter("wecom_replies_sent", "Messages sent to customers", [], [([], tot.get("reply_sent", 0))])
        yield counter("wecom_replies_not_sent", "Replies not sent, by reason", ["reason"], prefixed("reply_not_sent:"))
        yield counter("wecom_intents", "Customer messages by detected intent", ["intent"], prefixed("intent:"))
        yield counter("wecom_coupon_results", "Coupon requests by result", ["status"], prefixed("coupon:"))
        yield counter("wecom_handoffs", "Handoffs opened, by intent", ["intent"], prefixed("handoff:"))
        yield from self._coupons(gauge)
        yield from self._handoffs()
        yield from self._sop(counter, gauge)
        calls = self.r.hgetall(API_CALLS)
        yield counter("wecom_api_calls", "WeCom API calls by endpoint and errcode", ["endpoint", "errcode"],
                      [(_labels(f, 2), float(v)) for f, v in sorted(calls.items())])
        yield _histogram("wecom_api_call_seconds", "WeCom API call duration", "endpoint", self.r.hgetall(API_SECONDS))
        done = self.r.hgetall(PROC_COUNT)
        yield counter("wecom_processed", "Inbox entries processed, by kind and outcome", ["kind", "outcome"],
                      [(_labels(f, 2), float(v)) for f, v in sorted(done.items())])
        yield _histogram("wecom_processing_seconds", "Inbox entry processing time", "kind",
                         self.r.hgetall(PROC_SECONDS))
        yield gauge("wecom_workers_alive", "Workers with a live heartbeat", len(workers_alive(self.r)))
        age = scheduler_age(self.r)
        yield gauge("wecom_scheduler_heartbeat_age_seconds", "Seconds since the scheduler's heartbeat (-1: none)",
                    -1 if age is None else age)

    def _coupons(self, gauge: Any) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        book = coupon_book(self.settings, self.r, self.content)
        if book is None:
            return
        g = GaugeMetricFamily("wecom_coupons", "Coupons per campaign: budget, issued, remaining, redeemed, expired",
                              labels=["campaign", "state"])
        for row in book.stats(datetime.now(self.settings.timezone)):
            for state in ("budget", "issued", "remaining", "redeemed", "expired"):
                g.add_metric([row["campaign"], state], row[state])
        yield g

    def _handoffs(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from bot.records.handoffs import Handoffs

        book = Handoffs(self.r, self.settings.timezone)
        now = datetime.now(self.settings.timezone)
        live = GaugeMetricFamily("wecom_handoffs_live", "Handoffs not closed, by state", labels=["state"])
        active = book.list("open") + book.list("claimed") + book.list("answered")
        for state in ("open", "claimed", "answered"):
            live.add_metric([state], sum(h.state == state for h in active))
        yield live
        overdue = sum(h.first_reply_at is None and now > h.deadline for h in active)
        g = GaugeMetricFamily("wecom_handoffs_overdue", "Live handoffs past their SLA without a human reply")
        g.add_metric([], overdue)
        yield g
        block = book.stats(now, now - timedelta(days=7))["total"]["time_to_first_reply"]
        sla = GaugeMetricFamily("wecom_handoff_first_reply_seconds", "Time to first human reply, last 7 days",
                                labels=["stat"])
        for stat in ("median", "p90"):
            if block[stat] is not None:
                sla.add_metric([stat], block[stat])
        yield sla
        share = GaugeMetricFamily("wecom_handoff_within_sla_ratio", "Share answered within SLA, last 7 days")
        if block["within_sla"] is not None:
            share.add_metric([], block["within_sla"])
        yield share

    def _sop(self, counter: Any, gauge: Any) -> Iterable[Any]:
        raw = {k: int(v) for k, v in self.r.hgetall(SOP_COUNTERS).items()}
        failed = int(self.r.hget(STORE_COUNTERS, "sop_failed") or 0)
        rows = [([o], float(raw.get(o, 0))) for o in ("sent", "deferred", "skipped", "reminded")] + [(["failed"], failed)]
        yield counter("wecom_sop_touches", "SOP touches by outcome", ["outcome"], rows)
        reasons = [(_labels(k, 2), float(v)) for k, v in sorted(raw.items())
                   if ":" in k and not k.startswith("j:") and k.split(":", 1)[0] in ("sent", "deferred", "skipped", "reminded")]
        yield counter("wecom_sop_touch_reasons", "SOP touches by outcome and reason (or channel)",
                      ["outcome", "reason"], [([lv[0].split(":", 1)[0], lv[0].split(":", 1)[1]], v)
                                              for lv, v in reasons])
        due, inflight = self.r.zcard("wecom:sop:{sop}:due"), self.r.zcard("wecom:sop:{sop}:inflight")
        yield gauge("wecom_sop_pending", "SOP touches waiting to be due", due)
        yield gauge("wecom_sop_inflight", "SOP touches claimed by a tick, not yet settled", inflight)


_books: dict[tuple[str, float], Any] = {}


def coupon_book(settings: Any, r: redis.Redis, content: Any = None) -> Any:
    """The coupon book from the loaded content, else from config (cached per file version), else None."""
    if content is not None:
        return content.get("coupons")
    path = (settings.content or {}).get("coupons")
    if not path:
        return None
    from pathlib import Path

    from bot.records.coupons import CouponBook, load_campaigns

    key = (str(path), Path(path).stat().st_mtime if Path(path).exists() else 0.0)
    if key not in _books:
        _books.clear()
        _books[key] = load_campaigns(path, settings.timezone)
    return CouponBook(r, _books[key], settings.timezone)


def make_metrics(settings: Any, r: redis.Redis, callback_counts: Any, content: Any = None) -> Any:
    """A blueprint serving GET /metrics (Prometheus text format)."""
    from flask import Blueprint, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BotCollector(settings, r, callback_counts, content))
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    return bp
