"""Chaos, bounded: the split deployment (`web` with 2 gunicorn processes, 2 `worker`, 2 `scheduler` processes)
on a 3-master Redis Cluster with a replica each, a burst of customer messages through encrypted callbacks to
the sandbox, and during it SIGKILLs of a worker, the active scheduler, a gunicorn process and a Redis master
(its replica takes over). Every message is answered, none twice.

CHAOS_MESSAGES (default 2000, 4 per customer: 500 customers) sizes the burst; `pytest -m chaos` runs only this."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from bot.queue.scheduler import LEASE
from bot.redis_server import connect, free_port
from bot.web.envelope import CallbackCrypto
from tests.cluster import LocalCluster
from tests.scenarios.test_durability import write_config
from tests.support import ROOT, kf_notice, make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]
MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "2000"))
QUESTIONS = ["发票怎么开", "可以上门测量吗", "发货了还能改地址吗", "可以定制吗"]  # four FAQ topics: four answers
PER_CUSTOMER = len(QUESTIONS)


class Deployment:
    """The processes of a split deployment, each restartable, with its log under `folder`."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, *args: str) -> None:
        """Start (or restart) one process."""
        log = (self.folder / f"{name}.log").open("a")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "bot", "--log-level", "INFO", *args],
                                            env=self.env, cwd=ROOT, stdout=log, stderr=log,
                                            start_new_session=True)

    def start(self) -> None:
        self.spawn("web", "web", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2")
        for name in ("worker-1", "worker-2"):
            self.spawn(name, "worker", "--threads", "2")
        for name in ("scheduler-1", "scheduler-2"):
            self.spawn(name, "scheduler")
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (self.folder / "web.log").read_text()[-3000:]
            time.sleep(0.2)

    def kill(self, name: str, *args: str, ready: str) -> None:
        """SIGKILL one process, start it again and wait until its log says `ready`."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()
        seen = self.log(name).count(ready)
        self.spawn(name, *args)
        self.wait_log(name, ready, seen + 1)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def wait_log(self, name: str, text: str, times: int = 1, timeout: float = 60) -> None:
        """Until `text` appears `times` times in the log of `name`."""
        deadline = time.monotonic() + timeout
        while self.log(name).count(text) < times:
            assert time.monotonic() < deadline, f"{name} never logged {text!r}:\n{self.log(name)[-2000:]}"
            time.sleep(0.1)

    def gunicorn_children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.procs["web"].pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_split_deployment_on_a_cluster_survives_kills_mid_burst(sandbox, tmp_path):
    cluster = LocalCluster(tmp_path / "cluster", replicas=1).start()
    deployment = None
    try:
        url_of_survivor = f"redis://127.0.0.1:{cluster.nodes[1].port}/0"  # node 0 is the master to be killed
        settings, env = make_settings(sandbox.url, url_of_survivor)
        env = {**os.environ, **env, "WECOM_BOT_CONFIG": str(write_config(tmp_path, claim_idle=2.0))}
        env.pop("REDIS_CLUSTER_URL", None)
        deployment = Deployment(env, tmp_path)
        deployment.start()
        url = f"http://127.0.0.1:{deployment.port}{settings.callback_path}"
        crypto = CallbackCrypto(settings.token, settings.aes_key, settings.corp_id)
        refused = Counter()

        def notify() -> None:
            """One kf notice, retried as WeCom retries until it is taken (200)."""
            query, body = crypto.encrypt(kf_notice(sandbox.callback_token(), create_time=time.time_ns()))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    status = requests.post(url, params=query, data=body.encode(), timeout=5).status_code
                except requests.RequestException:
                    status = 0
                if status == 200:
                    return
                refused[status] += 1
                time.sleep(0.2)
            raise AssertionError("a notice was never taken")

        customers = [f"wmChaos{i:04d}" for i in range(MESSAGES // PER_CUSTOMER)]
        sent = Counter()
        lock = threading.Lock()

        def post(mine: list[str]) -> None:
            for round_ in range(PER_CUSTOMER):
                for c in mine:
                    with lock:
                        sandbox.add_customer_text(c, QUESTIONS[round_])
                        sent[c] += 1
                    notify()

        posters = [threading.Thread(target=post, args=(customers[i::4],)) for i in range(4)]
        for t in posters:
            t.start()

        def answered() -> int:
            return len(sandbox.delivered())

        r = connect(url_of_survivor)
        killed: list[str] = []  # the scheduler that held the lease
        steps = [
            ("worker", lambda: deployment.kill("worker-1", "worker", "--threads", "2", ready="started")),
            ("scheduler", lambda: killed.append(kill_active_scheduler(deployment, r))),
            ("gunicorn", lambda: os.kill(deployment.gunicorn_children()[0], signal.SIGKILL)),
            ("redis master", lambda: cluster.nodes[0].kill()),
        ]
        for n, (_, act) in enumerate(steps, start=1):
            assert sandbox.wait_for(lambda n=n: answered() >= MESSAGES * n // 6, timeout=120), answered()
            act()
        for t in posters:
            t.join(timeout=120)
        assert sandbox.wait_for(lambda: answered() >= MESSAGES, timeout=120), (answered(), refused)
        time.sleep(3)  # anything reclaimed late would show up as a second reply
        delivered = sandbox.delivered()
        msgids = Counter(d["msgid"] for d in delivered)
        assert [m for m, k in msgids.items() if k > 1] == []  # no reply twice
        contents = Counter((d["touser"], json.dumps(d.get("text"), ensure_ascii=False)) for d in delivered)
        assert [c for c, k in contents.items() if k > 1] == []  # no answer twice to one customer
        per_customer = Counter(d["touser"] for d in delivered)
        assert per_customer == sent, {c: (per_customer[c], sent[c]) for c in sent if per_customer[c] != sent[c]}
        deployment.wait_log("scheduler-1" if killed[0] == "scheduler-2" else "scheduler-2", "(took over)")
        with cluster.nodes[cluster.masters].client() as c:  # node 0's replica
            assert c.info("replication")["role"] == "master"
    finally:
        if deployment is not None:
            deployment.stop()
        cluster.stop()


def kill_active_scheduler(deployment: Deployment, r) -> str:
    """SIGKILL the scheduler that holds the lease (its value names host and pid), then start it again."""
    holder = str(r.get(LEASE) or "")
    for name in ("scheduler-1", "scheduler-2"):
        if f"-{deployment.procs[name].pid}-" in holder:
            deployment.kill(name, "scheduler", ready=": scheduler ")
            return name
    raise AssertionError(f"no scheduler of ours holds the lease: {holder!r}")
