"""The kf pull: every new message of a kf account into the inbox with kf/sync_msg, cursor saved after."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bot.queue.inbox import KF_MSGID_TTL, Inbox, Item
from bot.records.store import Store
from bot.wecom import WeCom, WeComError

INVALID_SYNC_TOKEN = 95007  # the callback Token expired (valid 10 minutes)
BACKLOG_SECONDS = 1800  # on an account's first pull, older messages are recorded, not answered


def _older(item: dict[str, Any], before: float) -> bool:
    """A sync_msg item sent before `before` (0 = no limit)."""
    try:
        return bool(before) and float(item.get("send_time") or 0) < before
    except (TypeError, ValueError):
        return False


class KfSync:
    """Pulls kf accounts; one puller per account at a time (a lock in Redis)."""

    def __init__(self, store: Store, inbox: Inbox, wecom: WeCom, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.inbox = inbox
        self.wecom = wecom
        self.clock = clock

    def pull(self, open_kfid: str, token: str) -> int:
        """Queue every new message of `open_kfid` as a "kf_msg" entry; returns how many were new."""
        queued = 0
        self.store.add_kf_account(open_kfid)
        with self.store.lock(f"kf:{open_kfid}") as renew:
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
        self.store.count("kf_messages_queued", queued)
        return queued
