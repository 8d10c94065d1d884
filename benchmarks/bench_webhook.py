"""Webhook benchmark: our webhook vs a bare verify-and-decrypt Flask app, both under gunicorn, same run.

Also measures end-to-end customer-message-to-reply latency through the worker against the sandbox.
Run: uv run python benchmarks/bench_webhook.py [--requests 4000] [--rate 200] [--seconds 10]
Redis: an embedded server it starts, or database 15 of REDIS_URL when set (that database is flushed).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import SANDBOX_AES_KEY, SANDBOX_CORP_ID, SANDBOX_OPEN_KFID, SANDBOX_TOKEN  # noqa: E402
from bot.redis_server import EmbeddedRedis, connect, free_port  # noqa: E402
from bot.web.envelope import CallbackCrypto  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402

# gunicorn's recommended worker count, for both apps
WORKERS = os.environ.get("BENCH_GUNICORN_WORKERS", str(2 * (os.cpu_count() or 1) + 1))
CRYPTO = CallbackCrypto(SANDBOX_TOKEN, SANDBOX_AES_KEY, SANDBOX_CORP_ID)


def notice(i: int, token: str = "T") -> str:
    return (f"<xml><ToUserName><![CDATA[{SANDBOX_CORP_ID}]]></ToUserName><CreateTime>{1700000000 + i}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}{i}]]></Token><OpenKfId><![CDATA[{SANDBOX_OPEN_KFID}]]></OpenKfId></xml>")


def callbacks(n: int) -> list[tuple[str, bytes]]:
    """n distinct, correctly signed callbacks (paths with query, bodies)."""
    out = []
    for i in range(n):
        query, body = CRYPTO.encrypt(notice(i))
        out.append((f"/wecom/callback?{urlencode(query)}", body.encode()))
    return out


def gunicorn(app: str, port: int, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gunicorn", "-w", WORKERS, "-k", "gthread", "--threads", "8", "-b",
           f"127.0.0.1:{port}", "--log-level", "warning", app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            c.getresponse().read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app} did not start")


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    start = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "text/xml"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - start


def throughput(port: int, items: list[tuple[str, bytes]], clients: int = 8) -> float:
    """Callbacks per second with `clients` keep-alive connections, closed loop."""
    chunks = [items[i::clients] for i in range(clients)]

    def run(chunk: list[tuple[str, bytes]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for path, body in chunk:
            post(conn, path, body)

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(items) / (time.perf_counter() - start)


def paced_latency(port: int, items: list[tuple[str, bytes]], rate: float) -> list[float]:
    """Latencies of callbacks sent open-loop at `rate` per second over 4 connections."""
    lat: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(k, len(items), 4):
            due = start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            d = post(conn, *items[i])
            with lock:
                lat.append(d)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] * 1000


def end_to_end(redis_url: str, samples: int) -> list[float]:
    """Customer message -> reply at the sandbox, through web, inbox, worker and kf/send_msg."""
    import dataclasses

    from bot.content import Content
    from bot.runtime import Runtime
    from tests.conftest import Service, make_settings
    from tests.support import kf_notice

    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID).start()
    settings, _ = make_settings(sb.url, redis_url)
    r = connect(redis_url)
    rt = Runtime(settings, r, content=Content(settings))
    svc = Service(rt.app(), CRYPTO, settings.callback_path)
    stop = threading.Event()
    rt.settings = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, block_ms=5))
    threading.Thread(target=rt.worker().run_forever, args=(stop,), daemon=True).start()
    out = []
    for i in range(samples):
        sb.add_customer_text(f"wmE2E{i}", "请问什么时候发货")
        start = time.perf_counter()
        svc.post(kf_notice(sb.callback_token()))  # a notice of now: one from 2023 is covered by the last pull
        sb.wait_for(lambda n=i: len(sb.delivered()) > n, timeout=10)
        out.append(time.perf_counter() - start)
    stop.set()
    svc.stop()
    sb.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--e2e", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
        url = server.url
    bench_url = url.rsplit("/", 1)[0] + "/15"
    connect(bench_url).flushdb()
    env = {"WECOM_SECRET": "bench", "WECOM_CORP_ID": SANDBOX_CORP_ID, "WECOM_TOKEN": SANDBOX_TOKEN,
           "WECOM_AES_KEY": SANDBOX_AES_KEY, "REDIS_URL": bench_url, "WECOM_BOT_CONFIG": str(ROOT / "config.yaml")}
    ours_port, bare_port = free_port(), free_port()
    warm = callbacks(200)
    load = callbacks(args.requests)
    paced = callbacks(int(args.rate * args.seconds))
    apps = {"bare": ("benchmarks.bare_app:app", bare_port), "ours": ("bot.wsgi:app", ours_port)}
    procs = [gunicorn(app, port, env) for app, port in apps.values()]
    tputs: dict[str, list[float]] = {name: [] for name in apps}
    lats: dict[str, list[float]] = {name: [] for name in apps}
    try:
        for _, port in apps.values():
            throughput(port, warm)
        for _ in range(args.rounds):  # alternate, so both see the same machine noise
            for name, (_, port) in apps.items():
                connect(bench_url).flushdb()
                tputs[name].append(throughput(port, load))
        for name, (_, port) in apps.items():
            connect(bench_url).flushdb()
            lats[name] = paced_latency(port, paced, args.rate)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    results = {name: (statistics.median(tputs[name]), pct(lats[name], 50), pct(lats[name], 99)) for name in apps}
    connect(bench_url).flushdb()
    e2e = end_to_end(bench_url, args.e2e)
    connect(bench_url).flushdb()
    if server:
        server.stop()

    print(f"redis: {f'embedded, AOF appendfsync {server.appendfsync}' if server else url}; median of {args.rounds} "
          f"alternating rounds of {args.requests} callbacks over 8 keep-alive connections; gunicorn -w {WORKERS} gthread 8")
    print(f"{'app':6} {'callbacks/s':>12} {'p50 ms @' + str(int(args.rate)) + '/s':>16} {'p99 ms':>8}")
    for name, (tput, p50, p99) in results.items():
        print(f"{name:6} {tput:12.0f} {p50:16.2f} {p99:8.2f}")
    print(f"throughput ratio ours/bare: {results['ours'][0] / results['bare'][0]:.2f}")
    print(f"end-to-end message->reply via worker and sandbox: p50 {pct(e2e, 50):.1f} ms, "
          f"p99 {pct(e2e, 99):.1f} ms over {len(e2e)} messages")


if __name__ == "__main__":
    main()
