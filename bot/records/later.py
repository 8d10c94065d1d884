"""One entry's Redis work, gathered: within `gathering(r)`, writes that may wait (history, counters, lines, script
calls nobody waits for) go with the next round trip that must be made (a done mark, a read, the acknowledgement),
and values read ahead (`ahead`) are not read again."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.commands.core import Script

from sop.shards import is_cluster

Write = Callable[[Any], object]  # adds commands to a (non-transactional) pipeline


@dataclass(frozen=True, slots=True)
class Call:
    """A script call as one pipelined command (plain EVALSHA: redis-py's pipelined Script objects add a SCRIPT
    EXISTS round trip); a restarted Redis that forgot the script (NOSCRIPT) gets it again through the Script."""

    script: Script
    keys: Sequence[Any]
    args: Sequence[Any]

    def __call__(self, p: Any) -> object:
        return p.execute_command("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)

    def now(self) -> Any:
        return self.script(keys=list(self.keys), args=list(self.args))


@dataclass(slots=True)
class _Gathered:
    r: redis.Redis
    writes: list[Write] = field(default_factory=list)
    known: dict[str, Any] = field(default_factory=dict)  # key -> value read ahead (GET: str | None; HGETALL: dict)


_gathered: ContextVar[_Gathered | None] = ContextVar("later_writes", default=None)


def _current(r: redis.Redis) -> _Gathered | None:
    current = _gathered.get()
    return current if current is not None and current.r is r else None


@contextmanager
def gathering(r: redis.Redis) -> Iterator[None]:
    """Defer the writes made through `write(r, ...)` and `call(r, ...)` until the next `flush` or the end of the
    block (also when it raises: what happened before is kept, as if it had been written at once). Nested in a
    gathering for the same `r`, the block is part of the outer one."""
    if _current(r) is not None:
        yield
        return
    token = _gathered.set(_Gathered(r))
    try:
        yield
    finally:
        try:
            flush(r)
        finally:
            _gathered.reset(token)


def write(r: redis.Redis, fn: Write) -> None:
    """Perform `fn` on a pipeline now, or, while gathering for `r`, with the next flush."""
    current = _current(r)
    if current is not None:
        current.writes.append(fn)
        return
    _send(r, [fn])


def call(r: redis.Redis, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """A script call whose result nobody waits for: with the next flush while gathering, else at once."""
    write(r, Call(script, keys, args))


def flush(r: redis.Redis, last: Write | None = None) -> Any:
    """Send the deferred writes, and `last` after them, in one round trip; returns the replies of `last`'s
    commands (an empty list without `last`). When the round trip fails,
    they are gone with the entry's attempt: its retry does them again."""
    current = _current(r)
    waiting = current.writes if current is not None else []
    if not waiting and last is None:
        return []
    writes = [*waiting, *([last] if last is not None else [])]
    waiting.clear()
    results = _send(r, writes)
    return results[-1] if last is not None else []


def _send(r: redis.Redis, writes: list[Write]) -> list[Any]:
    """Perform `writes` in order, one pipeline for all on a single server; each write's replies, a list each. A
    cluster's pipelines refuse EVALSHA, so there a script call goes alone
    between the pipelines of the writes around it."""
    cluster = is_cluster(r)
    out: list[Any] = []
    error: redis.ResponseError | None = None  # as in one pipeline, a command's error does not stop the others
    todo = list(writes)
    while todo:
        batch: list[Write] = []
        while todo and not (cluster and isinstance(todo[0], Call)):
            batch.append(todo.pop(0))
        try:
            if batch:
                out += _pipelined(r, batch)
            if todo:  # a script call, on a cluster
                call_ = todo.pop(0)
                assert isinstance(call_, Call)
                out.append([call_.now()])
        except redis.ResponseError as exc:
            error = error or exc
    if error is not None:
        raise error
    return out


def _pipelined(r: redis.Redis, writes: list[Write]) -> list[Any]:
    """One pipeline of `writes`; a script call refused with NOSCRIPT (Redis restarted, or a replica promoted) is run
    again through its Script, which loads it, right after the pipeline (the one place its order is not kept). The
    first other error is raised after that, like redis-py does."""
    spans: list[tuple[Write, int, int]] = []
    with r.pipeline(transaction=False) as p:
        for fn in writes:
            start = len(p)
            fn(p)
            spans.append((fn, start, len(p)))
        raw = p.execute(raise_on_error=False)
    out: list[Any] = []
    error: Exception | None = None
    for fn, start, end in spans:
        got = raw[start:end]
        if isinstance(fn, Call) and got and isinstance(got[0], redis.exceptions.NoScriptError):
            got = [fn.now()]
        error = error or next((res for res in got if isinstance(res, Exception)), None)
        out.append(got)
    if error is not None:
        raise error
    return out


# ---- values read ahead --------------------------------------------------------------------------------------

def ahead(r: redis.Redis, gets: Sequence[str] = (), hashes: Sequence[str] = (), first: Write | None = None) -> Any:
    """While gathering, read `gets` (GET) and `hashes` (HGETALL) now, after the deferred writes, in one round trip,
    and keep their values for `get`, `values` and `hgetall` until the gathering ends (our own writes to them say
    `forget` or `know`). `first` (one command, e.g. taking a lock) goes before the reads in the same round trip;
    its reply is returned. Outside a gathering, only `first` is sent."""
    if _current(r) is None:
        return flush(r, first)[0] if first is not None else None
    return _read(r, gets, hashes, first)[1]


def values(r: redis.Redis, keys: Sequence[str]) -> list[str | None]:
    """GET of each key, in one round trip after the deferred writes (none for keys read ahead)."""
    found, _ = _read(r, keys, ())
    return [found[k] for k in keys]


def _read(r: redis.Redis, gets: Sequence[str], hashes: Sequence[str],
          first: Write | None = None) -> tuple[dict[str, Any], Any]:
    """The values of `gets` and `hashes` (those known, the others read in one round trip and kept), and the reply
    of `first` (one command sent before the reads)."""
    current = _current(r)
    known = current.known if current is not None else {}
    todo_gets = [k for k in dict.fromkeys(gets) if k not in known]
    todo_hashes = [k for k in dict.fromkeys(hashes) if k not in known]
    found = {k: known[k] for k in (*gets, *hashes) if k in known}
    todo = [*todo_gets, *todo_hashes]
    if not todo and first is None:
        return found, None

    def read(p: Any) -> None:
        if first is not None:
            first(p)
        for key in todo_gets:
            p.get(key)
        for key in todo_hashes:
            p.hgetall(key)

    got = flush(r, read)
    reply = got.pop(0) if first is not None else None
    read_now = dict(zip(todo, got, strict=True))
    found.update(read_now)
    if current is not None:
        known.update(read_now)
    return found, reply


def get(r: redis.Redis, key: str) -> str | None:
    """GET `key`, or its value read ahead."""
    current = _current(r)
    if current is not None and key in current.known:
        return current.known[key]
    return r.get(key)


def hgetall(r: redis.Redis, key: str) -> dict[str, str]:
    """HGETALL `key`, or its value read ahead."""
    current = _current(r)
    if current is not None and key in current.known:
        return dict(current.known[key])
    return r.hgetall(key)


def known_as(r: redis.Redis, key: str, value: Any) -> bool:
    """`key` was read ahead (or written by us) in this gathering, and holds `value`."""
    current = _current(r)
    return current is not None and key in current.known and current.known[key] == value


def set_now(r: redis.Redis, key: str, value: str | None, ex: int | None = None) -> None:
    """SET `key` (DEL when `value` is None) at once, and know its value for the rest of the gathering."""
    if value is None:
        r.delete(key)
    else:
        r.set(key, value, ex=ex)
    know(r, key, value)


def know(r: redis.Redis, key: str, value: Any) -> None:
    """Our own write gave `key` this value."""
    current = _current(r)
    if current is not None:
        current.known[key] = value


def forget(r: redis.Redis, *keys: str) -> None:
    """Our own write changed these keys (or what was read of them is stale): read them from Redis again."""
    current = _current(r)
    if current is not None:
        for key in keys:
            current.known.pop(key, None)
