"""The scheduler: one APScheduler job behind a Redis lease, so only one process fires at a time."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from bot.act.staff import Staff
from bot.observe import HEARTBEAT_SCHEDULER as HEARTBEAT
from bot.observe import flush
from bot.queue.callback import Callback
from bot.queue.inbox import Inbox, Item
from bot.records.coupons import CouponBook
from bot.records.daily import rollup
from bot.records.handoffs import MAX_LEVEL, Handoffs
from bot.records.store import DeleteIf, Store
from bot.times import from_ts
from sop.engine import Engine

log = logging.getLogger("bot.queue.scheduler")

LEASE = "wecom:lease:scheduler"
# In LEASE's cluster slot (its whole name is the hash tag): the fencing counter, bumped on every acquisition, and
# two capped lists, newest first: "<epoch> <holder> <ms>" per acquisition, "<epoch> <holder> <start ms> <end ms>
# held|lost" per active tick ("held": the lease was this holder's, at this epoch, from the tick's start to its end).
EPOCH = "{wecom:lease:scheduler}:epoch"
TAKEOVERS = "{wecom:lease:scheduler}:takeovers"
TICKS = "{wecom:lease:scheduler}:ticks"
TAKEOVERS_MAX, TICKS_MAX = 50, 200
RELOAD_KEY = "wecom:sop:reload"  # set by `wecom-bot sop reload`
# KEYS: lease, epoch, takeovers. ARGV: me, ttl ms, now ms, cap. Returns the epoch held, 0 when another holds it.
RENEW = """
local held = redis.call('GET', KEYS[1]) == ARGV[1]
if not held and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local epoch = held and redis.call('GET', KEYS[2])
if epoch then return tonumber(epoch) end
epoch = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[3], epoch .. ' ' .. ARGV[1] .. ' ' .. ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return epoch
"""
# KEYS: lease, epoch. ARGV: me, epoch, ttl ms. 1 (and the lease extended) while the lease is still ours at that epoch.
FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: lease, epoch, ticks. ARGV: me, epoch, start ms, end ms, cap. Records the tick; 1 if it held the lease.
TICKED = """
local held = redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2]
redis.call('LPUSH', KEYS[3], table.concat({ARGV[2], ARGV[1], ARGV[3], ARGV[4], held and 'held' or 'lost'}, ' '))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
return held and 1 or 0
"""


class LeaseLost(Exception):
    """Another scheduler took the lease (or it ran out) during this one's tick."""


def leadership(r: redis.Redis) -> dict[str, Any]:
    """Who leads, for /readyz and doctor: the lease holder (host-pid-token, "" when none), its epoch and the
    last takeover (epoch, holder, ISO time)."""
    holder, epoch = r.get(LEASE), r.get(EPOCH)
    last = r.lrange(TAKEOVERS, 0, 0)
    taken: dict[str, Any] | None = None
    if last:
        e, who, ms = (last[0].split(" ") + ["", "", "0"])[:3]
        taken = {"epoch": int(e or 0), "holder": who,
                 "at": datetime.fromtimestamp(int(ms or 0) / 1000, UTC).isoformat()}
    return {"active": holder or "", "epoch": int(epoch or 0), "last_takeover": taken}


class Scheduler:
    """Ticks every `interval` seconds while holding the lease; others stand by."""

    def __init__(self, r: redis.Redis, inbox: Inbox, store: Store, handoffs: Handoffs, staff: Staff,
                 engine: Callable[[], Engine | None], coupons: Callable[[], CouponBook | None],
                 reload: Callable[[], object], tz: ZoneInfo, stop: threading.Event,
                 clock: Callable[[], float] = time.time, interval: float = 5.0, safety_sync_seconds: int = 300,
                 idle_close_seconds: float = 4 * 3600) -> None:
        self.r = r
        self.inbox = inbox
        self.store = store
        self.handoffs = handoffs
        self.staff = staff
        self.engine = engine
        self.coupons = coupons
        self.reload = reload  # reload the operator files now (`wecom-bot sop reload`)
        self.tz = tz
        self.stop = stop
        self.clock = clock
        self.interval = interval
        self.safety_sync_seconds = safety_sync_seconds
        self.idle_close_seconds = idle_close_seconds
        self._reload_seen = self.r.get(RELOAD_KEY)
        self.me = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"  # says who holds the lease
        self._active: bool | None = None  # what this process last logged: active, standing by, or not yet
        self._epoch = 0  # the lease's epoch at this process's last active tick
        self._renew = self.r.register_script(RENEW)
        self._fence = self.r.register_script(FENCE)
        self._ticked = self.r.register_script(TICKED)
        self._aps = BackgroundScheduler(timezone=self.tz)

    def start(self) -> None:
        self._aps.add_job(self.tick, "interval", seconds=self.interval, max_instances=1, coalesce=True,
                          id="tick", next_run_time=datetime.now(self.tz))
        self._aps.start()

    def shutdown(self) -> None:
        self._aps.shutdown(wait=False)
        DeleteIf(self.r)(LEASE, self.me)

    def leader(self) -> int:
        """Take or keep the lease (3 ticks long): its epoch, 0 on standby; logs becoming active or standing by."""
        epoch = int(self._renew(keys=[LEASE, EPOCH, TAKEOVERS],
                                args=[self.me, self._ttl_ms(), int(time.time() * 1000), TAKEOVERS_MAX]))
        active = epoch > 0
        if active != self._active:
            if active:
                log.info("scheduler %s is active%s", self.me, "" if self._active is None else " (took over)")
            else:
                log.info("scheduler %s stands by: %s holds the lease", self.me, self.r.get(LEASE) or "nobody")
            self._active = active
        return epoch

    def fenced(self, epoch: int) -> None:
        """Before a step's writes: raise LeaseLost unless the lease is still ours at `epoch` (and extend it)."""
        if not self._fence(keys=[LEASE, EPOCH], args=[self.me, epoch, self._ttl_ms()]):
            raise LeaseLost(f"epoch {epoch}")

    def _ttl_ms(self) -> int:
        return int(self.interval * 3000)

    def tick(self, now: float | None = None) -> int:
        """One round of scheduled work; returns how many items were queued."""
        try:
            epoch = self.leader()
            if not epoch:
                return 0
            started = time.time()
            try:
                return self._work(epoch, now or self.clock())
            finally:
                held = self._ticked(keys=[LEASE, EPOCH, TICKS], args=[
                    self.me, epoch, int(started * 1000), int(time.time() * 1000), TICKS_MAX])
                if not held:
                    log.warning("scheduler %s lost the lease during a tick (epoch %d)", self.me, epoch)
        except LeaseLost as exc:
            log.warning("scheduler %s stopped a tick: the lease is no longer its own (%s)", self.me, exc)
            return 0
        except Exception as exc:  # a failed tick must not kill the scheduler thread
            log.warning("scheduler tick failed: %s", exc)
            return 0

    def _work(self, epoch: int, now: float) -> int:
        """The tick's steps, each after checking the lease is still ours at `epoch`."""
        self.r.set(HEARTBEAT, f"{now:.0f}", ex=int(self.interval * 10))
        rollup(self.r, self.tz)  # daily numbers for the console, from the event stream
        flush(self.r)
        moment = from_ts(now, self.tz)
        self.fenced(epoch)
        queued = self.safety_sync(now)
        self.fenced(epoch)
        queued += self.handoff_clock(moment)
        if epoch != self._epoch:  # newly acquired: what an earlier holder claimed and did not finish is due again
            self.fenced(epoch)
            if (engine := self.engine()) is not None and (released := engine.release_claims(moment)):
                log.info("scheduler %s released %d touches claimed by an earlier holder", self.me, released)
            self._epoch = epoch
        return queued + self.sop_clock(moment, lambda: self.fenced(epoch))

    def handoff_clock(self, now: datetime) -> int:
        """Queue SLA escalations that are due and off-hours handoffs whose working hours began."""
        # Keyed per 10 minutes: a postponed or failed rung is asked for again later, never twice at once.
        bucket = int(now.timestamp() // 600)
        items = [Item("escalate", json.dumps({"id": h.id, "level": h.level + 1}), f"esc:{h.id}:{h.level + 1}:{bucket}")
                 for h in self.handoffs.due_for_escalation(now) if h.level < MAX_LEVEL]
        items += [Item("wake", json.dumps({"id": h.id}), f"wake:{h.id}") for h in self.handoffs.due_for_alert(now)]
        if self.staff.robot_pending():  # one summary a minute for handoffs the robot's limit held back
            items.append(Item("robot_summary", "", f"robot_summary:{int(now.timestamp() // 60)}"))
        closed = self.staff.close_idle(self.idle_close_seconds) if self.idle_close_seconds else 0
        return (self.inbox.put_many(items, 7 * 86400) if items else 0) + closed

    def sop_clock(self, now: datetime, fenced: Callable[[], None] = lambda: None) -> int:
        """Due SOP touches to the inbox; once a day (and at start) the calendar, silence and coupon scans."""
        asked = self.r.get(RELOAD_KEY)
        if asked and asked != self._reload_seen:  # `wecom-bot sop reload`
            self._reload_seen = asked
            self.reload()
        engine = self.engine()
        if engine is None:
            return 0
        day = now.strftime("%Y-%m-%d")
        fenced()
        if not self.r.exists(f"wecom:sop:scanned:{day}"):
            engine.scan_calendar(now)
            engine.scan_silence(now)
            if book := self.coupons():
                engine.scan_coupons(now, book)
            self.r.set(f"wecom:sop:scanned:{day}", "1", ex=3 * 86400)  # after the scans: a crash repeats them
        emitted = 0
        for _ in range(50):  # bounded per tick
            fenced()
            result = engine.tick(now)
            emitted += result.emitted
            if not result.claimed:
                break
        return emitted

    def safety_sync(self, now: float) -> int:
        """Every few minutes, pull each known kf account even without a callback (lost callbacks)."""
        bucket = int(now // self.safety_sync_seconds)
        items = []
        for open_kfid in self.store.kf_accounts():
            event = Callback("kf_notice", {"OpenKfId": open_kfid, "Token": "", "CreateTime": f"safety-{bucket}"})
            items.append(Item("callback", event.to_json(), "cb:" + event.dedupe_key, event.shard_key))
        return self.inbox.put_many(items, self.safety_sync_seconds * 2) if items else 0
