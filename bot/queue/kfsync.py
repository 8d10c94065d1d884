"""The kf pull: every new message of a kf account into the inbox with kf/sync_msg, cursor saved after;
notices that arrive while an account is being pulled are coalesced into one more round of that pull."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.queue.inbox import KF_MSGID_TTL, Inbox, Item
from bot.records import later
from bot.records.store import RENEW, DeleteIf, Store, _kf
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


# Coalesced pulls: at most one pull per kf account running (or, by a dirty mark, pending) at a time. Keys
# in the account's hash-tag slot: `pull` is a hash {gen: notices counted, done: the gen the last finished
# round covered, token: the newest callback Token, notice_at: the newest notice not yet taken by a round,
# covered: when the last call of the latest finished round was sent}, `puller` names the pull running
# (with a TTL renewed per page), `notice:<Token>` marks a Token seen.
# A notice is skipped when its Token was seen ("duplicate") or when a round that finished later had sent its
# last call COVER_MARGIN seconds after the notice's CreateTime ("covered": that round read its messages).
NOTICE = """
local state = KEYS[1]
local skip = ''
if ARGV[3] ~= '' and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then skip = 'duplicate' end
if skip == '' and ARGV[4] ~= '' and
   tonumber(ARGV[4]) + tonumber(ARGV[6]) <= tonumber(redis.call('HGET', state, 'covered') or '0') then
  skip = 'covered'
end
if skip == '' then
  redis.call('HINCRBY', state, 'gen', 1)
  if ARGV[3] ~= '' then redis.call('HSET', state, 'token', ARGV[3]) end
  if ARGV[4] ~= '' and tonumber(ARGV[4]) > tonumber(redis.call('HGET', state, 'notice_at') or '0') then
    redis.call('HSET', state, 'notice_at', ARGV[4])
  end
end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 'pull'
end
if holder then
  if skip ~= '' then return skip end
  return 'coalesced'
end
if skip ~= '' and tonumber(redis.call('HGET', state, 'gen') or '0') <= tonumber(redis.call('HGET', state, 'done') or '0') then
  return skip
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 'pull'
"""
# a round begins: what it covers (gen), the newest notice it answers (taken), the newest Token, and where
# the pull stands (the saved cursor, a first pull's backlog cut-off)
ROUND = """
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
local notice_at = redis.call('HGET', KEYS[1], 'notice_at') or ''
redis.call('HDEL', KEYS[1], 'notice_at')
return {gen, notice_at, redis.call('HGET', KEYS[1], 'token') or '', redis.call('GET', KEYS[2]) or '',
        redis.call('GET', KEYS[3]) or ''}
"""
# a round reached the end (its last page queued): save the cursor, end a first pull's backlog cut-off and,
# when it found messages (ARGV[6] ~= ''), the empty streak; then release unless a notice came since it began
# (then one more round). Returns {gen of that round or 0, -1: not ours; 1 when a stall report is to be cleared}.
FINISH = """
redis.call('SET', KEYS[3], ARGV[5])
redis.call('DEL', KEYS[4])
local stalled = 0
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[5], ARGV[6], 'EX', 2592000)
  if tonumber(redis.call('HGET', KEYS[1], 'empty') or '0') >= tonumber(ARGV[7]) then stalled = 1 end
  redis.call('HDEL', KEYS[1], 'empty')
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1, stalled} end
if tonumber(ARGV[4]) > tonumber(redis.call('HGET', KEYS[1], 'covered') or '0') then
  redis.call('HSET', KEYS[1], 'covered', ARGV[4])
end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if gen > tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {gen, stalled}
end
redis.call('HSET', KEYS[1], 'done', ARGV[2])
redis.call('DEL', KEYS[2])
return {0, stalled}
"""
PULLER_TTL = 10.0  # seconds; renewed after every page, so a crashed puller frees the account soon
TOKEN_SEEN_TTL = 600  # a callback Token is valid 10 minutes: a notice with a Token seen before is a repeat
# CreateTime is whole seconds of WeCom's clock: a notice is covered by a finished round only when that round's
# last call went out this much later by our clock (one second of rounding, the rest for clock skew)
COVER_MARGIN = 6.0


@dataclass(frozen=True, slots=True)
class Pulled:
    """What a notice did: "pulled" (`rounds` rounds of sync_msg paging), "coalesced" (a pull was running: it
    will do one more round for this notice), "duplicate" (this Token was seen) or "covered" (a finished round
    sent its last call well after the notice's CreateTime): the last two only while nothing is pending."""

    outcome: str
    queued: int = 0
    rounds: int = 0


class KfSync:
    """Pulls kf accounts; at most one pull per account running at a time, the notices that arrive meanwhile
    coalesced into one more round of it."""

    def __init__(self, store: Store, inbox: Inbox, wecom: WeCom, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.inbox = inbox
        self.wecom = wecom
        self.clock = clock
        r = store.r
        self._notice, self._round = r.register_script(NOTICE), r.register_script(ROUND)
        self._finish, self._renew = r.register_script(FINISH), r.register_script(RENEW)
        self._abandon = DeleteIf(r)

    def pull(self, open_kfid: str, token: str, notice_at: float | None = None) -> int:
        """Queue every new message of `open_kfid` as a "kf_msg" entry; returns how many were new (0 when
        a pull already running takes this request over).
        `notice_at`: the CreateTime of the kf_msg_or_event notice that asked for this pull (None: a sweep)."""
        return self.notice(open_kfid, token, notice_at).queued

    def notice(self, open_kfid: str, token: str, notice_at: float | None = None,
               notice_id: str = "") -> Pulled:
        """A kf_msg_or_event notice (or a sweep): pull now, or leave it to the pull running.
        `notice_id` names the notice (its Token and CreateTime): the same notice retried after its worker
        died takes its own pull over at once instead of waiting for the dead puller's TTL."""
        self.store.add_kf_account(open_kfid)
        state, puller = _kf(open_kfid, "pull"), _kf(open_kfid, "puller")
        owner = f"n:{notice_id}" if notice_id else f"p:{secrets.token_hex(8)}"
        ttl = int(PULLER_TTL * 1000)
        outcome = self._notice(keys=[state, puller, _kf(open_kfid, f"notice:{token}")],
                               args=[owner, ttl, token, "" if notice_at is None else repr(float(notice_at)),
                                     TOKEN_SEEN_TTL, COVER_MARGIN])
        if outcome != "pull":
            self.store.count(f"kf_notices_{outcome}")
            return Pulled(str(outcome))
        queued = rounds = 0
        cursor_key, backlog_key = _kf(open_kfid, "cursor"), _kf(open_kfid, "backlog_before")
        try:
            while True:
                gen, taken, newest, cursor, backlog = self._round(keys=[state, cursor_key, backlog_key])
                rounds += 1
                n, last_call, cursor = self._pull_round(
                    open_kfid, newest or token, float(taken) if taken else None, cursor, float(backlog or 0),
                    lambda: self._renew(keys=[puller], args=[owner, ttl]))
                queued += n
                more, stalled = self._finish(
                    keys=[state, puller, cursor_key, backlog_key, _kf(open_kfid, "found_at")],
                    args=[owner, int(gen), ttl, repr(last_call), cursor, repr(time.time()) if n else "",
                          EMPTY_NOTICES_WARN])
                if stalled:
                    self.store.kf_clear_stalled(open_kfid)
                if more <= 0:
                    break  # clean (or the account was taken over after our TTL ran out)
        except BaseException:
            # free the account; this round's gen stays above done, so the retry (or the next notice) pulls
            self._abandon(puller, owner)
            raise
        with later.gathering(self.store.r):  # both counters in one round trip (or the entry's next one)
            self.store.count("kf_messages_queued", queued)
            self.store.count("kf_pulls", rounds)
        return Pulled("pulled", queued, rounds)

    def _pull_round(self, open_kfid: str, token: str, notice_at: float | None, cursor: str,
                    backlog_before: float, renew: Callable[[], Any]) -> tuple[int, float, str]:
        """One round: page sync_msg from `cursor` until has_more is 0; returns how many were new, when its last
        call was sent and the last page's cursor (saved by FINISH, after the page is queued).
        `notice_at`: the newest notice this round answers (None: none, e.g. a sweep)."""
        queued = 0
        # First pull of an account: sync_msg returns up to 3 days of history; answer only what is
        # recent. The cut-off is kept until that pull reaches the end, across retries.
        if not cursor:
            backlog_before = self.store.backlog_before(open_kfid, self.clock() - BACKLOG_SECONDS)
        while True:
            last_call = time.time()  # compared with notice times: the webhook's clock, not WeCom's or a test's
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
                                               ensure_ascii=False), f"kfmsg:{m['msgid']}", _customer_of(m))
                     for m in batch.messages if isinstance(m, dict) and m.get("msgid")]
            queued += self.inbox.put_many(items, KF_MSGID_TTL)
            cursor = batch.next_cursor or cursor
            if not batch.has_more:  # the last page's cursor is saved by FINISH, after the page is queued
                break
            self.store.save_cursor(open_kfid, cursor)  # the cursor only after the page is safely queued
            renew()
        if not queued and notice_at is not None:
            self._empty_after_notice(open_kfid, notice_at, cursor)
        return queued, last_call, cursor

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


def _customer_of(m: dict[str, Any]) -> str:
    """Whose message or event (an event's customer is inside it): one inbox shard per customer keeps order."""
    event = m.get("event")
    inner = event.get("external_userid") if isinstance(event, dict) else None
    return str(m.get("external_userid") or inner or "")
