"""Writes that may wait: within `gathering(r)`, history, counters and conversation lines wait for the next done
mark (sent in the same round trip) or the end, instead of one round trip each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis

Write = Callable[[Any], object]  # adds commands to a (non-transactional) pipeline

_gathered: ContextVar[tuple[redis.Redis, list[Write]] | None] = ContextVar("later_writes", default=None)


@contextmanager
def gathering(r: redis.Redis) -> Iterator[None]:
    """Defer the writes made through `write(r, ...)` until the next `flush` or the end of the block (also when
    it raises: what happened before is kept, as if it had been written at once)."""
    token = _gathered.set((r, []))
    try:
        yield
    finally:
        try:
            flush(r)
        finally:
            _gathered.reset(token)


def write(r: redis.Redis, fn: Write) -> None:
    """Perform `fn` on a pipeline now, or, while gathering for `r`, with the next flush."""
    current = _gathered.get()
    if current is not None and current[0] is r:
        current[1].append(fn)
        return
    with r.pipeline(transaction=False) as p:
        fn(p)
        p.execute()


def flush(r: redis.Redis, last: Write | None = None) -> None:
    """Send the deferred writes, and `last` after them, in one round trip."""
    current = _gathered.get()
    waiting = current[1] if current is not None and current[0] is r else []
    if not waiting and last is None:
        return
    with r.pipeline(transaction=False) as p:
        for fn in waiting:
            fn(p)
        if last is not None:
            last(p)
        p.execute()
        waiting.clear()
