"""Cost of one plain FAQ message end to end: Redis round trips and CPU (all processes), against a baseline of
the same run (one bare PING round trip per message).

The service (the webhook over HTTP under waitress, as `wecom-bot serve` runs it, and one worker) runs in this
process; the sandbox (fake WeCom) in a child process and Redis in its own server, so their CPU is measured apart:
ours = this process, plus Redis's used_cpu.
Each message: the customer writes (sandbox), a kf_msg_or_event callback is posted, the worker pulls, classifies,
answers from the FAQ and records it. Round trips are counted at the client: a pipeline is one.

Run: uv run python benchmarks/bench_message_cost.py [--messages 300] [--customers 100]
Targets (issue 13): at most 15 Redis round trips and 3 ms of CPU per plain FAQ message.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from waitress.server import create_server  # noqa: E402

from bot.config import SANDBOX_CORP_ID, SANDBOX_OPEN_KFID  # noqa: E402
from bot.content import Content  # noqa: E402
from bot.redis_server import EmbeddedRedis, connect  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.web.envelope import CallbackCrypto  # noqa: E402
from bot.web.limits import SERVE_LIMITS  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402
from tests.support import SANDBOX_AES_KEY, SANDBOX_TOKEN, kf_notice, make_settings  # noqa: E402

QUESTIONS = ("怎么安装", "几天发货", "发什么快递", "保修多久", "尺码怎么选", "支持七天无理由吗")

HEADS: Counter[bytes] = Counter()  # round trips by the first bytes sent (cheap to count; named afterwards)
SERVE_THREADS = 8  # `wecom-bot serve --threads`
ROUNDS = 5  # the measured messages in rounds, each with its own CPU figure
SITES: Counter[str] | None = None  # --sites: round trips by the function of ours that made them
_send = redis.connection.Connection.send_packed_command


def _counting(self: redis.connection.Connection, command: object, check_health: bool = True) -> None:
    """Count one round trip per packed send (a pipeline is one send), by the first command's first bytes."""
    first = command[0] if isinstance(command, list) and command else command
    HEADS[bytes(memoryview(first)[:48]) if isinstance(first, bytes | bytearray | memoryview) else b""] += 1
    if SITES is not None:
        frame = sys._getframe(1)
        while frame and not frame.f_code.co_filename.startswith((str(ROOT / "bot"), str(ROOT / "sop"))):
            frame = frame.f_back  # type: ignore[assignment]
        where = f"{Path(frame.f_code.co_filename).relative_to(ROOT)}:{frame.f_code.co_name}" if frame else "?"
        SITES[where] += 1
    _send(self, command, check_health)


def named_trips() -> Counter[str]:
    """The round trips counted so far, by the first command's name."""
    named: Counter[str] = Counter()
    for head, n in HEADS.items():
        name = head.split(b"\r\n")[2:3]
        named[name[0].decode(errors="replace").upper() if name else "?"] += n
    return named


def sandbox_and_load(port: Any, jobs: Any, done: Any, customers: int) -> None:
    """The child process: the sandbox (fake WeCom) and the load. For each job (a service URL and a range of
    message numbers) each message is written, its callback posted, and its reply awaited, one at a time."""
    import requests

    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID).start()
    port.value = sb.port
    crypto = CallbackCrypto(SANDBOX_TOKEN, SANDBOX_AES_KEY, SANDBOX_CORP_ID)
    http = requests.Session()
    while (job := jobs.get()) is not None:
        url, first, last = job
        for i in range(first, last):
            before = len(sb.delivered())
            token = sb.callback_token()
            sb.add_customer_text(f"wmCost{i % customers:04d}", QUESTIONS[i % len(QUESTIONS)])
            query, body = crypto.encrypt(kf_notice(token))
            http.post(url, params=query, data=body.encode(), timeout=10)
            if not sb.wait_for(lambda before=before: len(sb.delivered()) > before, timeout=10):
                raise SystemExit(f"message {i} got no reply")
        done.put(len(sb.delivered()))
    sb.stop()


def cpu() -> float:
    """CPU seconds of this process (user + system)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--customers", type=int, default=100)
    ap.add_argument("--sites", action="store_true", help="also count round trips by the function that made them")
    ap.add_argument("--commandstats", action="store_true",
                    help="also show Redis's own time per command (INFO commandstats) per message")
    args = ap.parse_args()
    global SITES
    SITES = Counter() if args.sites else None
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-cost-")), appendfsync="everysec").start()
    port, jobs, done = mp.Value("i", 0), mp.Queue(), mp.Queue()
    child = mp.Process(target=sandbox_and_load, args=(port, jobs, done, args.customers), daemon=True)
    child.start()
    while not port.value:
        time.sleep(0.01)
    stop = threading.Event()
    try:
        r = connect(server.url)
        settings, _ = make_settings(f"http://127.0.0.1:{port.value}", server.url)
        settings = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, block_ms=1000))
        rt = Runtime(settings, r, content=Content(settings))
        rt.classifier()
        web = create_server(rt.app(), host="127.0.0.1", port=0, threads=SERVE_THREADS, **SERVE_LIMITS)  # as `serve`
        threading.Thread(target=web.run, daemon=True).start()
        url = f"http://127.0.0.1:{web.effective_port}{settings.callback_path}"
        threading.Thread(target=rt.worker("bench-cost").run_forever, args=(stop,), daemon=True).start()
        jobs.put((url, 0, args.customers))  # first contacts (welcome, journeys) are not the plain case
        done.get(timeout=300)
        time.sleep(1.5)  # the worker settles into its blocking read
        ping = connect(server.url)
        redis.connection.Connection.send_packed_command = _counting  # type: ignore[method-assign]
        HEADS.clear()
        ping.config_resetstat()
        t0, rounds = time.perf_counter(), []
        per_round = args.messages // ROUNDS
        for k in range(ROUNDS):  # the CPU of each round apart: this machine's other load moves it
            c0, rc0 = cpu(), redis_cpu(ping)
            first = args.customers + k * per_round
            jobs.put((url, first, first + per_round))
            delivered = done.get(timeout=600)
            rounds.append(((cpu() - c0) * 1000 / per_round, (redis_cpu(ping) - rc0) * 1000 / per_round))
        t1 = time.perf_counter()
        args.messages = per_round * ROUNDS
        stats = ping.info("commandstats")
        ours = dict(named_trips())
        HEADS.clear()
        for _ in range(args.messages):  # the baseline: one bare round trip per message
            ping.ping()
        base = sum(HEADS.values())
        redis.connection.Connection.send_packed_command = _send  # type: ignore[method-assign]
        wall = t1 - t0
        idle = wall / (settings.worker.block_ms / 1000)  # blocking reads that returned empty at most
        trips = sum(ours.values()) / args.messages
        ms_ours, ms_redis = sorted(rounds, key=sum)[len(rounds) // 2]  # the median round
        spread = sorted(sum(r) for r in rounds)
        print(f"{args.messages} plain FAQ messages from {args.customers} returning customers, one at a time, one "
              f"worker; {delivered} replies delivered in all")
        print(f"redis round trips per message: {trips:.1f} (baseline: PING {base / args.messages:.1f}; "
              f"target <= 15; includes at most {idle / args.messages:.2f} idle reads)")
        print("  by first command: " + ", ".join(f"{k} {v / args.messages:.1f}" for k, v in
                                                   sorted(ours.items(), key=lambda kv: -kv[1])[:14]))
        if SITES is not None:
            for where, n in SITES.most_common(30):
                print(f"  {n / args.messages:5.1f}  {where}")
        if args.commandstats:  # a script's usec includes the commands it ran, which are counted on their own too
            print("  redis's own time per message, by command (commandstats; scripts include their commands):")
            for name, st in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:12]:
                print(f"  {st['usec'] / args.messages:7.1f} us  {st['calls'] / args.messages:5.1f} calls  "
                      f"{name.removeprefix('cmdstat_')}")
        print(f"cpu per message: {ms_ours + ms_redis:.2f} ms = service {ms_ours:.2f} ms (webhook + worker, this "
              f"process) + redis {ms_redis:.2f} ms (target <= 3 ms; the sandbox and the load run in another process)")
        print(f"  the median of {ROUNDS} rounds; all rounds: " + ", ".join(f"{x:.2f}" for x in spread) + " ms")
        print(f"wall per message: {wall * 1000 / args.messages:.1f} ms (one message at a time, reply awaited)")
        stop.set()
        web.close()
        rt.close()
    finally:
        stop.set()
        jobs.put(None)
        child.join(5)
        server.stop()


if __name__ == "__main__":
    main()
