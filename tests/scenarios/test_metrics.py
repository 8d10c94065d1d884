"""/metrics in Prometheus text format moves with traffic; daily rollup; heartbeats and readiness."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from bot import observe
from bot.records import daily
from bot.redis_server import connect
from bot.web import metrics
from tests.scenarios.console_helpers import serve, traffic
from tests.support import METRICS_TOKEN


def scrape(url: str, r: redis.Redis | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value; with `r`, after the cached copy expired."""
    if r is not None:
        r.delete(metrics.METRICS_CACHE)  # what METRICS_MAX_AGE seconds of waiting would do
    resp = requests.get(url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture()
def app(runtime, sandbox, r):
    svc = serve(runtime.settings, r, runtime.content, sandbox.url, None, runtime.coupons)
    yield svc
    svc.stop()


def test_metrics_parse_and_counters_move_with_traffic(app, sandbox, runtime):
    before = scrape(app.url)
    assert before[("wecom_redis_up", ())] == 1
    assert before.get(("wecom_messages_in_total", ()), 0) == 0
    traffic(sandbox, app, runtime)  # callbacks go to this app, so its callback counts move too
    after = scrape(app.url, runtime.r)
    assert after[("wecom_callbacks_total", (("result", "accepted"),))] == 4
    assert after[("wecom_messages_in_total", ())] == 4
    assert after[("wecom_intents_total", (("intent", "discount"),))] == 2
    assert after[("wecom_intents_total", (("intent", "price"),))] == 1
    assert after[("wecom_coupon_results_total", (("status", "issued"),))] == 2
    assert after[("wecom_handoffs_total", (("intent", "price"),))] == 1
    assert after[("wecom_handoffs_live", (("state", "open"),))] == 1
    assert after[("wecom_coupons", (("campaign", "new-customer-10"), ("state", "issued")))] == 2
    assert after[("wecom_sop_touches_total", (("outcome", "sent"),))] >= 1
    assert after[("wecom_inbox_lag", ())] == 0 and after[("wecom_dead_letters", ())] == 0
    assert after[("wecom_replies_sent_total", ())] > before.get(("wecom_replies_sent_total", ()), 0)
    assert scrape(app.url, runtime.r)[("wecom_messages_in_total", ())] == 4  # scraping again counts nothing twice


def test_wecom_calls_and_processing_times_from_any_process(app, r):
    observe.observe_wecom_call("/cgi-bin/kf/send_msg?access_token=x", 0, 0.03)
    observe.observe_wecom_call("kf/send_msg", 95001, 0.2)
    observe.observe_wecom_call("gettoken", None, 6.0)
    observe.observe_processing("callback", "ok", 0.004)
    observe.heartbeat_worker(r, "w1")  # a worker's loop flushes its observations
    observe.flush(r)
    got = scrape(app.url, r)
    assert got[("wecom_api_calls_total", (("endpoint", "kf/send_msg"), ("errcode", "0")))] == 1
    assert got[("wecom_api_calls_total", (("endpoint", "kf/send_msg"), ("errcode", "95001")))] == 1
    assert got[("wecom_api_calls_total", (("endpoint", "gettoken"), ("errcode", "none")))] == 1
    assert got[("wecom_api_call_seconds_count", (("endpoint", "kf/send_msg"),))] == 2
    assert got[("wecom_api_call_seconds_bucket", (("endpoint", "kf/send_msg"), ("le", "0.05")))] == 1
    assert got[("wecom_api_call_seconds_bucket", (("endpoint", "gettoken"), ("le", "+Inf")))] == 1
    assert got[("wecom_processed_total", (("kind", "callback"), ("outcome", "ok")))] == 1
    assert got[("wecom_processing_seconds_bucket", (("kind", "callback"), ("le", "0.005")))] == 1
    assert got[("wecom_workers_alive", ())] == 1


def test_rollup_is_incremental_and_record_daily_adds(r, runtime):
    from bot.records.store import Store

    tz = runtime.settings.timezone
    store = Store(r)
    store.record("message_in", customer="c1", intent="price", text="多少钱")
    store.record("coupon", customer="c1", status="issued", code="NOPE")
    assert daily.rollup(r, tz) == 2
    assert daily.rollup(r, tz) == 0
    store.record("message_in", customer="c2", intent=None, text="")
    daily.rollup(r, tz)
    daily.record_daily(r, "custom", time.time(), 3, tz)
    today = datetime.now(tz).date()
    day = daily.daily(r, [today])[today.isoformat()]
    assert day["message_in"] == 2 and day["intent:price"] == 1 and day["intent:none"] == 1
    assert day["coupon:issued"] == 1 and day["coupon_issued:unknown"] == 1 and day["custom"] == 3
    assert daily.totals(r)["message_in"] == 2


def test_readiness_needs_redis_config_worker_and_scheduler(r, runtime):
    ok, body = metrics.readiness(r, runtime.settings)
    assert not ok and body["redis"] == "ok" and body["config"] == "ok"
    assert "none alive" in body["workers"] and "not alive" in body["scheduler"]
    observe.heartbeat_worker(r, "host-1-abc")
    r.set(observe.HEARTBEAT_SCHEDULER, f"{time.time():.0f}", ex=50)
    ok, body = metrics.readiness(r, runtime.settings)
    assert ok and body["status"] == "ok" and body["workers"] == ["host-1-abc"]
    assert r.ttl(observe.HEARTBEAT_WORKER + "host-1-abc") <= observe.WORKER_TTL


def test_readiness_explains_unreachable_redis(runtime):
    dead = connect("redis://127.0.0.1:1/0", timeout=0.5, check=False)  # as the service connects
    ok, body = metrics.readiness(dead, runtime.settings)
    assert not ok and body["status"] == "unavailable" and body["redis"].startswith("unreachable")


def test_metrics_survive_a_redis_outage(runtime, sandbox):
    dead = connect("redis://127.0.0.1:1/0", timeout=0.5, check=False)  # as the service connects
    svc = serve(runtime.settings, dead, None, sandbox.url, None)
    try:
        got = scrape(svc.url)
        assert got[("wecom_redis_up", ())] == 0
    finally:
        svc.stop()


def test_callback_counts_are_summed_over_web_processes(r, redis_url):
    """Two web processes (two apps on one Redis): /metrics of either shows both."""
    from prometheus_client.parser import text_string_to_metric_families

    from bot.observe import CALLBACKS, flush, observe_callback

    r.delete(CALLBACKS)
    observe_callback("accepted")
    flush(r)
    r.hincrby(CALLBACKS, "accepted", 2)  # what another process flushed
    from bot.app import create_app
    from tests.support import make_settings

    settings, _ = make_settings("http://127.0.0.1:1", redis_url)
    body = create_app(settings, r).test_client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
                                                     ).get_data(as_text=True)
    samples = {s.labels.get("result"): s.value for f in text_string_to_metric_families(body)
               if f.name == "wecom_callbacks" for s in f.samples if s.name == "wecom_callbacks_total"}
    assert samples["accepted"] == 3


def test_metrics_need_the_token_and_are_off_without_one(app, runtime, sandbox, r):
    assert requests.get(app.url + "/metrics", timeout=5).status_code == 401
    assert requests.get(app.url + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    off = serve(dataclasses.replace(runtime.settings, metrics_token=None), r, None, sandbox.url, None)
    try:
        resp = requests.get(off.url + "/metrics", timeout=5)
        assert resp.status_code == 404 and "WECOM_BOT_METRICS_TOKEN" in resp.text
    finally:
        off.stop()


def test_parallel_scrapes_share_one_computation_until_it_is_old(app, runtime, sandbox, r):
    """24 scrapers at once with 3,000 handoffs in the week: one scrape computes, the rest read its copy."""
    from bot.records.handoffs import Handoffs

    book, now = Handoffs(r, runtime.settings.timezone), datetime.now(runtime.settings.timezone)
    for i in range(3000):
        book.open(f"wmLoad{i:05d}", sandbox.open_kfid, "price", ("多少钱",), "多少钱", "li.consultant", 300, now,
                  f"cause{i}")
    r.delete(metrics.METRICS_CACHE)
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: requests.get(app.url + "/metrics", timeout=30, headers={
            "Authorization": f"Bearer {METRICS_TOKEN}"}), range(24)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["X-Metrics-Computed-At"] for a in answers}) == 1  # one computation for all 24
    assert len({a.text for a in answers}) == 1 and "wecom_handoffs_live" in answers[0].text
    later = requests.get(app.url + "/metrics", timeout=30, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert later.headers["X-Metrics-Computed-At"] == answers[0].headers["X-Metrics-Computed-At"]
