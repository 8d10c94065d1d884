"""The durable inbox: a Redis Stream with a consumer group, dedupe on entry, a dead-letter stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis

from bot.records import later
from bot.records.store import RENEW, DeleteIf
from sop.shards import Shards, is_cluster

# The inbox is N shards, each one stream with its consumer group, dead letters and bookkeeping under one hash tag
# (one Redis Cluster slot): a script or transaction touches one shard only. Shard 0 keeps the names of the
# single-stream inbox. Entry ids of shard i > 0 read "i/<stream id>"; a customer's entries go to one shard.
GROUP = "workers"
SHARDS = "wecom:inbox:shards"  # the shard count in use, so that every process reads every shard


def _key(shard: int, name: str) -> str:
    """Key `name` of one shard: wecom:{inbox}:<name> for shard 0, wecom:{inbox:<i>}:<name> for the others."""
    return f"wecom:{{inbox}}:{name}" if shard == 0 else f"wecom:{{inbox:{shard}}}:{name}"


def stream_key(shard: int) -> str:
    """The stream of one shard."""
    return _key(shard, "stream")


STREAM = stream_key(0)

ENVELOPE_TTL = 3600  # covers WeCom's callback retries
KF_MSGID_TTL = 4 * 86400  # sync_msg keeps 3 days; a reset cursor must not replay them

# KEYS[1] the shard's stream, KEYS[2..] the dedupe marks; ARGV ttl, then kind and data per item.
# Returns one flag per item: 1 appended, 0 a duplicate.
PUT_MANY = """
local flags = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'kind', ARGV[2*i-2], 'data', ARGV[2*i-1])
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
return flags
"""


def entry_id(shard: int, raw: str) -> str:
    """The inbox-wide id of stream entry `raw` of `shard`."""
    return raw if shard == 0 else f"{shard}/{raw}"


def split_id(eid: str) -> tuple[int, str]:
    """(shard, stream id) of an inbox-wide entry id."""
    shard, sep, raw = eid.partition("/")
    return (int(shard), raw) if sep else (0, eid)


@dataclass(frozen=True, slots=True)
class Entry:
    """One inbox entry: `kind` says how to read `data`."""

    id: str
    kind: str
    data: str


@dataclass(frozen=True, slots=True)
class Item:
    """Something to enqueue once, identified by `key`; items of one `shard_key` (a customer, an account) keep
    their order (one shard); without one, `key` places it."""

    kind: str
    data: str
    key: str
    shard_key: str = ""


def _entries(shard: int, raw: Iterable) -> list[Entry]:
    return [Entry(entry_id(shard, eid), f.get("kind", ""), f.get("data", "")) for eid, f in raw if f]


# KEYS: the entry's lease, its shard's attempts hash. ARGV: consumer, lease ms, entry id. Take the lease and
# count the attempt together; 0 while another consumer holds the lease.
BEGIN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
"""

# KEYS: stream, attempts, errors, the entry's lease. ARGV: group, entry id, consumer. Acknowledge, delete,
# forget the bookkeeping, and give the lease back while it is still ours.
FINISH = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
return 1
"""


class Inbox:
    """Producer and consumer side of the shards."""

    def __init__(self, r: redis.Redis, shards: int = 0):
        self.r = r
        self._shards = Shards(r, SHARDS, shards)  # 0: what Redis records, else 1 (single server) or 16 (cluster)
        self._put_many = r.register_script(PUT_MANY)
        self._release = DeleteIf(r)
        self._renew = r.register_script(RENEW)
        self._begin = r.register_script(BEGIN)
        self._finish = r.register_script(FINISH)
        self._groups: set[int] = set()
        self._next = 0  # the shard a cluster read starts with (round robin)
        self._hot = 0  # the shard that last had entries: an idle cluster read waits on it
        self._cluster = is_cluster(r)

    @property
    def shards(self) -> int:
        """How many shards new entries spread over."""
        return self._shards.count

    def _all(self) -> range:
        """Every shard that may hold entries (a lowered count still drains the shards above it)."""
        return self._shards.all()

    def streams(self) -> list[str]:
        """The stream of every shard."""
        return [stream_key(i) for i in self._all()]

    def peek(self, count: int = 10000) -> list[Entry]:
        """What every shard holds now (read or not), for inspection."""
        return [e for shard in self._all() for e in _entries(shard, self.r.xrange(stream_key(shard), count=count))]

    def ensure_group(self, shard: int = 0) -> None:
        """Create a shard's consumer group (and its stream) if missing."""
        if shard in self._groups:
            return
        try:
            self.r.xgroup_create(stream_key(shard), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(shard)

    def put(self, item: Item, ttl: int = ENVELOPE_TTL) -> bool:
        """Append unless `item.key` was seen within `ttl`; False for a duplicate."""
        return self.put_many([item], ttl) == 1

    def put_many(self, items: list[Item], ttl: int) -> int:
        """Append each unseen item atomically with its dedupe mark; returns how many were new."""
        by_shard: dict[int, list[Item]] = {}
        for it in items:
            by_shard.setdefault(self._shard(it), []).append(it)
        return sum(sum(self._put_shard(shard, group, ttl)) for shard, group in by_shard.items())

    def _shard(self, item: Item) -> int:
        return self._shards.of(item.shard_key or item.key)

    def _put_shard(self, shard: int, items: list[Item], ttl: int) -> list[int]:
        """One script call: the items of one shard, each appended with its dedupe mark unless seen."""
        keys = [stream_key(shard), *(_key(shard, "seen:") + it.key for it in items)]
        args: list[str | int] = [ttl]
        for it in items:
            args += [it.kind, it.data]
        return [int(f) for f in self._put_many(keys=keys, args=args)]

    def emit_touches(self, entries: list[tuple[str, str]], ttl: int) -> int:
        """The SOP engine's `emit`: each (key, JSON) pair becomes a "touch" entry, deduplicated on its key, in
        its customer's shard."""
        return self.put_many([Item("touch", data, key, str(json.loads(data).get("customer", "")))
                              for key, data in entries], ttl)

    def put_each(self, items: list[Item], ttl: int) -> list[int | Exception]:
        """Independent puts, one script call per shard (pipelined on a single server); per item 1 (new),
        0 (duplicate) or the error of its shard's call."""
        by_shard: dict[int, list[int]] = {}
        for n, it in enumerate(items):
            by_shard.setdefault(self._shard(it), []).append(n)
        out: list[int | Exception] = [0] * len(items)
        for shard, flags in self._run_shards(by_shard, items, ttl).items():
            for i, n in enumerate(by_shard[shard]):
                out[n] = flags if isinstance(flags, Exception) else flags[i]
        return out

    def _run_shards(self, by_shard: dict[int, list[int]], items: list[Item],
                    ttl: int) -> dict[int, list[int] | Exception]:
        """Each shard's script call; a cluster runs them one by one (its pipelines refuse EVALSHA)."""
        if len(by_shard) == 1 or self._cluster:
            results: dict[int, list[int] | Exception] = {}
            for shard, ns in by_shard.items():
                try:
                    results[shard] = self._put_shard(shard, [items[n] for n in ns], ttl)
                except redis.ConnectionError:
                    raise
                except redis.RedisError as exc:
                    results[shard] = exc
            return results
        out: dict[int, list[int] | Exception] = {}
        todo = list(by_shard)
        for attempt in (1, 2):
            # Plain EVALSHA in a pipeline: redis-py's pipelined Script objects add a SCRIPT EXISTS round trip.
            with self.r.pipeline(transaction=False) as p:
                for shard in todo:
                    ns = by_shard[shard]
                    p.evalsha(self._put_many.sha, 1 + len(ns), stream_key(shard),
                              *(_key(shard, "seen:") + items[n].key for n in ns), ttl,
                              *(x for n in ns for x in (items[n].kind, items[n].data)))
                raw = p.execute(raise_on_error=False)
            refused = [shard for shard, res in zip(todo, raw, strict=True)
                       if attempt == 1 and isinstance(res, redis.exceptions.NoScriptError)]
            out.update({shard: res if isinstance(res, Exception) else [int(f) for f in res]
                        for shard, res in zip(todo, raw, strict=True) if shard not in refused})
            if not refused:
                break
            self.r.script_load(PUT_MANY)  # a restarted Redis forgot it; nothing of the refused calls ran
            todo = refused
        return out

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer, from every shard fairly: one XREADGROUP over all streams on a single
        server; on a cluster one shard after another from a rotating start, and when all are empty a short
        blocking read on the shard that last had entries."""
        shards = list(self._all())
        if not self._cluster or len(shards) == 1:
            streams = {stream_key(i): ">" for i in shards}
            res = self._grouped(shards, lambda: self.r.xreadgroup(GROUP, consumer, streams, count=count,
                                                                  block=block_ms))
            return [e for name, raw in res or [] for e in _entries(_shard_of_stream(name), raw)]
        start, self._next = self._next, (self._next + 1) % len(shards)
        out: list[Entry] = []
        for shard in shards[start:] + shards[:start]:
            if len(out) >= count:
                break
            res = self._grouped([shard], partial(self.r.xreadgroup, GROUP, consumer, {stream_key(shard): ">"},
                                                 count=count - len(out)))
            got = [e for _, raw in res or [] for e in _entries(shard, raw)]
            if got:
                out, self._hot = out + got, shard
        if not out and block_ms:
            hot = self._hot
            res = self._grouped([hot], partial(self.r.xreadgroup, GROUP, consumer, {stream_key(hot): ">"},
                                               count=count, block=min(block_ms, 100)))
            out = [e for _, raw in res or [] for e in _entries(hot, raw)]
        return out

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer took but did not acknowledge within `min_idle_ms`, from every shard."""
        out: list[Entry] = []
        for shard in self._all():
            if len(out) >= count:
                break
            res = self._grouped([shard], partial(self.r.xautoclaim, stream_key(shard), GROUP, consumer,
                                                 min_idle_time=min_idle_ms, start_id="0-0", count=count - len(out)))
            out += _entries(shard, res[1])
        return out

    def _grouped(self, shards: list[int], call: Callable[[], Any]) -> Any:
        """Run a group command; if Redis came back without a group (NOGROUP), create it again."""
        for shard in shards:
            self.ensure_group(shard)
        try:
            return call()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.clear()
            for shard in shards:
                self.ensure_group(shard)
            return call()

    def begin(self, eid: str, consumer: str, lease: float) -> int:
        """Take the in-flight lease of an entry and count one more attempt (one script): the attempt number,
        or 0 while another consumer holds the lease."""
        shard, raw = split_id(eid)
        return int(self._begin(keys=[_key(shard, "busy:") + raw, _key(shard, "attempts")],
                               args=[consumer, int(lease * 1000), raw]))

    def renew(self, eid: str, consumer: str, lease: float) -> bool:
        """Extend the in-flight lease while the entry is still being worked on (only if still ours)."""
        shard, raw = split_id(eid)
        return bool(self._renew(keys=[_key(shard, "busy:") + raw], args=[consumer, int(lease * 1000)]))

    def end(self, eid: str, consumer: str) -> None:
        """Give the lease back (only if still ours)."""
        shard, raw = split_id(eid)
        self._release(_key(shard, "busy:") + raw, consumer)

    def not_attempted(self, eid: str) -> None:
        """Take back the attempt just counted (the failure was not the entry's fault)."""
        shard, raw = split_id(eid)
        self.r.hincrby(_key(shard, "attempts"), raw, -1)

    def fail(self, eid: str, error: str) -> None:
        """Remember why the last attempt failed."""
        shard, raw = split_id(eid)
        self.r.hset(_key(shard, "errors"), raw, error[:2000])

    def finish(self, eid: str, consumer: str) -> None:
        """Done: acknowledge, delete, forget its bookkeeping and give the lease back (one script in the shard's
        slot; the lease only if still ours), after the entry's deferred writes, in their round trip."""
        shard, raw = split_id(eid)
        later.flush(self.r, later.Call(self._finish, [stream_key(shard), _key(shard, "attempts"), _key(shard, "errors"),
                                                      _key(shard, "busy:") + raw], [GROUP, raw, consumer]))

    def ack(self, eid: str) -> None:
        """Done: acknowledge, delete and forget its bookkeeping (one transaction in the shard's slot)."""
        shard, raw = split_id(eid)
        with self.r.pipeline(transaction=True) as p:
            p.xack(stream_key(shard), GROUP, raw).xdel(stream_key(shard), raw)
            p.hdel(_key(shard, "attempts"), raw).hdel(_key(shard, "errors"), raw)
            p.execute()

    def dead_letter(self, entry: Entry, error: str | None = None) -> None:
        """Move an entry that keeps failing to its shard's dead-letter stream, with its last error."""
        shard, raw = split_id(entry.id)
        error = error or self.r.hget(_key(shard, "errors"), raw) or "unknown error"
        with self.r.pipeline(transaction=True) as p:
            p.xadd(_key(shard, "dlq"), {"kind": entry.kind, "data": entry.data, "error": error, "entry": entry.id,
                                 "at": str(int(time.time()))})
            p.xack(stream_key(shard), GROUP, raw).xdel(stream_key(shard), raw)
            p.hdel(_key(shard, "attempts"), raw).hdel(_key(shard, "errors"), raw)
            p.execute()

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """Oldest dead letters first (of every shard), each with its id."""
        letters = [{"id": entry_id(shard, eid), **fields, "_at": eid} for shard in self._all()
                   for eid, fields in self.r.xrange(_key(shard, "dlq"), count=count)]
        letters.sort(key=lambda d: tuple(int(x) for x in d.pop("_at").split("-")))
        return letters[:count]

    def replay(self, ids: list[str] | None = None) -> int:
        """Put dead letters (all, or those with `ids`) back into the inbox; returns how many."""
        letters = [d for d in self.dead_letters(count=100000) if not ids or d["id"] in ids]
        for d in letters:
            shard, raw = split_id(d["id"])
            with self.r.pipeline(transaction=True) as p:
                p.xadd(stream_key(shard), {"kind": d["kind"], "data": d["data"]}).xdel(_key(shard, "dlq"), raw)
                p.execute()
        return len(letters)

    def depth(self) -> dict[str, int]:
        """Entries waiting, pending (taken, not acknowledged) and dead, over every shard."""
        out = {"length": 0, "pending": 0, "lag": 0, "dead": 0, "shards": 0}
        for shard in self._all():
            self.ensure_group(shard)
            info = self.r.xinfo_groups(stream_key(shard))
            group: dict[str, Any] = next((g for g in info if g["name"] == GROUP), {})
            out["length"] += int(self.r.xlen(stream_key(shard)))
            out["pending"] += int(group.get("pending", 0))
            out["lag"] += int(group.get("lag") or 0)
            out["dead"] += int(self.r.xlen(_key(shard, "dlq")))
            out["shards"] += 1
        return out


def _shard_of_stream(name: str) -> int:
    """The shard a stream key belongs to."""
    tag = name.split("{", 1)[1].split("}", 1)[0]
    return int(tag.partition(":")[2] or 0)
