"""kf pull benchmark: a burst on one kf account, each message with its own kf_msg_or_event notice, against a
sandbox whose every API call takes a WeCom-like 45 ms; 1 worker vs 2 workers (threads, as `serve` runs them).

Reply latency is the time from a message's add in the sandbox to its reply in sandbox.delivered().
Run: uv run python benchmarks/bench_pulls.py [--messages 2000] [--customers 500] [--latency 0.045] [--workers 1 2]
Redis: an embedded server it starts, or --redis-url (that database is flushed).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import SANDBOX_CORP_ID, SANDBOX_OPEN_KFID  # noqa: E402
from bot.content import Content  # noqa: E402
from bot.records.store import Store  # noqa: E402
from bot.redis_server import EmbeddedRedis, connect  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.web.envelope import CallbackCrypto  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402
from tests.support import Service, kf_notice, make_settings  # noqa: E402

POSTERS = 8  # concurrent callers of the webhook (WeCom sends the burst's notices in parallel)


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def run(redis_url: str, workers: int, messages: int, customers: int, latency: float, timeout: float) -> dict:
    """One burst; returns reply latencies (s), sync_msg calls, notices and what they did."""
    r = connect(redis_url)
    r.flushdb()
    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID, latency=latency).start()
    settings, _ = make_settings(sb.url, redis_url)
    settings = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, claim_idle_seconds=30,
                                                                         block_ms=5))
    rt = Runtime(settings, r, content=Content(settings))
    svc = Service(rt.app(), CallbackCrypto(settings.token, settings.aes_key, settings.corp_id),
                  settings.callback_path)
    stop = threading.Event()
    threads = [threading.Thread(target=rt.worker(f"bench-w{i}").run_forever, args=(stop,), daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    added: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def post(indexes: range) -> None:
        for i in indexes:
            customer = f"wmBench{i % customers:05d}"
            with lock:  # the add time and the message's place in its customer's order together
                added[customer].append(time.time())
                sb.add_customer_text(customer, "请问什么时候发货")
            resp = svc.post(kf_notice(sb.callback_token()))
            assert resp.status_code == 200, resp.status_code

    posters = [threading.Thread(target=post, args=(range(k, messages, POSTERS),)) for k in range(POSTERS)]
    began = time.time()
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    ok = sb.wait_for(lambda: len(sb.delivered()) >= messages, timeout=timeout)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    delivered = sb.delivered()
    replies: dict[str, list[float]] = defaultdict(list)
    for d in delivered:
        replies[d["touser"]].append(d["at"])
    lat = []
    for customer, sent in added.items():  # a customer's k-th reply answers their k-th message
        lat += [at - t for t, at in zip(sent, sorted(replies.get(customer, [])), strict=False)]
    counters = Store(r).counters()
    out = {"latencies": lat, "answered": len(delivered), "complete": ok, "pulls": len(sb.requests("kf/sync_msg")),
           "coalesced": counters.get("kf_notices_coalesced", 0), "covered": counters.get("kf_notices_covered", 0),
           "duplicate": counters.get("kf_notices_duplicate", 0),
           "calls": Counter(q["path"].removeprefix("/cgi-bin/") for q in sb.requests()),
           "rounds": counters.get("kf_pulls", 0), "elapsed": (max(d["at"] for d in delivered) - began) if delivered
           else 0.0}
    svc.stop()
    sb.stop()
    r.flushdb()
    r.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--customers", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.045)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--redis-url", default="")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("werkzeug", "bot"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server = None
    url = args.redis_url
    if not url:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-pulls-redis-"))).start()
        url = server.url + "/0" if server.url.count("/") <= 2 else server.url
    results = {}
    try:
        for w in args.workers:
            results[w] = run(url, w, args.messages, args.customers, args.latency, args.timeout)
    finally:
        if server:
            server.stop()
    print(f"{args.messages} messages from {args.customers} customers on one kf account, one notice each through "
          f"the webhook ({POSTERS} concurrent posters); sandbox latency {args.latency * 1000:.0f} ms per API call; "
          f"redis: {'embedded' if server else url}")
    print(f"{'workers':>7} {'answered':>9} {'p50 s':>7} {'p99 s':>7} {'all s':>7} {'sync_msg':>9} {'coalesced':>10} "
          f"{'covered':>8} {'duplicate':>10}")
    for w, res in results.items():
        lat = res["latencies"]
        p50, p99 = (pct(lat, 50), pct(lat, 99)) if lat else (float("nan"), float("nan"))
        print(f"{w:7d} {res['answered']:9d} {p50:7.2f} {p99:7.2f} {res['elapsed']:7.2f} {res['pulls']:9d} "
              f"{res['coalesced']:10d} {res['covered']:8d} {res['duplicate']:10d}"
              f"{'' if res['complete'] else '  (timed out)'}")
    for w, res in results.items():
        print(f"{w} worker(s), API calls: " + ", ".join(f"{p} {n}" for p, n in res["calls"].most_common()))
    if 1 in results and 2 in results and results[2]["elapsed"]:
        print(f"ratio 2 workers vs 1 (time to answer the burst): {results[1]['elapsed'] / results[2]['elapsed']:.2f}x")


if __name__ == "__main__":
    main()
