"""Small Redis-backed state: kf cursors, per-kf locks, done marks, counters and the event record."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from bot.records import later

EVENTS = "wecom:events"  # append-only record of what happened, capped
EVENTS_MAXLEN = 200_000
COUNTERS = "wecom:counters"
DONE_TTL = 7 * 86400

# KEYS: a key. ARGV: the value it must still hold. The one compare-and-delete of the bot.
DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


KF_KNOWN = "wecom:kf:known"  # every kf account seen
KNOWN_EVERY = 60.0
KF_STALLED = "wecom:kf:stalled"  # open_kfid -> JSON {empty_notices, since, cursor} while a streak is long
KF_STALLS = "wecom:kf:stalls"  # open_kfid -> how many times a streak became long (a Prometheus counter)


def done_key(key: str) -> str:
    """The done mark of an action or step key (its own slot)."""
    return f"wecom:done:{{{key}}}"


def _kf(open_kfid: str, what: str) -> str:
    """A key of one kf account (its own hash-tag slot)."""
    return f"wecom:kf:{{{open_kfid}}}:{what}"


class DeleteIf:
    """Delete a key only while it holds a given value (a lock, lease or pointer that is still ours)."""

    def __init__(self, r: redis.Redis) -> None:
        self._script = r.register_script(DELETE_IF)

    def __call__(self, key: str, value: str) -> bool:
        return bool(self._script(keys=[key], args=[value]))


class LockBusy(Exception):
    """Another process holds the lock."""


class Store:
    """State shared by all processes."""

    def __init__(self, r: redis.Redis):
        self.r = r
        self._known: dict[str, float] = {}  # kf account -> when this process last wrote it to KF_KNOWN
        self._release = DeleteIf(r)
        self._renew = r.register_script(RENEW)

    # kf pulling
    def cursor(self, open_kfid: str) -> str:
        """Last saved sync_msg cursor of a kf account ('' = from the oldest retained message)."""
        return self.r.get(_kf(open_kfid, "cursor")) or ""

    def save_cursor(self, open_kfid: str, cursor: str) -> None:
        self.r.set(_kf(open_kfid, "cursor"), cursor)

    def add_kf_account(self, open_kfid: str) -> None:
        """Remember a kf account, so the scheduler pulls it even when its callbacks are lost (written at most
        once a minute per process: the set only ever grows)."""
        if time.monotonic() - self._known.get(open_kfid, -KNOWN_EVERY) >= KNOWN_EVERY:
            self.r.sadd(KF_KNOWN, open_kfid)
            self._known[open_kfid] = time.monotonic()

    def kf_accounts(self) -> list[str]:
        """Every kf account seen so far."""
        return sorted(self.r.smembers(KF_KNOWN))

    def kf_found_at(self, open_kfid: str) -> float:
        """When the last pull that queued messages began (0: none recorded)."""
        return float(self.r.get(_kf(open_kfid, "found_at")) or 0)

    def kf_empty_notice(self, open_kfid: str) -> int:
        """One more notice whose pull queued nothing; returns the streak's length (a pull that finds messages
        ends it: bot/queue/kfsync.py FINISH)."""
        return int(self.r.hincrby(_kf(open_kfid, "pull"), "empty", 1))

    def kf_empty_streak(self, open_kfid: str) -> int:
        """Notices in a row whose pull queued nothing."""
        return int(self.r.hget(_kf(open_kfid, "pull"), "empty") or 0)

    def kf_clear_stalled(self, open_kfid: str) -> None:
        """A pull found messages again: the account is no longer reported as stalled."""
        self.r.hdel(KF_STALLED, open_kfid)

    def kf_mark_stalled(self, open_kfid: str, empty_notices: int, cursor: str, at: float, first: bool) -> None:
        """Flag the account as stalled (shown by /readyz and doctor); `first` counts one more stall."""
        since = (json.loads(self.r.hget(KF_STALLED, open_kfid) or "{}")).get("since", at)
        self.r.hset(KF_STALLED, open_kfid, json.dumps({"empty_notices": empty_notices, "since": since,
                                                       "cursor": cursor}))
        if first:
            self.r.hincrby(KF_STALLS, open_kfid, 1)

    def kf_stalled(self) -> dict[str, dict[str, Any]]:
        """Accounts whose last notices in a row pulled nothing: open_kfid -> {empty_notices, since, cursor}."""
        return {k: json.loads(v) for k, v in sorted(self.r.hgetall(KF_STALLED).items())}

    def kf_stalls(self) -> dict[str, int]:
        """open_kfid -> how many times its notices stopped bringing messages."""
        return {k: int(v) for k, v in sorted(self.r.hgetall(KF_STALLS).items())}

    def backlog_before(self, open_kfid: str, default: float) -> float:
        """The cut-off of an account's first pull (older messages are not answered): set to `default` once,
        kept across retries until pulled_to_end() says the first pull reached the end."""
        key = _kf(open_kfid, "backlog_before")
        self.r.set(key, default, nx=True, ex=86400)
        return float(self.r.get(key) or 0)

    @contextmanager
    def lock(self, name: str, ttl: float = 10.0, wait: float = 15.0) -> Iterator[Callable[[], None]]:
        """Hold `name` exclusively across processes; yields `renew()`; raises LockBusy after `wait` s.

        The TTL is short so that a lock orphaned by a crash (or a Redis restart) frees itself soon;
        long holders call renew() as they make progress."""
        key, token = f"wecom:lock:{{{name}}}", secrets.token_hex(8)
        deadline = time.monotonic() + wait
        while not self.r.set(key, token, nx=True, px=int(ttl * 1000)):
            if time.monotonic() > deadline:
                raise LockBusy(name)
            time.sleep(0.05)
        try:
            yield lambda: self._renew(keys=[key], args=[token, int(ttl * 1000)])
        finally:
            self._release(key, token)

    # idempotent actions
    def is_done(self, key: str) -> bool:
        return later.get(self.r, done_key(key)) is not None

    def done_value(self, key: str) -> str | None:
        """What mark_done stored for `key` (None when not done)."""
        return later.get(self.r, done_key(key))

    def done_values(self, keys: list[str]) -> list[str | None]:
        """done_value of each key, in one round trip (none for keys read ahead)."""
        return later.values(self.r, [done_key(k) for k in keys])

    def mark_done(self, key: str, result: str = "1") -> None:
        """Mark `key` done now (after a WeCom side effect); the writes deferred meanwhile (bot/records/later.py) go
        in the same round trip."""
        later.flush(self.r, lambda p: p.set(done_key(key), result, ex=DONE_TTL))
        later.know(self.r, done_key(key), result)

    def mark_done_later(self, key: str, result: str = "1") -> None:
        """Mark `key` done with the entry's next round trip: for an action whose own WeCom steps are marked at once
        (a crash before the flush repeats only what is idempotent)."""
        later.write(self.r, lambda p: p.set(done_key(key), result, ex=DONE_TTL))
        later.know(self.r, done_key(key), result)

    def once(self, key: str, step: Callable[[], Any]) -> None:
        """Run `step` unless `key` is done; mark it done after it succeeded."""
        if not self.is_done(key):
            step()
            self.mark_done(key)

    # numbers and history
    def count(self, name: str, n: int = 1) -> None:
        later.write(self.r, lambda p: p.hincrby(COUNTERS, name, n))

    def counters(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(COUNTERS).items()}

    def record(self, kind: str, **data: Any) -> None:
        """Append an event (e.g. message_in, reply_sent, staff_reply) to the capped history."""
        fields = {"kind": kind, "at": f"{time.time():.3f}", "data": json.dumps(data, ensure_ascii=False, default=str)}
        later.write(self.r, lambda p: p.xadd(EVENTS, fields, maxlen=EVENTS_MAXLEN, approximate=True))

    def events(self, count: int = 100) -> list[dict[str, Any]]:
        """Newest events first."""
        return [{"id": eid, "kind": f["kind"], "at": float(f["at"]), **json.loads(f["data"])}
                for eid, f in self.r.xrevrange(EVENTS, count=count)]
