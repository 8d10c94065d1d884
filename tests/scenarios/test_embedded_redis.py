"""The embedded server: a password only its owner can read, and no orphan when its parent is killed."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from bot.redis_server import EmbeddedRedis, redact, running_url
from tests.support import ROOT

CHILD = """
import sys, threading, time
from pathlib import Path
from bot.redis_server import EmbeddedRedis

def run():
    server = EmbeddedRedis(Path(sys.argv[1])).start()
    print(server.port, server.process.pid, flush=True)

if sys.argv[2] == "thread":
    t = threading.Thread(target=run)
    t.start()
    t.join()
else:
    run()
time.sleep(600)
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie nobody has reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def test_password_owner_only_and_reused_with_the_data(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    server = EmbeddedRedis(data).start()
    try:
        assert mode(data) == 0o700
        assert mode(data / "password") == 0o600
        secret = (data / "password").read_text().strip()
        assert len(secret) >= 32 and server.url == f"redis://:{secret}@127.0.0.1:{server.port}/0"
        assert secret not in repr(server) and secret not in redact(server.url)
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            redis.Redis(port=server.port, socket_timeout=2).set("k", "v")
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            redis.Redis(port=server.port, password="wrong", socket_timeout=2).ping()
        redis.Redis.from_url(server.url, socket_timeout=2).set("k", "kept")
    finally:
        server.stop()
    for log in [data / "server.log", *(data / "appendonlydir").iterdir()]:
        assert mode(log) & 0o077 == 0, log

    again = EmbeddedRedis(data).start()
    try:
        assert again.password == secret
        assert redis.Redis.from_url(again.url, socket_timeout=2).get("k") == b"kept"
        (data / "port").write_text(str(again.port))
        assert running_url(data) == again.url
    finally:
        again.stop()


def test_password_not_on_the_command_line(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        assert server.process is not None
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert server.password.encode() not in cmdline
    finally:
        server.stop()


def test_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    servers: list[EmbeddedRedis] = []
    t = threading.Thread(target=lambda: servers.append(EmbeddedRedis(tmp_path / "redis").start()))
    t.start()
    t.join()
    server = servers[0]
    try:
        assert server.watchdog is not None
        time.sleep(1.0)
        assert redis.Redis.from_url(server.url, socket_timeout=2).ping()
    finally:
        server.stop()


@pytest.mark.parametrize("where", ["main", "thread"])
def test_server_exits_when_its_parent_is_killed(tmp_path: Path, where: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "redis"), where], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    pid = 0
    try:
        assert child.stdout is not None
        port, pid = (int(x) for x in child.stdout.readline().split())
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the embedded Redis outlived its parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
