"""Many processes hammer one campaign: throughput, and no budget or per-customer overrun.

Run: uv run python benchmarks/bench_coupons.py [processes] [customers] [budget]
Starts its own embedded Redis in a temporary directory.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from multiprocessing import Pool
from pathlib import Path

from bot.content.campaigns import Campaign
from bot.records.coupons import CouponBook
from bot.redis_server import EmbeddedRedis, connect
from bot.times import DEFAULT_TZ

NOW = datetime(2024, 12, 1, 10, 0, tzinfo=DEFAULT_TZ)
CAMPAIGN = Campaign(name="bench", title="压测券", shape="amount", amount=5, budget=0, valid_for=timedelta(hours=24))


def work(job: tuple[str, int, int, int, int]) -> list[tuple[str, str, str | None]]:
    """One worker: each message is sent twice (a replay) plus once more under a new id.

    Customer u{i % half} is shared by two workers, so the same customer asks from two processes.
    """
    url, budget, start, stop, half = job
    book = CouponBook(connect(url), [Campaign(**{**_fields(CAMPAIGN), "budget": budget})], DEFAULT_TZ)
    out = []
    for i in range(start, stop):
        for msgid in (f"m{i}", f"m{i}", f"m{i}b"):
            result = book.issue(f"u{i % half}", msgid, NOW)
            out.append((result.status, msgid, result.coupon.code if result.coupon else None))
    return out


def _fields(c: Campaign) -> dict:
    return {name: getattr(c, name) for name in c.__slots__}


def main(processes: int = 8, customers: int = 4000, budget: int = 1000) -> None:
    """Run the workers and check the invariants."""
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-coupons-")), appendfsync="everysec").start()
    try:
        step = customers // processes
        jobs = [(server.url, budget, p * step, (p + 1) * step, customers // 2) for p in range(processes)]
        started = time.perf_counter()
        with Pool(processes) as pool:
            results = [row for rows in pool.map(work, jobs) for row in rows]
        elapsed = time.perf_counter() - started
        book = CouponBook(connect(server.url), [Campaign(**{**_fields(CAMPAIGN), "budget": budget})], DEFAULT_TZ)
        stats = book.stats(NOW)[0]
        codes = {code for status, _, code in results if status == "issued"}
        per_customer = Counter(book.get(code).customer for code in codes)
        print(f"{len(results)} issue() calls in {elapsed:.2f}s = {len(results) / elapsed:.0f}/s "
              f"with {processes} processes; {Counter(s for s, _, _ in results)}")
        print(stats)
        assert stats["issued"] == len(codes) <= budget, "budget overrun"
        assert max(per_customer.values()) == 1, "a customer got two coupons"
    finally:
        server.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
