"""The worker: drains the inbox, pulls kf messages with sync_msg, hands them to the pipeline."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from bot.config import WorkerSettings
from bot.observe import heartbeat_worker, observe_processing
from bot.pipeline import Pipeline
from bot.queue.callback import Callback
from bot.queue.inbox import KF_MSGID_TTL, Entry, Inbox, Item
from bot.records.store import Store
from bot.wecom import WeCom, WeComConfigError, WeComError
from handlers.messages import KfMessage

log = logging.getLogger("bot.queue.worker")

INVALID_SYNC_TOKEN = 95007  # the callback Token expired (valid 10 minutes)
BACKLOG_SECONDS = 1800  # on an account's first pull, older messages are recorded, not answered


def _older(item: dict, before: float) -> bool:
    """A sync_msg item sent before `before` (0 = no limit)."""
    try:
        return bool(before) and float(item.get("send_time") or 0) < before
    except (TypeError, ValueError):
        return False


class Worker:
    """One consumer of the inbox."""

    def __init__(self, inbox: Inbox, store: Store, wecom: WeCom, pipeline: Pipeline,
                 settings: WorkerSettings, name: str | None = None, touches: Any = None,
                 clock: Callable[[], float] = time.time):
        self.inbox = inbox
        self.store = store
        self.wecom = wecom
        self.pipeline = pipeline
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._last_claim = 0.0
        self.touches = touches
        self.clock = clock

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
        while not stop.is_set():
            try:
                heartbeat_worker(self.store.r, self.name)
                if not self.run_once(block_ms=self.settings.block_ms):
                    stop.wait(0.01)
            except redis.RedisError as exc:
                log.warning("worker %s: Redis unavailable (%s); retrying", self.name, exc)
                stop.wait(1.0)
        log.info("worker %s stopped", self.name)

    def handle(self, entry: Entry) -> None:
        """Process one entry; failures stay pending for a retry, then go to the dead-letter stream."""
        lease = max(4 * self.settings.claim_idle_seconds, 2.0)
        if not self.inbox.begin(entry.id, self.name, lease):
            return  # another worker is still on it (it took the entry over while this one was busy)
        try:
            self._handle(entry)
        finally:
            self.inbox.end(entry.id, self.name)

    def _handle(self, entry: Entry) -> None:
        attempts = self.inbox.attempt(entry.id)
        started = time.perf_counter()
        outcome, detail = "ok", ""
        if attempts > self.settings.max_attempts:
            self.inbox.dead_letter(entry)
            outcome = "dead"
        else:
            try:
                detail = self.dispatch(entry) or ""
                self.inbox.ack(entry.id)
            except redis.RedisError:
                raise
            except WeComConfigError as exc:
                # Not this entry's fault: keep it (attempt not counted) until an operator fixes the config.
                self.inbox.not_attempted(entry.id)
                self.inbox.fail(entry.id, str(exc))
                outcome, detail = "config_error", str(exc)
                time.sleep(1.0)
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

    def dispatch(self, entry: Entry) -> str | None:
        """Route an entry by kind; returns a short note for the log line."""
        desk = self.pipeline.executor.desk
        if entry.kind == "callback":
            callback = Callback.from_json(entry.data)
            f = callback.fields
            if callback.kind == "kf_notice":
                return f"queued={self.sync(f.get('OpenKfId', ''), f.get('Token', ''))}"
            self.store.record(f"callback_{callback.kind}", **f)
            if callback.kind == "card_event" and desk:
                desk.click(f.get("FromUserName", ""), f.get("EventKey", ""), f.get("ResponseCode", ""))
            elif callback.kind == "app_message" and f.get("MsgType") == "text" and desk:
                desk.command(f.get("FromUserName", ""), f.get("Content", ""))
            elif callback.kind == "contact_change":
                self.pipeline.executor.contact_changed(f)
            return None
        elif entry.kind == "kf_msg":
            return f"route={self.pipeline.process(KfMessage.from_json(entry.data))}"
        elif entry.kind == "touch" and self.touches:
            data = json.loads(entry.data)
            return self.touches.run(data, f"touch:{data['touch_id']}")
        elif entry.kind == "escalate" and desk:
            data = json.loads(entry.data)
            return f"to={desk.escalate(data['id'], int(data['level']))}"
        elif entry.kind == "wake" and desk:
            return f"to={desk.wake(json.loads(entry.data)['id'])}"
        else:
            raise ValueError(f"unknown inbox entry kind {entry.kind!r}")

    def sync(self, open_kfid: str, token: str) -> int:
        """Pull every new message of a kf account into the inbox; one puller per account at a time."""
        queued = 0
        self.store.r.sadd("wecom:kf:known", open_kfid)
        with self.store.lock(f"kf:{open_kfid}") as renew:
            cursor = self.store.cursor(open_kfid)
            # First pull of an account: sync_msg returns up to 3 days of history; answer only what is
            # recent. The cut-off is kept until that pull reaches the end, across retries.
            cutoff_key = f"wecom:kf:{{{open_kfid}}}:backlog_before"
            if not cursor:
                self.store.r.set(cutoff_key, self.clock() - BACKLOG_SECONDS, nx=True, ex=86400)
            backlog_before = float(self.store.r.get(cutoff_key) or 0)
            while True:
                try:
                    batch = self.wecom.sync_kf(token, open_kfid, cursor)
                except WeComError as exc:
                    if exc.errcode != INVALID_SYNC_TOKEN or not token:
                        raise
                    token = ""  # pull without the expired token (slower, rate-limited)
                    continue
                # raw items: one odd message fails alone later (dead letter), not the whole page
                items = [Item("kf_msg", json.dumps({**m, "open_kfid": m.get("open_kfid") or open_kfid,
                                                    **({"backlog": True} if _older(m, backlog_before) else {})},
                                                   ensure_ascii=False), f"kfmsg:{m['msgid']}")
                         for m in batch.messages if isinstance(m, dict) and m.get("msgid")]
                queued += self.inbox.put_many(items, KF_MSGID_TTL)
                cursor = batch.next_cursor or cursor
                self.store.save_cursor(open_kfid, cursor)  # only after the page is safely queued
                renew()
                if not batch.has_more:
                    self.store.r.delete(cutoff_key)
                    break
        self.store.count("kf_messages_queued", queued)
        return queued
