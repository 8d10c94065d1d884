"""Redis memory per customer after the real message path, and the keys that grow with the customers.

N new customers each send one FAQ question through encrypted callbacks to the sandbox; workers answer
(welcome included) and the SOP engine enrols them. Then: used_memory per customer, and per key family
(MEMORY USAGE summed over every key, the key's customer / shard / id folded into a family name) the
bytes per customer and the largest single key: the number one node must hold.

Run: uv run python benchmarks/bench_memory.py [--customers 2000] [--shards 1] [--redis-url URL]
Redis: an embedded server it starts, or --redis-url (that database is flushed).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import SANDBOX_CORP_ID, SANDBOX_OPEN_KFID  # noqa: E402
from bot.records.store import EVENTS, EVENTS_MAXLEN  # noqa: E402
from bot.redis_server import EmbeddedRedis, connect  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402
from tests.support import kf_notice, make_settings, running  # noqa: E402

IDS = re.compile(r"\{[^}]*\}|wm[A-Za-z0-9]+|[0-9a-f]{16,}|\d{4}-\d\d-\d\d|\d+")


def family(key: str) -> str:
    """A key's name with its customer, shard, id and date folded: wecom:cust:{*}, wecom:{inbox:*}:stream..."""
    return IDS.sub("*", key)


def measure(redis_url: str, customers: int, shards: int) -> None:
    r = connect(redis_url)
    r.flushdb()
    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID).start()
    settings, _ = make_settings(sb.url, redis_url)
    settings = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, inbox_shards=shards))
    before = r.info("memory")["used_memory"]
    try:
        with running(settings, r, scheduler=True) as (_, svc):
            for i in range(customers):
                sb.add_customer_text(f"wmMem{i:06d}", "请问发票怎么开")
                if i % 50 == 49 or i == customers - 1:
                    assert svc.post(kf_notice(sb.callback_token(), create_time=time.time_ns())).status_code == 200
            deadline = time.monotonic() + 600
            while len({d["touser"] for d in sb.delivered()}) < customers and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # the last acks, counters and events
        total = r.info("memory")["used_memory"] - before
        sizes: dict[str, list[int]] = defaultdict(list)
        for key in r.scan_iter(count=1000):
            sizes[family(key)].append(int(r.memory_usage(key, samples=0) or 0))
        print(f"customers {customers}, inbox/SOP shards {shards}, answered {len({d['touser'] for d in sb.delivered()})}")
        print(f"used_memory growth     {total / customers:8.0f} bytes per customer (all keys, allocator included)")
        events = r.xlen(EVENTS)
        print(f"event stream           {events / customers:8.1f} entries per customer, "
              f"{int(r.memory_usage(EVENTS, samples=0) or 0) / max(events, 1):.0f} bytes per entry "
              f"(capped at {EVENTS_MAXLEN} entries)")
        print(f"{'key family':44} {'keys':>7} {'B/customer':>11} {'largest key':>12}")
        for name, got in sorted(sizes.items(), key=lambda kv: -sum(kv[1]))[:18]:
            print(f"{name:44} {len(got):7d} {sum(got) / customers:11.0f} {max(got):12d}")
    finally:
        sb.stop()
        r.flushdb()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--redis-url", default="")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("werkzeug", "bot", "apscheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server = None
    url = args.redis_url
    if not url:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-memory-")), appendfsync="no").start()
        url = server.url
    try:
        measure(url, args.customers, args.shards)
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
