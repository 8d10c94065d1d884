"""/metrics (Prometheus, read from Redis at scrape time) and the /readyz readiness check."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import redis

from bot.config import Settings
from bot.observe import (
    API_CALLS,
    API_SECONDS,
    BUCKETS,
    CALLBACKS,
    HEARTBEAT_SCHEDULER,
    HEARTBEAT_WORKER,
    PROC_COUNT,
    PROC_SECONDS,
    WORKER_TTL,
    flush,
)
from bot.queue.kfsync import EMPTY_NOTICES_WARN
from bot.queue.scheduler import leadership
from bot.records import handoff_stats
from bot.records.coupons import CouponBook
from bot.records.daily import rollup, totals
from bot.records.store import COUNTERS as STORE_COUNTERS
from bot.records.store import Store
from bot.redis_server import topology
from bot.web.webhook import CallbackCounts
from sop.engine import COUNTERS as SOP_COUNTERS
from sop.engine import pending_counts


def workers_alive(r: redis.Redis) -> list[str]:
    """Names of workers with a live heartbeat."""
    return sorted(k[len(HEARTBEAT_WORKER):] for k in r.scan_iter(match=HEARTBEAT_WORKER + "*", count=500))


def scheduler_age(r: redis.Redis) -> float | None:
    """Seconds since the scheduler's last heartbeat (None: none alive)."""
    raw = r.get(HEARTBEAT_SCHEDULER)
    return None if raw is None else max(0.0, time.time() - float(raw))


# --- readiness -----------------------------------------------------------------------------------

def config_problems(settings: Settings) -> list[str]:
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


def readiness(r: redis.Redis, settings: Settings) -> tuple[bool, dict[str, Any]]:
    """Redis answers, config valid, a worker and the scheduler alive by heartbeat: (ok, JSON body)."""
    body: dict[str, Any] = {}
    problems = config_problems(settings)
    body["config"] = "ok" if not problems else problems
    try:
        r.ping()
        from bot.queue.inbox import Inbox

        body["redis"] = "ok"
        body["redis_topology"] = topology(r)  # mode, nodes, how many answer
        body["inbox"] = Inbox(r).depth()
        workers = workers_alive(r)
        age = scheduler_age(r)
        leads = leadership(r)
        stalled = Store(r).kf_stalled()
    except redis.RedisError as exc:
        body.update(status="unavailable", redis=f"unreachable: {exc}")
        return False, body
    body["workers"] = workers or f"none alive (no heartbeat within {WORKER_TTL}s)"
    body["scheduler"] = ({"heartbeat_age_seconds": round(age, 1), **leads} if age is not None
                         else "not alive (no heartbeat)")
    # shown, not failed: out of rotation, this process would also miss the notices that could unblock it
    body["kf_pulls"] = {"stalled": stalled} if stalled else "ok"
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

    def __init__(self, settings: Settings, r: redis.Redis, callback_counts: CallbackCounts,
                 coupons: Callable[[], CouponBook | None]) -> None:
        self.settings, self.r, self.counts, self.coupons = settings, r, callback_counts, coupons

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
        store = Store(self.r)
        yield counter("wecom_kf_pull_stalls", f"Times {EMPTY_NOTICES_WARN} kf notices in a row pulled nothing, "
                      "by kf account", ["open_kfid"], [([k], float(v)) for k, v in store.kf_stalls().items()])
        yield gauge("wecom_kf_accounts_stalled", "kf accounts whose last notices pulled nothing",
                    len(store.kf_stalled()))
        yield gauge("wecom_workers_alive", "Workers with a live heartbeat", len(workers_alive(self.r)))
        age = scheduler_age(self.r)
        yield gauge("wecom_scheduler_heartbeat_age_seconds", "Seconds since the scheduler's heartbeat (-1: none)",
                    -1 if age is None else age)

    def _coupons(self, gauge: Any) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        book = self.coupons()
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
        block = handoff_stats.stats(book, now, now - timedelta(days=7))["total"]["time_to_first_reply"]
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
        failed, holdout = (int(v or 0) for v in self.r.hmget(STORE_COUNTERS, ["sop_failed", "sop_holdout"]))
        rows = [([o], float(raw.get(o, 0))) for o in ("sent", "deferred", "skipped", "reminded")] + [
            (["failed"], failed), (["holdout"], holdout)]  # holdout: an experiment's control group, sent nothing
        yield counter("wecom_sop_touches", "SOP touches by outcome", ["outcome"], rows)
        reasons = [(_labels(k, 2), float(v)) for k, v in sorted(raw.items())
                   if ":" in k and not k.startswith("j:") and k.split(":", 1)[0] in ("sent", "deferred", "skipped", "reminded")]
        yield counter("wecom_sop_touch_reasons", "SOP touches by outcome and reason (or channel)",
                      ["outcome", "reason"], [([lv[0].split(":", 1)[0], lv[0].split(":", 1)[1]], v)
                                              for lv, v in reasons])
        due, inflight = pending_counts(self.r).values()
        yield gauge("wecom_sop_pending", "SOP touches waiting to be due", due)
        yield gauge("wecom_sop_inflight", "SOP touches claimed by a tick, not yet settled", inflight)


METRICS_CACHE = "wecom:metrics:cache"  # the last rendered scrape, shared by every web process
METRICS_LOCK = "wecom:metrics:computing"
METRICS_MAX_AGE = 5.0  # seconds a scrape may be old: one process computes it at most this often


class CachedScrape:
    """The Prometheus text, computed by one process at most every METRICS_MAX_AGE seconds; every other
    scrape reads that copy, so a scrape's cost does not grow with the handoffs, coupons or scrapers."""

    def __init__(self, r: redis.Redis, render: Callable[[], bytes], clock: Callable[[], float] = time.time) -> None:
        self.r, self.render, self.clock = r, render, clock

    def get(self) -> tuple[bytes, float]:
        """(body, when it was computed)."""
        import json

        try:
            raw = self.r.get(METRICS_CACHE)
            kept = json.loads(raw) if raw else None
            if kept and self.clock() - kept["at"] < METRICS_MAX_AGE:
                return kept["body"].encode(), kept["at"]
            if not self.r.set(METRICS_LOCK, "1", nx=True, ex=30):
                if kept:  # another process is computing: the last copy will do
                    return kept["body"].encode(), kept["at"]
                for _ in range(40):  # the very first scrape: wait for the one being computed
                    time.sleep(0.05)
                    raw = self.r.get(METRICS_CACHE)
                    if raw:
                        kept = json.loads(raw)
                        return kept["body"].encode(), kept["at"]
        except redis.RedisError:
            return self.render(), self.clock()  # Redis down: the collector says so (wecom_redis_up 0), cheaply
        at = self.clock()
        try:
            body = self.render()
            self.r.set(METRICS_CACHE, json.dumps({"at": at, "body": body.decode()}), ex=3600)
        finally:
            self.r.delete(METRICS_LOCK)
        return body, at


def make_metrics(settings: Settings, r: redis.Redis, callback_counts: CallbackCounts,
                 coupons: Callable[[], CouponBook | None] = lambda: None) -> Any:
    """A blueprint serving GET /metrics (Prometheus text format) to holders of the metrics token."""
    import hmac

    from flask import Blueprint, Response, request
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BotCollector(settings, r, callback_counts, coupons))
    scrape = CachedScrape(r, lambda: generate_latest(registry))
    bp = Blueprint("metrics", __name__)
    token = settings.metrics_token

    @bp.get("/metrics")
    def metrics() -> Response:
        if not token:
            return Response("metrics are off: set WECOM_BOT_METRICS_TOKEN and scrape with it as a bearer token\n",
                            status=404, mimetype="text/plain")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or request.args.get(
            "token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return Response("metrics need the token (Authorization: Bearer ...)\n", status=401, mimetype="text/plain",
                            headers={"WWW-Authenticate": "Bearer"})
        body, at = scrape.get()
        return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Metrics-Computed-At": f"{at:.6f}"})

    return bp
