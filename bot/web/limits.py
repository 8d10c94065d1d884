"""What keeps slow or idle clients from holding the web threads: waitress (`serve`) and gunicorn (`web`) settings."""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

READ_TIMEOUT = 5.0  # seconds a client may stay silent while sending a request (WeCom posts one small body)
CONNECTION_LIMIT = 1000  # open connections per process before new ones wait in the listen backlog

# waitress buffers a whole request on its event loop before a thread sees it, so slow clients cost a
# connection slot, not a thread; the slots are many, and a silent one is closed after channel_timeout.
SERVE_LIMITS: dict[str, Any] = {
    "connection_limit": CONNECTION_LIMIT,
    "channel_timeout": 15,
    "cleanup_interval": 5,
    "asyncore_use_poll": True,  # select() stops at 1024 descriptors
}


class _TimedConn(TConn):
    """A gthread connection whose reads give up after READ_TIMEOUT seconds of silence."""

    def init(self) -> None:
        super().init()
        self.sock.settimeout(READ_TIMEOUT)


class TimedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker with a read timeout: a client that stops sending mid-request frees its
    thread after READ_TIMEOUT (gunicorn itself waits forever once the first bytes arrived)."""

    def accept(self, listener: Any) -> None:
        import errno

        try:
            client_sock, client_addr = listener.accept()
            self.nr_conns += 1
            client_sock.setblocking(True)
            self.enqueue_req(_TimedConn(self.cfg, client_sock, client_addr, listener.getsockname()))
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise


GUNICORN_WORKER = f"{TimedThreadWorker.__module__}.{TimedThreadWorker.__name__}"
