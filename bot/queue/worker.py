"""The worker: drains the inbox and performs each entry by its kind, as the KINDS table below says."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from bot.act import steps
from bot.act.executor import Executor
from bot.act.staff import Staff
from bot.act.touches import TouchRunner
from bot.config import WorkerSettings
from bot.observe import heartbeat_worker, observe_processing
from bot.pipeline import Pipeline
from bot.queue.callback import Callback
from bot.queue.inbox import Entry, Inbox
from bot.queue.kfsync import KfSync
from bot.records import later
from bot.records.store import Store
from bot.wecom import WeComConfigError, WeComRateLimited
from handlers.messages import KfMessage

log = logging.getLogger("bot.queue.worker")


@dataclass(frozen=True, slots=True)
class Parts:
    """What the entry kinds act through; bot.runtime builds it for each worker."""

    store: Store
    kfsync: KfSync
    pipeline: Pipeline
    staff: Staff
    executor: Executor
    touches: TouchRunner | None


# --- callbacks, by the kind bot/web/envelope.py gave them -----------------------------------------

def on_kf_notice(p: Parts, f: Mapping[str, str]) -> str:
    """kf_msg_or_event: pull the account's new messages (each becomes a "kf_msg" entry), or, when a pull of
    the account is running, leave this notice to it (one more round) and return at once."""
    try:  # when the webhook received it (our clock), else WeCom's CreateTime
        notice_at = float(f.get("ReceivedAt") or f.get("CreateTime") or 0) or time.time()
    except ValueError:
        notice_at = time.time()
    token = f.get("Token", "")
    done = p.kfsync.notice(f.get("OpenKfId", ""), token, notice_at, f"{token}:{f.get('CreateTime', '')}")
    return f"queued={done.queued} rounds={done.rounds}" if done.outcome == "pulled" else done.outcome


def on_card_click(p: Parts, f: Mapping[str, str]) -> str:
    """A staff member tapped a button on an alert card."""
    return p.staff.click(f.get("FromUserName", ""), f.get("EventKey", ""), f.get("ResponseCode", ""))


def on_app_message(p: Parts, f: Mapping[str, str]) -> str | None:
    """A staff member typed to the app: a command (我的, 接待 ID, 结束 ID)."""
    return p.staff.command(f.get("FromUserName", ""), f.get("Content", "")) if f.get("MsgType") == "text" else None


def on_contact_change(p: Parts, f: Mapping[str, str]) -> None:
    """change_external_contact: a staff member added (welcome code) or lost a customer."""
    p.executor.contact_changed(dict(f))


CALLBACKS: Mapping[str, Callable[[Parts, Mapping[str, str]], str | None]] = {
    "kf_notice": on_kf_notice,
    "card_event": on_card_click,
    "app_message": on_app_message,
    "contact_change": on_contact_change,
    # "event": any other event is only recorded
}


# --- inbox entries, by kind ------------------------------------------------------------------------

def on_callback(p: Parts, data: str) -> str | None:
    """A callback the webhook queued: recorded (but the kf notice), then by its kind."""
    callback = Callback.from_json(data)
    if callback.kind != "kf_notice":
        p.store.record(f"callback_{callback.kind}", **callback.fields)
    handle = CALLBACKS.get(callback.kind)
    return handle(p, callback.fields) if handle else None


def on_kf_msg(p: Parts, data: str) -> str:
    """One message pulled with sync_msg: through the pipeline (classify, route, act)."""
    return f"route={p.pipeline.process(KfMessage.from_json(data))}"


def on_touch(p: Parts, data: str) -> str:
    """An SOP touch the engine emitted."""
    if p.touches is None:
        raise ValueError("a touch entry, but no journeys are configured (content.journeys)")
    touch = json.loads(data)
    return p.touches.run(touch, f"touch:{touch['touch_id']}")


def on_robot_summary(p: Parts, data: str) -> str:
    """The team robot's summary of the handoffs that waited for a free minute."""
    return f"named={p.staff.robot_summary()}"


def on_escalate(p: Parts, data: str) -> str:
    """One rung of the SLA ladder, queued by the scheduler."""
    rung = json.loads(data)
    return f"to={p.staff.escalate(rung['id'], int(rung['level']))}"


def on_wake(p: Parts, data: str) -> str:
    """An off-hours handoff whose working hours began, queued by the scheduler."""
    return f"to={p.staff.wake(json.loads(data)['id'])}"


KINDS: Mapping[str, Callable[[Parts, str], str | None]] = {
    "callback": on_callback,
    "kf_msg": on_kf_msg,
    "touch": on_touch,
    "escalate": on_escalate,
    "robot_summary": on_robot_summary,
    "wake": on_wake,
}


BEAT_EVERY = 1.0  # seconds between a worker's heartbeats


class Worker:
    """One consumer of the inbox."""

    def __init__(self, inbox: Inbox, parts: Parts, settings: WorkerSettings, name: str | None = None) -> None:
        self.inbox = inbox
        self.parts = parts
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._last_claim = 0.0
        self._current: str | None = None  # the entry in hand, whose lease the renewer extends
        self._renewer: threading.Thread | None = None

    def run_once(self, block_ms: int | None = None) -> int:
        """Process what is available now (reclaimed entries first); returns how many entries."""
        entries: list[Entry] = []
        if time.monotonic() - self._last_claim >= min(5.0, self.settings.claim_idle_seconds):
            self._last_claim = time.monotonic()
            entries += self.inbox.reclaim(self.name, int(self.settings.claim_idle_seconds * 1000),
                                          self.settings.batch)
        entries += self.inbox.read(self.name, self.settings.batch, None if not block_ms else block_ms)
        for entry in entries:
            self.handle(entry)
        return len(entries)

    def run_forever(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; rides out Redis outages."""
        log.info("worker %s started", self.name)
        beat = pause = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - beat >= BEAT_EVERY:  # the heartbeat's TTL is far longer
                    heartbeat_worker(self.inbox.r, self.name)
                    beat = time.monotonic()
                if not self.run_once(block_ms=self.settings.block_ms):
                    stop.wait(0.01)
                pause = 0.0
            except redis.RedisError as exc:  # down, or failing over: back off 0.25 s, 0.5 s, ... 4 s
                pause = min(4.0, pause * 2 or 0.25)
                log.warning("worker %s: Redis unavailable (%s); retrying in %.2f s", self.name, exc, pause)
                stop.wait(pause)
        log.info("worker %s stopped", self.name)

    def handle(self, entry: Entry) -> None:
        """Process one entry; failures stay pending for a retry, then go to the dead-letter stream.

        The in-flight lease lasts `claim_idle_seconds` and is renewed while this worker is on the entry,
        so a dead worker's entry is taken over within claim_idle_seconds plus one poll, and a slow one
        is never run twice at once."""
        lease = self.settings.claim_idle_seconds
        attempts = self.inbox.begin(entry.id, self.name, lease)
        if not attempts:
            return  # another worker is still on it (it took the entry over while this one was busy)
        self._current = entry.id
        self._start_renewer(lease)
        finished = False
        try:
            with later.gathering(self.inbox.r):  # the entry's deferred writes go with its acknowledgement
                finished = self._handle(entry, attempts)
        finally:
            self._current = None
            if not finished:
                self.inbox.end(entry.id, self.name)

    def _start_renewer(self, lease: float) -> None:
        """One thread per worker renews the lease of the entry in hand every third of the lease."""
        if self._renewer is not None and self._renewer.is_alive():
            return

        def renew() -> None:
            while True:
                time.sleep(lease / 3)
                current = self._current
                if current is None:
                    return  # nothing in hand: the next entry starts a new renewer
                try:
                    self.inbox.renew(current, self.name, lease)
                except redis.RedisError:
                    pass  # the entry may be taken over; its done marks keep every action once

        self._renewer = threading.Thread(target=renew, daemon=True, name=f"lease-{self.name}")
        self._renewer.start()

    def _handle(self, entry: Entry, attempts: int) -> bool:
        """Perform the entry's `attempts`-th attempt; True when it is done and its lease given back."""
        started = time.perf_counter()
        finished = False
        outcome, detail = "ok", ""
        if attempts > self.settings.max_attempts:
            self.inbox.dead_letter(entry)
            outcome = "dead"
        else:
            try:
                with steps.entry(final=attempts >= self.settings.max_attempts):
                    detail = self.dispatch(entry) or ""
                self.inbox.finish(entry.id, self.name)
                finished = True
            except redis.RedisError:
                raise
            except WeComConfigError as exc:
                # Not this entry's fault: keep it (attempt not counted) until an operator fixes the config.
                self.inbox.not_attempted(entry.id)
                self.inbox.fail(entry.id, str(exc))
                outcome, detail = "config_error", str(exc)
                time.sleep(1.0)
            except WeComRateLimited as exc:
                # WeCom said "not now" (45009): the entry waits for its retry without burning an attempt.
                self.inbox.not_attempted(entry.id)
                self.inbox.fail(entry.id, str(exc))
                outcome, detail = "rate_limited", str(exc)
            except Exception as exc:  # any failure of one entry must not stop the worker
                detail = f"{exc.__class__.__name__}: {exc}"
                self.inbox.fail(entry.id, detail)
                outcome = "retry"
                if attempts >= self.settings.max_attempts:
                    self.inbox.dead_letter(entry, detail)
                    outcome = "dead"
        elapsed = time.perf_counter() - started
        observe_processing(entry.kind, outcome, elapsed)
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(level, "entry %s kind=%s outcome=%s attempt=%d %.1fms %s", entry.id, entry.kind, outcome,
                attempts, elapsed * 1000, detail)
        return finished

    def dispatch(self, entry: Entry) -> str | None:
        """Perform an entry by its kind (the KINDS table); returns a short note for the log line."""
        handle = KINDS.get(entry.kind)
        if handle is None:
            raise ValueError(f"unknown inbox entry kind {entry.kind!r}")
        return handle(self.parts, entry.data)
