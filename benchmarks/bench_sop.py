"""SOP engine throughput: enrolment, tick dispatch and memory per pending touch, against bare sorted-set ops.

Run: uv run python benchmarks/bench_sop.py [customers] [batch] [shards]
Starts its own embedded Redis in a temporary directory.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bot.queue.inbox import Inbox
from bot.records.customers import Customers
from bot.redis_server import EmbeddedRedis, connect
from bot.times import DEFAULT_TZ
from sop import journeys
from sop.engine import Engine, pending_counts
from sop.plan import Rules

START = datetime(2024, 12, 2, 10, 0, tzinfo=DEFAULT_TZ)
CHUNK = 1000


def baseline(r, n: int, batch: int) -> tuple[float, float]:
    """Bare ZADD of n members, then ZRANGEBYSCORE+ZREM in batches: ops per second of each phase."""
    key = "bench:{base}:z"
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        r.zadd(key, {f"journey|step|wm{j:028d}|1733104800": 1733104800 + j % 60 for j in range(i, min(n, i + CHUNK))})
    add = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    while members := r.zrangebyscore(key, "-inf", 1733105000, start=0, num=batch):
        r.zrem(key, *members)
    take = n / (time.perf_counter() - t0)
    r.delete(key)
    return add, take


def main(n: int = 100_000, batch: int = 200, shards: int = 1) -> None:
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-sop-")), appendfsync="no").start()
    try:
        r = connect(server.url)
        add_rate, take_rate = baseline(r, n, batch)
        found = [j for j in journeys.load() if j.id == "new_customer_week"]
        engine = Engine(r, found, Rules(), DEFAULT_TZ, customers=Customers(r), emit=Inbox(r, shards).emit_touches,
                        shards=shards)
        mem0 = r.info("memory")["used_memory"]
        t0 = time.perf_counter()
        for i in range(0, n, CHUNK):
            engine.enroll_many((f"wm{j:028d}", "customer_added", START + timedelta(seconds=j % 60), {})
                               for j in range(i, min(n, i + CHUNK)))
        enrol_rate = n / (time.perf_counter() - t0)
        pending = pending_counts(r)["due"]
        per_touch = (r.info("memory")["used_memory"] - mem0) / pending
        latencies: list[float] = []
        decided = 0
        t0 = time.perf_counter()
        while True:
            t = time.perf_counter()
            res = engine.tick(START + timedelta(minutes=5), batch=batch)
            if not res.claimed:
                break
            latencies.append(time.perf_counter() - t)
            decided += res.claimed
        tick_rate = decided / (time.perf_counter() - t0)
        lat = sorted(latencies)
        print(f"customers {n}, batch {batch}, shards {shards}, Redis {r.info('server').get('redis_version', '?')}")
        print(f"baseline ZADD            {add_rate:10.0f} /s")
        print(f"baseline ZRANGEBYSCORE+ZREM {take_rate:7.0f} /s")
        print(f"enrol                    {enrol_rate:10.0f} customers/s ({enrol_rate / add_rate:.2f}x bare ZADD)")
        print(f"memory per pending touch {per_touch:10.0f} bytes (due zset + enrolment record + pending index)")
        print(f"tick                     {tick_rate:10.0f} touches decided/s ({tick_rate / take_rate:.2f}x bare "
              f"claim; decided {decided}, counters {engine.counters().get('sent', 0)} sent)")
        print(f"tick latency             p50 {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms per batch of {batch}")
    finally:
        server.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
