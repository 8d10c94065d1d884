"""Steps: every WeCom side effect of an entry is its own unit, done once; one failing never skips the others.

A step whose outcome is unknown (no answer, 5xx, errcode -1) waits for the entry's next attempt, and only
the steps still open run again; on the entry's last attempt, or on a definite refusal, the step is recorded
as failed with its errcode and the entry goes on. Rate limits and configuration errors still stop the
entry, which then waits without spending an attempt (bot/queue/worker.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from bot.records.store import DONE_TTL, Store
from bot.wecom import WeComConfigError, WeComError, WeComRateLimited, transient

FAILED = "failed"  # the done mark of a step that failed for good


class StepsPending(Exception):
    """Some steps of the entry failed for now; the entry is retried, and only those steps run again."""


@dataclass(slots=True)
class _Entry:
    final: bool
    pending: list[str] = field(default_factory=list)


_entry: ContextVar[_Entry | None] = ContextVar("entry_steps", default=None)


@contextmanager
def entry(final: bool) -> Iterator[None]:
    """The steps of one inbox entry's attempt; raises StepsPending at the end when some must be tried again."""
    token = _entry.set(_Entry(final))
    try:
        yield
        current = _entry.get()
        if current is not None and current.pending:
            raise StepsPending("; ".join(current.pending))
    finally:
        _entry.reset(token)


def pending() -> int:
    """How many steps of the current entry wait for its next attempt."""
    current = _entry.get()
    return len(current.pending) if current else 0


def failed(store: Store, key: str, exc: WeComError) -> bool:
    """A step failed: True when it waits for the entry's next attempt, False when it is recorded as
    failed for good (it is then done: a retry does not repeat it). Outside an entry the error is raised."""
    if isinstance(exc, WeComRateLimited | WeComConfigError):
        raise exc
    current = _entry.get()
    if current is None:
        raise exc
    if transient(exc) and not current.final:
        current.pending.append(f"{key}: {exc}")
        return True
    store.record("step_failed", step=key, endpoint=exc.endpoint, errcode=exc.errcode, error=exc.errmsg)
    store.count(f"step_failed:{exc.endpoint or 'wecom'}")
    store.mark_done(key, FAILED)
    return False


def once(store: Store, key: str, step: Callable[[], object]) -> bool:
    """Run a WeCom step unless `key` is done; True when it is done (now or before), False when it failed."""
    value = store.done_value(key)
    if value is not None:
        return value != FAILED
    try:
        step()
    except WeComError as exc:
        failed(store, key, exc)
        return False
    store.mark_done(key)
    return True


def prepared(store: Store, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The request body of a step, built on its first try and kept, so that a retry sends exactly the same
    body (WeCom's duplicate check then drops the repeat)."""
    name = f"wecom:prepared:{{{key}}}"
    kept = store.r.get(name)
    if kept:
        return dict(json.loads(kept))
    body = build()
    store.r.set(name, json.dumps(body, ensure_ascii=False), ex=DONE_TTL, nx=True)
    return dict(json.loads(store.r.get(name) or json.dumps(body)))
