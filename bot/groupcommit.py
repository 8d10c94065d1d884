"""Group commit: concurrent webhook requests of one process share one Redis round trip."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from bot.inbox import ENVELOPE_TTL, Inbox, Item
from bot.metrics import maybe_flush


class GroupCommit:
    """Queues inbox puts; one writer thread sends whatever has queued as one pipeline."""

    def __init__(self, inbox: Inbox, max_batch: int = 64, timeout: float = 4.0):
        self.inbox = inbox
        self.max_batch = max_batch
        self.timeout = timeout
        self._pending: list[tuple[Item, Future]] = []
        self._cv = threading.Condition()
        self._writer: threading.Thread | None = None

    def put(self, item: Item, ttl: int = ENVELOPE_TTL) -> bool:
        """Like Inbox.put (False for a duplicate); raises what Redis raised."""
        done: Future = Future()
        with self._cv:
            if self._writer is None or not self._writer.is_alive():  # started lazily: after a fork
                self._writer = threading.Thread(target=self._write_forever, args=(ttl,), daemon=True,
                                                name="inbox-group-commit")
                self._writer.start()
            self._pending.append((item, done))
            self._cv.notify()
        return done.result(timeout=self.timeout)

    def _write_forever(self, ttl: int) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                results = self.inbox.put_each([item for item, _ in batch], ttl)
            except Exception as exc:  # hand every waiter the same failure (e.g. Redis down -> 503)
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results):
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(bool(result))
            maybe_flush(self.inbox.r)  # this process's metrics, off the request path
