"""The durable inbox: a Redis Stream with a consumer group, dedupe on entry, a dead-letter stream."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from bot.records.store import RENEW, DeleteIf

# One hash tag for everything a single script or transaction touches (Redis Cluster).
STREAM = "wecom:{inbox}:stream"
DLQ = "wecom:{inbox}:dlq"
ATTEMPTS = "wecom:{inbox}:attempts"
ERRORS = "wecom:{inbox}:errors"
SEEN = "wecom:{inbox}:seen:"
BUSY = "wecom:{inbox}:busy:"
GROUP = "workers"

ENVELOPE_TTL = 3600  # covers WeCom's callback retries
KF_MSGID_TTL = 4 * 86400  # sync_msg keeps 3 days; a reset cursor must not replay them

PUT_MANY = """
local added = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'kind', ARGV[2*i-2], 'data', ARGV[2*i-1])
    added = added + 1
  end
end
return added
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One inbox entry: `kind` says how to read `data`."""

    id: str
    kind: str
    data: str


@dataclass(frozen=True, slots=True)
class Item:
    """Something to enqueue once, identified by `key`."""

    kind: str
    data: str
    key: str


def _entries(raw: Iterable) -> list[Entry]:
    return [Entry(eid, f.get("kind", ""), f.get("data", "")) for eid, f in raw if f]


class Inbox:
    """Producer and consumer side of the stream."""

    def __init__(self, r: redis.Redis):
        self.r = r
        self._put_many = r.register_script(PUT_MANY)
        self._release = DeleteIf(r)
        self._renew = r.register_script(RENEW)
        self._group_ready = False

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        if self._group_ready:
            return
        try:
            self.r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def put(self, item: Item, ttl: int = ENVELOPE_TTL) -> bool:
        """Append unless `item.key` was seen within `ttl`; False for a duplicate."""
        return self.put_many([item], ttl) == 1

    def put_many(self, items: list[Item], ttl: int) -> int:
        """Append each unseen item atomically with its dedupe mark; returns how many were new."""
        if not items:
            return 0
        keys = [STREAM, *(SEEN + it.key for it in items)]
        args: list[str | int] = [ttl]
        for it in items:
            args += [it.kind, it.data]
        return int(self._put_many(keys=keys, args=args))

    def emit_touches(self, entries: list[tuple[str, str]], ttl: int) -> int:
        """The SOP engine's `emit`: each (key, JSON) pair becomes a "touch" entry, deduplicated on its key."""
        return self.put_many([Item("touch", data, key) for key, data in entries], ttl)

    def put_each(self, items: list[Item], ttl: int) -> list[int | Exception]:
        """Several independent puts in one round trip; per item 1 (new), 0 (duplicate) or the error."""
        results = self._evalsha_each(items, ttl)
        if any(isinstance(res, redis.exceptions.NoScriptError) for res in results):
            self.r.script_load(PUT_MANY)  # a restarted Redis forgot it; the refused items did not run
            again = iter(self._evalsha_each([it for it, res in zip(items, results, strict=True)
                                             if isinstance(res, redis.exceptions.NoScriptError)], ttl))
            results = [next(again) if isinstance(res, redis.exceptions.NoScriptError) else res for res in results]
        return results

    def _evalsha_each(self, items: list[Item], ttl: int) -> list[int | Exception]:
        # Plain EVALSHA in a pipeline: redis-py's pipelined Script objects add a SCRIPT EXISTS round trip.
        with self.r.pipeline(transaction=False) as p:
            for it in items:
                p.evalsha(self._put_many.sha, 2, STREAM, SEEN + it.key, ttl, it.kind, it.data)
            return p.execute(raise_on_error=False)

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer."""
        res = self._grouped(lambda: self.r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count, block=block_ms))
        return _entries(res[0][1]) if res else []

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer took but did not acknowledge within `min_idle_ms`."""
        res = self._grouped(lambda: self.r.xautoclaim(STREAM, GROUP, consumer, min_idle_time=min_idle_ms,
                                                      start_id="0-0", count=count))
        return _entries(res[1])

    def _grouped(self, call: Callable[[], Any]) -> Any:
        """Run a group command; if Redis came back without the group (NOGROUP), create it again."""
        self.ensure_group()
        try:
            return call()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            self.ensure_group()
            return call()

    def begin(self, entry_id: str, consumer: str, lease: float) -> bool:
        """Take the in-flight lease of an entry; False while another consumer holds it."""
        return bool(self.r.set(BUSY + entry_id, consumer, nx=True, px=int(lease * 1000)))

    def renew(self, entry_id: str, consumer: str, lease: float) -> bool:
        """Extend the in-flight lease while the entry is still being worked on (only if still ours)."""
        return bool(self._renew(keys=[BUSY + entry_id], args=[consumer, int(lease * 1000)]))

    def end(self, entry_id: str, consumer: str) -> None:
        """Give the lease back (only if still ours)."""
        self._release(BUSY + entry_id, consumer)

    def attempt(self, entry_id: str) -> int:
        """Count one more processing attempt of an entry."""
        return int(self.r.hincrby(ATTEMPTS, entry_id, 1))

    def not_attempted(self, entry_id: str) -> None:
        """Take back the attempt just counted (the failure was not the entry's fault)."""
        self.r.hincrby(ATTEMPTS, entry_id, -1)

    def fail(self, entry_id: str, error: str) -> None:
        """Remember why the last attempt failed."""
        self.r.hset(ERRORS, entry_id, error[:2000])

    def ack(self, entry_id: str) -> None:
        """Done: acknowledge, delete and forget its bookkeeping."""
        with self.r.pipeline(transaction=True) as p:
            p.xack(STREAM, GROUP, entry_id).xdel(STREAM, entry_id)
            p.hdel(ATTEMPTS, entry_id).hdel(ERRORS, entry_id)
            p.execute()

    def dead_letter(self, entry: Entry, error: str | None = None) -> None:
        """Move an entry that keeps failing to the dead-letter stream, with its last error."""
        error = error or self.r.hget(ERRORS, entry.id) or "unknown error"
        with self.r.pipeline(transaction=True) as p:
            p.xadd(DLQ, {"kind": entry.kind, "data": entry.data, "error": error, "entry": entry.id,
                         "at": str(int(time.time()))})
            p.xack(STREAM, GROUP, entry.id).xdel(STREAM, entry.id)
            p.hdel(ATTEMPTS, entry.id).hdel(ERRORS, entry.id)
            p.execute()

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """Oldest dead letters first, each with its id."""
        return [{"id": eid, **fields} for eid, fields in self.r.xrange(DLQ, count=count)]

    def replay(self, ids: list[str] | None = None) -> int:
        """Put dead letters (all, or those with `ids`) back into the inbox; returns how many."""
        letters = [d for d in self.dead_letters(count=100000) if not ids or d["id"] in ids]
        for d in letters:
            with self.r.pipeline(transaction=True) as p:
                p.xadd(STREAM, {"kind": d["kind"], "data": d["data"]}).xdel(DLQ, d["id"])
                p.execute()
        return len(letters)

    def depth(self) -> dict[str, int]:
        """Entries waiting, pending (taken, not acknowledged) and dead."""
        self.ensure_group()
        info = self.r.xinfo_groups(STREAM)
        group: dict[str, Any] = next((g for g in info if g["name"] == GROUP), {})
        return {"length": int(self.r.xlen(STREAM)), "pending": int(group.get("pending", 0)),
                "lag": int(group.get("lag") or 0), "dead": int(self.r.xlen(DLQ))}
