"""Chaos, bounded: the split deployment (`web` with 2 gunicorn processes, 2 `worker`, 2 `scheduler` processes)
on a 3-master Redis Cluster with a replica each, a burst of customer messages through encrypted callbacks to
the sandbox, and during it SIGKILLs of a worker, the active scheduler, a gunicorn process and a Redis master
(its replica takes over), and the active scheduler SIGKILLed again while the journey's touches go out. Every
message is answered, none twice; no coupon over budget or twice; every due touch sent once; one scheduler active
at any time.

CHAOS_MESSAGES (default 2000, 4 per customer: 500 customers) sizes the burst; `pytest -m chaos` runs only this."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml
from redis.crc import key_slot

from bot.content.campaigns import load_campaigns
from bot.queue.scheduler import LEASE, TAKEOVERS, TICKS, TICKS_MAX
from bot.records.coupons import CouponBook
from bot.redis_server import connect, free_port
from bot.web.envelope import CallbackCrypto
from tests.cluster import LocalCluster
from tests.scenarios.test_durability import write_config
from tests.support import ROOT, kf_notice, make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]
MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "2000"))
# three FAQ topics and a coupon ask (round 3: the budget runs out around the gunicorn and Redis kills)
QUESTIONS = ["发票怎么开", "可以上门测量吗", "有优惠券吗", "可以定制吗"]
PER_CUSTOMER = len(QUESTIONS)
CAMPAIGN = "chaos"  # its keys' slot (4772) is on node 0, the master that is killed
EXHAUSTED = "混沌券已经发完啦"
TOUCH = "（混沌回访）一分钟前您来问过，还有什么可以帮您？"
CODE = re.compile(r"券码：([A-Z0-9]{8})")


def chaos_config(tmp_path: Path, customers: int) -> Path:
    """The durability config with a coupon campaign of budget 2/5 of the customers (on_exhausted: reply) and one
    journey: a touch 1 minute after the first contact; quiet hours far from now."""
    path = write_config(tmp_path, claim_idle=2.0)
    cfg = yaml.safe_load(path.read_text())
    campaign = {"name": CAMPAIGN, "title": "混沌券", "shape": "amount", "amount": 5, "budget": customers * 2 // 5,
                "per_customer": 1, "valid_hours": 24, "eligible": "everyone", "on_exhausted": "reply",
                "reply": "送您一张「{title}」：{value}\n券码：{code}", "exhausted_reply": EXHAUSTED}
    (tmp_path / "coupons.yaml").write_text(yaml.safe_dump({"campaigns": [campaign]}, allow_unicode=True))
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    journey = {"id": "chaos_followup", "title": "混沌回访", "priority": 50, "trigger": "first_contact",
               "stop_on": ["unsubscribed", "contact_deleted"],
               "steps": [{"id": "followup", "wait": "1m", "kind": "interaction", "content": {"text": TOUCH}}]}
    (journeys / "chaos.yaml").write_text(yaml.safe_dump(journey, allow_unicode=True))
    cfg["content"]["coupons"] = str(tmp_path / "coupons.yaml")
    cfg["content"]["journeys"] = str(journeys)
    del cfg["content"]["channels"]  # the shipped channels enrol journeys this config does not have
    now = datetime.now(ZoneInfo(cfg["timezone"]))
    cfg["sop"]["quiet_hours"] = f"{now + timedelta(hours=6):%H:%M}-{now + timedelta(hours=8):%H:%M}"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


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
    customers = [f"wmChaos{i:04d}" for i in range(MESSAGES // PER_CUSTOMER)]
    config = chaos_config(tmp_path, len(customers))
    cluster = LocalCluster(tmp_path / "cluster", replicas=1).start()
    assert key_slot(CAMPAIGN.encode()) < 16384 // cluster.masters  # the coupon's slot dies with node 0
    deployment = None
    try:
        url_of_survivor = f"redis://127.0.0.1:{cluster.nodes[1].port}/0"  # node 0 is the master to be killed
        settings, env = make_settings(sandbox.url, url_of_survivor)
        env = {**os.environ, **env, "WECOM_BOT_CONFIG": str(config)}
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

        def touched() -> list[dict]:
            return [d for d in sandbox.delivered() if (d.get("text") or {}).get("content") == TOUCH]

        def answered() -> int:
            return len(sandbox.delivered()) - len(touched())

        r = connect(url_of_survivor)
        killed: list[str] = []  # the scheduler that held the lease, each time
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
        # The touches fall due a minute after each first contact: the active scheduler is killed again once the
        # first has gone out, and the rest must still go out, each once.
        assert sandbox.wait_for(lambda: touched(), timeout=120)
        killed.append(kill_active_scheduler(deployment, r))
        touched_at_kill = len(touched())
        assert touched_at_kill < len(customers), "every touch was out before the kill: nothing left to take over"
        assert sandbox.wait_for(lambda: len(touched()) >= len(customers), timeout=120), len(touched())
        time.sleep(3)  # anything reclaimed late would show up as a second reply
        delivered = sandbox.delivered()
        msgids = Counter(d["msgid"] for d in delivered)
        assert [m for m, k in msgids.items() if k > 1] == []  # no reply twice
        contents = Counter((d["touser"], json.dumps(d.get("text"), ensure_ascii=False)) for d in delivered)
        assert [c for c, k in contents.items() if k > 1] == []  # no answer twice to one customer
        touches = Counter(d["touser"] for d in touched())
        assert touches == Counter(customers)  # every due touch, once
        answers = Counter(d["touser"] for d in delivered) - touches
        assert answers == sent, {c: (answers[c], sent[c]) for c in sent if answers[c] != sent[c]}
        check_coupons(r, config, customers, delivered)
        check_one_scheduler_at_a_time(r, deployment, killed)
        with cluster.nodes[cluster.masters].client() as c:  # node 0's replica
            assert c.info("replication")["role"] == "master"
        print(f"touches: {touched_at_kill} of {len(customers)} out when the active scheduler was killed again")
    finally:
        if deployment is not None:
            deployment.stop()
        cluster.stop()


def check_coupons(r, config: Path, customers: list[str], delivered: list[dict]) -> None:
    """Issued (Redis) within the budget and equal to the codes delivered, one per customer, each once; every other
    customer told the campaign is exhausted, once."""
    cfg = yaml.safe_load(config.read_text())
    (campaign,) = load_campaigns(cfg["content"]["coupons"])
    book = CouponBook(r, [campaign])
    (stats,) = book.stats(datetime.now(book.tz))
    assert stats["issued"] == campaign.budget < len(customers)  # the budget was hit, not passed
    texts = [(d["touser"], (d.get("text") or {}).get("content", "")) for d in delivered]
    codes = [(c, m.group(1)) for c, text in texts if (m := CODE.search(text))]
    exhausted = Counter(c for c, text in texts if text == EXHAUSTED)
    assert len(codes) == len({code for _, code in codes}) == len({c for c, _ in codes})  # no code, no customer twice
    issued = {(c, coupon.code) for c in customers for coupon in book.coupons_of(c)}
    assert len(issued) == stats["issued"]  # no customer holds two codes
    assert set(codes) == issued  # every code delivered was issued, to that customer, and every issued one delivered
    assert set(exhausted) == set(customers) - {c for c, _ in codes} and set(exhausted.values()) == {1}


def check_one_scheduler_at_a_time(r, deployment: Deployment, killed: list[str]) -> None:
    """From the lease's records: each acquisition bumped the epoch; every active tick held the lease (holder and
    epoch unchanged from its start to its end, checked in Redis), ticks of different epochs never overlap in time
    and come in epoch order; after each kill another scheduler took the lease."""
    takeovers = [line.split() for line in reversed(r.lrange(TAKEOVERS, 0, -1))]  # oldest first
    ticks = [line.split() for line in reversed(r.lrange(TICKS, 0, -1))]
    assert 0 < len(ticks) < TICKS_MAX  # none pushed out of the capped list
    epochs = [int(e) for e, _, _ in takeovers]
    assert epochs == sorted(set(epochs)), takeovers
    holder_of = {int(e): holder for e, holder, _ in takeovers}
    assert [t for t in ticks if t[4] != "held"] == [], ticks
    assert all(holder_of[int(e)] == holder for e, holder, *_ in ticks), (ticks, takeovers)
    spans = [(int(e), int(start), int(end)) for e, _, start, end, _ in ticks]
    overlaps = [(a, b) for a in spans for b in spans if a[0] < b[0] and not a[2] <= b[1]]
    assert overlaps == [], overlaps  # a later epoch's tick starts after every earlier epoch's tick ended
    logs = "".join(deployment.log(name) for name in ("scheduler-1", "scheduler-2"))
    assert "lost the lease" not in logs and "no longer its own" not in logs
    assert len(killed) == 2
    for dead in killed:  # the killed holder's epochs are followed by another holder's
        last = max(e for e, holder in holder_of.items() if holder == dead)
        assert any(e > last and holder != dead for e, holder in holder_of.items()), (dead, takeovers)


def kill_active_scheduler(deployment: Deployment, r) -> str:
    """SIGKILL the scheduler that holds the lease (its value names host and pid), start it again; returns the
    lease's holder."""
    holder = str(r.get(LEASE) or "")
    for name in ("scheduler-1", "scheduler-2"):
        if f"-{deployment.procs[name].pid}-" in holder:
            deployment.kill(name, "scheduler", ready=": scheduler ")
            return holder
    raise AssertionError(f"no scheduler of ours holds the lease: {holder!r}")
