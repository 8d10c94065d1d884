"""Shards of the keys that grow with the customers (the inbox's streams, the SOP due set): one hash tag each,
so a Redis Cluster spreads them over its nodes while a script or transaction stays in one slot."""

from __future__ import annotations

import zlib

import redis
from redis.cluster import RedisCluster

CLUSTER_SHARDS = 16  # the default on a Redis Cluster; a single server (or a sentinel's master) has 1


def shard_of(key: str, shards: int) -> int:
    """The shard of a customer (or account) key: always the same one for the same count."""
    return zlib.crc32(key.encode()) % shards if shards > 1 else 0


def is_cluster(r: redis.Redis) -> bool:
    """The client is redis-py's RedisCluster."""
    return isinstance(r, RedisCluster)


def shard_count(r: redis.Redis, record: str, configured: int) -> tuple[int, int]:
    """(shards to write, shards to read): `configured`, else what `record` holds, else the mode's default; the
    count in use is recorded so that every process reads every shard (a lowered count still drains the rest)."""
    recorded = int(r.get(record) or 0)
    n = configured or recorded or (CLUSTER_SHARDS if is_cluster(r) else 1)
    if n > recorded:
        r.set(record, n)
    return n, max(n, recorded)


class Shards:
    """The shard count of one kind of key, resolved on first use (Redis may be down when built)."""

    def __init__(self, r: redis.Redis, record: str, configured: int = 0) -> None:
        self.r, self.record, self.configured = r, record, configured
        self._counts: tuple[int, int] | None = None

    def _resolve(self) -> tuple[int, int]:
        if self._counts is None:
            self._counts = shard_count(self.r, self.record, self.configured)
        return self._counts

    @property
    def count(self) -> int:
        """How many shards new keys spread over."""
        return self._resolve()[0]

    def all(self) -> range:
        """Every shard that may hold keys."""
        return range(self._resolve()[1])

    def of(self, key: str) -> int:
        """The shard of `key` (a customer, an account)."""
        return shard_of(key, self.count)
