"""The kf pull: every new message of a kf account into the inbox with kf/sync_msg, cursor saved after."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.queue.inbox import KF_MSGID_TTL, Inbox, Item
from bot.records.store import Store
from bot.wecom import WeCom, WeComError

INVALID_SYNC_TOKEN = 95007  # the callback Token expired (valid 10 minutes)
BACKLOG_SECONDS = 1800  # on an account's first pull, older messages are recorded, not answered
# kf_msg_or_event notices in a row, each newer than the last pull that found messages, whose pull queued
# nothing: the cursor is probably past what WeCom holds (or another bot reads the account)
EMPTY_NOTICES_WARN = 3

log = logging.getLogger("bot.queue.kfsync")


def _older(item: dict[str, Any], before: float) -> bool:
    """A sync_msg item sent before `before` (0 = no limit)."""
    try:
        return bool(before) and float(item.get("send_time") or 0) < before
    except (TypeError, ValueError):
        return False


def stall_reports(store: Store) -> list[tuple[str, str]]:
    """(what, fix) for each kf account whose last notices in a row pulled nothing (for `doctor`)."""
    out = []
    for kfid, s in store.kf_stalled().items():
        since = datetime.fromtimestamp(float(s.get("since") or 0)).astimezone()
        out.append((f"kf {kfid}: the last {s.get('empty_notices')} kf_msg_or_event notices pulled nothing new "
                    f"(since {since:%Y-%m-%d %H:%M:%S}, cursor {s.get('cursor')!r}): customers may wait unanswered",
                    "check that no other app reads this kf account with sync_msg; if the cursor is past what "
                    f"WeCom holds, delete it (redis-cli DEL 'wecom:kf:{{{kfid}}}:cursor'): the next pull re-reads "
                    "3 days, answers only the last 30 minutes and never a message twice"))
    return out


class KfSync:
    """Pulls kf accounts; one puller per account at a time (a lock in Redis)."""

    def __init__(self, store: Store, inbox: Inbox, wecom: WeCom, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.inbox = inbox
        self.wecom = wecom
        self.clock = clock

    def pull(self, open_kfid: str, token: str, notice_at: float | None = None) -> int:
        """Queue every new message of `open_kfid` as a "kf_msg" entry; returns how many were new.
        `notice_at`: the CreateTime of the kf_msg_or_event notice that asked for this pull (None: a sweep)."""
        queued = 0
        self.store.add_kf_account(open_kfid)
        with self.store.lock(f"kf:{open_kfid}") as renew:
            started = self.clock()
            cursor = self.store.cursor(open_kfid)
            # First pull of an account: sync_msg returns up to 3 days of history; answer only what is
            # recent. The cut-off is kept until that pull reaches the end, across retries.
            if cursor:
                backlog_before = self.store.current_backlog(open_kfid)
            else:
                backlog_before = self.store.backlog_before(open_kfid, self.clock() - BACKLOG_SECONDS)
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
                    self.store.clear_backlog(open_kfid)
                    break
            if queued:
                self.store.kf_pull_found(open_kfid, started)
            elif notice_at is not None:
                self._empty_after_notice(open_kfid, notice_at, cursor)
        self.store.count("kf_messages_queued", queued)
        return queued

    def _empty_after_notice(self, open_kfid: str, notice_at: float, cursor: str) -> None:
        """A notice brought nothing. One is normal (an earlier pull took its messages); a streak of notices
        newer than the last pull that found messages is not."""
        if notice_at <= self.store.kf_found_at(open_kfid):
            return
        n = self.store.kf_empty_notice(open_kfid)
        if n < EMPTY_NOTICES_WARN:
            return
        self.store.kf_mark_stalled(open_kfid, n, cursor, self.clock(), first=n == EMPTY_NOTICES_WARN)
        log.warning("kf %s: %d kf_msg_or_event notices in a row pulled nothing new (cursor %r): customers may "
                    "be waiting unanswered; is the cursor past what WeCom holds, or does another app read this "
                    "account? (wecom-bot doctor)", open_kfid, n, cursor)
