"""Scaling: customer messages answered end to end per second with 1, 2 and 4 worker processes, on a standalone
Redis and on a 3-master Redis Cluster, the same load in one run.

The split deployment as production runs it: `wecom-bot web` (gunicorn, 2 processes) and N `wecom-bot worker`
processes (--threads each, default 1), all on one REDIS_URL; the sandbox (fake WeCom, every API call answered after
--latency seconds, as WeCom takes about 45 ms) and the load generator in one more process. The load: --messages
customer messages from --customers customers on one kf account, each with its own encrypted kf_msg_or_event
callback, posted by 8 concurrent senders as fast as the webhook takes them. Throughput = messages / (first post
to last reply); reply latency = a message's add to its reply. CPU of the whole machine is sampled too, since
everything shares this machine's cores.

Run: uv run python benchmarks/bench_scale.py [--messages 1000] [--customers 250] [--latency 0.045]
     [--workers 1 2 4] [--threads 1] [--modes standalone cluster]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import SANDBOX_CORP_ID, SANDBOX_OPEN_KFID  # noqa: E402
from bot.redis_server import EmbeddedRedis  # noqa: E402
from bot.web.envelope import CallbackCrypto  # noqa: E402
from bot.wecom.sandbox import Sandbox  # noqa: E402
from tests.cluster import LocalCluster  # noqa: E402
from tests.support import SANDBOX_AES_KEY, SANDBOX_TOKEN, kf_notice  # noqa: E402

POSTERS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sandbox_and_load(port: Any, jobs: Any, results: Any, latency: float) -> None:
    """The child process: the sandbox, and per job (callback URL, messages, customers) one burst and its
    figures: (seconds from first post to last reply, reply latencies, replies)."""
    import requests

    sb = Sandbox(SANDBOX_CORP_ID, "sandbox-secret", SANDBOX_OPEN_KFID, latency=latency).start()
    port.value = sb.port
    crypto = CallbackCrypto(SANDBOX_TOKEN, SANDBOX_AES_KEY, SANDBOX_CORP_ID)
    while (job := jobs.get()) is not None:
        url, messages, customers, timeout = job
        sb.reset()
        added: dict[str, list[float]] = {}
        lock = threading.Lock()

        def post(indexes: range, url: str = url, customers: int = customers, added: Any = added,
                 lock: threading.Lock = lock) -> None:
            http = requests.Session()
            for i in indexes:
                customer = f"wmScale{i % customers:05d}"
                with lock:
                    added.setdefault(customer, []).append(time.time())
                token = sb.callback_token()
                sb.add_customer_text(customer, f"怎么安装 {i}")
                query, body = crypto.encrypt(kf_notice(token))
                for _ in range(5):  # a 503 (e.g. a failover) is retried, as WeCom does
                    if http.post(url, params=query, data=body.encode(), timeout=10).status_code == 200:
                        break
                    time.sleep(0.2)

        start = time.time()
        threads = [threading.Thread(target=post, args=(range(k, messages, POSTERS),)) for k in range(POSTERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = sb.wait_for(lambda n=messages: len({d["msgid"] for d in sb.delivered()}) >= n, timeout=timeout)
        replies = sb.delivered()
        end = max((d["at"] for d in replies), default=time.time())
        by: dict[str, list[float]] = {}
        for d in sorted(replies, key=lambda d: d["at"]):
            by.setdefault(d["touser"], []).append(d["at"])
        lat = [r - a for c, ats in added.items() for a, r in zip(sorted(ats), by.get(c, []), strict=False)]
        results.put((end - start, lat, len(replies), answered))
    sb.stop()


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def group_cpu(groups: set[int], pids: set[int] | None = None) -> float:
    """CPU seconds (user + system) of the live processes in process groups `groups` and of `pids`."""
    tick, pids = os.sysconf("SC_CLK_TCK"), pids or set()
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in groups or int(stat.parent.name) in pids:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def start_processes(redis_url: str, sandbox_url: str, workers: int, port: int, log: Path,
                    threads: int = 1) -> list[subprocess.Popen]:
    env = {**os.environ, "REDIS_URL": redis_url, "WECOM_SECRET": "sandbox-secret", "WECOM_CORP_ID": SANDBOX_CORP_ID,
           "WECOM_TOKEN": SANDBOX_TOKEN, "WECOM_AES_KEY": SANDBOX_AES_KEY, "WECOM_AGENT_ID": "1000002",
           "WECOM_API_BASE_URL": f"{sandbox_url}/cgi-bin/", "WECOM_BOT_CONFIG": str(ROOT / "config.yaml")}
    out = log.open("ab")
    cmd = [sys.executable, "-m", "bot", "--log-level", "WARNING"]
    procs = [subprocess.Popen([*cmd, "web", "--port", str(port), "--workers", "2"], env=env, cwd=ROOT,
                              stdout=out, stderr=out, start_new_session=True)]
    procs += [subprocess.Popen([*cmd, "worker", "--threads", str(threads)], env=env, cwd=ROOT, stdout=out, stderr=out,
                               start_new_session=True) for _ in range(workers)]
    return procs


def wait_http(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else (values[0] if values else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--customers", type=int, default=250)
    ap.add_argument("--latency", type=float, default=0.045)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--modes", nargs="+", default=["standalone", "cluster"], choices=["standalone", "cluster"])
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker process")
    args = ap.parse_args()
    port, jobs, results = mp.Value("i", 0), mp.Queue(), mp.Queue()
    child = mp.Process(target=sandbox_and_load, args=(port, jobs, results, args.latency), daemon=True)
    child.start()
    while not port.value:
        time.sleep(0.01)
    sandbox_url = f"http://127.0.0.1:{port.value}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows = []
    print(f"{args.messages} messages from {args.customers} customers on one kf account, WeCom latency "
          f"{args.latency * 1000:.0f} ms per call; web: gunicorn 2 processes; workers: processes of {args.threads} "
          f"thread(s); "
          f"{os.cpu_count()} cores", flush=True)
    try:
        for mode in args.modes:
            for n in args.workers:
                folder = tmp / f"{mode}-{n}"
                if mode == "cluster":
                    topology: Any = LocalCluster(folder).start()
                    url = topology.url
                else:
                    topology = EmbeddedRedis(folder, appendfsync="everysec").start()
                    url = topology.url
                procs: list[subprocess.Popen] = []
                try:
                    web_port = free_port()
                    procs = start_processes(url, sandbox_url, n, web_port, tmp / "processes.log", args.threads)
                    wait_http(f"http://127.0.0.1:{web_port}/healthz")
                    time.sleep(2.0)  # workers load the classifier
                    b0 = cpu_busy()
                    groups = {p.pid for p in procs}  # each started in its own session: gunicorn's workers too
                    redis_pids = set(topology.pids()) if mode == "cluster" else {topology.process.pid}
                    ours0, redis0 = group_cpu(groups), group_cpu(set(), redis_pids)
                    jobs.put((f"http://127.0.0.1:{web_port}/wecom/callback", args.messages, args.customers,
                              args.timeout))
                    seconds, lat, replies, answered = results.get(timeout=args.timeout + 120)
                    b1 = cpu_busy()
                    busy = (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1])
                    ours = (group_cpu(groups) - ours0) * 1000 / args.messages
                    in_redis = (group_cpu(set(), redis_pids) - redis0) * 1000 / args.messages
                    rows.append((mode, n, args.messages / seconds if seconds else 0.0, pct(lat, 50), pct(lat, 99),
                                 replies, answered, busy, ours, in_redis))
                    print(f"{mode:10} workers={n}: {rows[-1][2]:6.1f} msg/s  reply p50 {rows[-1][3]:5.2f} s  "
                          f"p99 {rows[-1][4]:5.2f} s  replies {replies}{'' if answered else ' (TIMED OUT)'}  "
                          f"machine CPU busy {busy * 100:.0f}%  CPU per message: web + workers {ours:.2f} ms, "
                          f"redis {in_redis:.2f} ms", flush=True)
                finally:
                    for p in procs:
                        try:
                            os.killpg(p.pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass
                    for p in procs:
                        try:
                            p.wait(15)
                        except subprocess.TimeoutExpired:
                            os.killpg(p.pid, signal.SIGKILL)
                    topology.stop()
        print("\nmode        workers   msg/s   vs 1 worker   p50 s   p99 s   CPU busy   CPU ms/msg (ours + redis)")
        for mode in args.modes:
            base = next((r[2] for r in rows if r[0] == mode and r[1] == args.workers[0]), 0.0)
            for r in (r for r in rows if r[0] == mode):
                print(f"{r[0]:10} {r[1]:>8} {r[2]:>7.1f} {r[2] / base if base else 0:>12.2f} {r[3]:>7.2f} "
                      f"{r[4]:>7.2f} {r[7] * 100:>8.0f}%   {r[8]:.2f} + {r[9]:.2f}")
        if len(args.modes) == 2:
            for n in args.workers:
                s = next((r[2] for r in rows if r[0] == "standalone" and r[1] == n), 0.0)
                c = next((r[2] for r in rows if r[0] == "cluster" and r[1] == n), 0.0)
                print(f"cluster / standalone with {n} worker(s): {c / s if s else 0:.2f}")
    finally:
        jobs.put(None)
        child.join(10)



if __name__ == "__main__":
    main()
