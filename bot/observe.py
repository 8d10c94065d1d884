"""Observations of this process (WeCom calls, processed entries, callbacks) and heartbeats: buffered in
memory, flushed to Redis so every process shows up. The hot path imports this small leaf."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import redis

API_CALLS = "wecom:metrics:api"  # "<path>|<errcode>" -> calls
API_SECONDS = "wecom:metrics:api_seconds"  # "<path>|<bucket index>|sum|count" -> value
PROC_COUNT = "wecom:metrics:processed"  # "<kind>|<outcome>" -> entries
PROC_SECONDS = "wecom:metrics:proc_seconds"  # "<kind>|<bucket index>|sum|count"
CALLBACKS = "wecom:metrics:callbacks"  # result -> callbacks, summed over every web process
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HEARTBEAT_WORKER = "wecom:heartbeat:worker:"
HEARTBEAT_SCHEDULER = "wecom:heartbeat:scheduler"
WORKER_TTL = 30
FLUSH_EVERY = 1.0

_lock = threading.Lock()
# hash -> field -> amount (seconds sums are floats)
_buf: dict[str, defaultdict[str, float]] = {k: defaultdict(float) for k in (API_CALLS, API_SECONDS, PROC_COUNT,
                                                                             PROC_SECONDS, CALLBACKS)}
_last_flush = 0.0


def _bucket(seconds: float) -> int:
    """Index of the first bucket >= seconds (len(BUCKETS) for +Inf)."""
    return next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))


def _observe(count_key: str, seconds_key: str, label: str, count_label: str, seconds: float) -> None:
    with _lock:
        _buf[count_key][count_label] += 1
        hist = _buf[seconds_key]
        hist[f"{label}|{_bucket(seconds)}"] += 1
        hist[f"{label}|sum"] += seconds
        hist[f"{label}|count"] += 1


def observe_wecom_call(path: str, errcode: int | None, seconds: float) -> None:
    """One WeCom API call (errcode None: no answer); call it from the WeCom client."""
    path = path.split("?", 1)[0].removeprefix("/").removeprefix("cgi-bin/")
    _observe(API_CALLS, API_SECONDS, path, f"{path}|{'none' if errcode is None else errcode}", seconds)


def observe_processing(kind: str, outcome: str, seconds: float) -> None:
    """One inbox entry processed (outcome e.g. ok / retry / dead); call it from the worker."""
    _observe(PROC_COUNT, PROC_SECONDS, kind, f"{kind}|{outcome}", seconds)


def observe_callback(result: str) -> None:
    """One callback answered (accepted, duplicate, rejected_403, ...); call it from the webhook."""
    with _lock:
        _buf[CALLBACKS][result] += 1


def maybe_flush(r: redis.Redis) -> None:
    """flush() at most about once a second; never raises (the caller is on a hot path)."""
    if time.monotonic() - _last_flush >= FLUSH_EVERY:
        try:
            flush(r)
        except redis.RedisError:
            pass


def flush(r: redis.Redis) -> None:
    """Move the buffered observations of this process into Redis."""
    global _last_flush
    with _lock:
        taken = {k: v for k, v in _buf.items() if v}
        for k in taken:
            _buf[k] = defaultdict(float)
        _last_flush = time.monotonic()
    if not taken:
        return
    try:
        with r.pipeline(transaction=False) as p:
            for key, counts in taken.items():
                for field, n in counts.items():
                    if not float(n).is_integer():
                        p.hincrbyfloat(key, field, n)
                    else:
                        p.hincrby(key, field, int(n))
            p.execute()
    except redis.RedisError:
        with _lock:  # keep them for the next flush
            for k, v in taken.items():
                for field, n in v.items():
                    _buf[k][field] += n
        raise


def heartbeat_worker(r: redis.Redis, name: str, ttl: int = WORKER_TTL) -> None:
    """A worker is alive (call each loop); also flushes this process's observations about once a second."""
    r.set(HEARTBEAT_WORKER + name, f"{time.time():.0f}", ex=ttl)
    if time.monotonic() - _last_flush >= FLUSH_EVERY:
        flush(r)
