"""Group commit: concurrent webhook requests of one process share one Redis round trip."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from bot.observe import maybe_flush
from bot.queue.inbox import ENVELOPE_TTL, Inbox, Item


class GroupCommit:
    """The first request to arrive writes everything queued meanwhile as one pipeline (leader/follower:
    a lone request writes inline, with no thread hand-off)."""

    def __init__(self, inbox: Inbox, max_batch: int = 64, timeout: float = 4.0):
        self.inbox = inbox
        self.max_batch = max_batch
        self.timeout = timeout
        self._pending: list[tuple[Item, Future]] = []
        self._lock = threading.Lock()
        self._writing = False

    def put(self, item: Item, ttl: int = ENVELOPE_TTL) -> bool:
        """Like Inbox.put (False for a duplicate); raises what Redis raised."""
        done: Future = Future()
        with self._lock:
            self._pending.append((item, done))
            lead = not self._writing
            self._writing = True
        if lead:
            self._write_all(ttl)
        return done.result(timeout=self.timeout)

    def _write_all(self, ttl: int) -> None:
        """Write batches until nothing is queued, then step down."""
        while True:
            with self._lock:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                if not batch:
                    self._writing = False
                    break
            self._write(batch, ttl)
        maybe_flush(self.inbox.r)  # this process's metrics, at most once a second

    def _write(self, batch: list[tuple[Item, Future]], ttl: int) -> None:
        try:
            results = self.inbox.put_each([item for item, _ in batch], ttl)
        except Exception as exc:  # hand every waiter the same failure (e.g. Redis down -> 503)
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(bool(result))
