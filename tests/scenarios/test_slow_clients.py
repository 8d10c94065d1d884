"""Slow clients cannot hold the web threads: `serve` (waitress) and `web` (gunicorn), started as a user would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from bot.redis_server import free_port
from tests.support import ROOT, make_settings


def slow_clients(port: int, n: int) -> list[socket.socket]:
    """`n` connections that send half a request line and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /wecom/callback HTTP/1.1\r\nHost: x\r\nContent-Le")
        socks.append(s)
    return socks


def wait_for_line(proc: subprocess.Popen, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        found = re.search(pattern, line)
        if found:
            return found
        if proc.poll() is not None:
            break
    raise AssertionError(f"no line matching {pattern!r}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def sandbox_config(tmp_path: Path) -> dict[str, str]:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["content"] = {k: str(ROOT / v) for k, v in cfg["content"].items()}
    cfg["redis"]["embedded_dir"] = str(tmp_path / "redis")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WECOM_SECRET", "WECOM_BOT_ADMIN_TOKEN")}
    return {**env, "WECOM_BOT_CONFIG": str(tmp_path / "config.yaml")}


def test_serve_answers_while_150_slow_clients_hang_and_its_console_needs_the_banner_token(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", "0", "--sandbox-port", "0"],
                            env=sandbox_config(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    socks: list[socket.socket] = []
    try:
        port = int(wait_for_line(proc, r"health: http://127\.0\.0\.1:(\d+)/healthz").group(1))
        link = wait_for_line(proc, r"console: (http://\S+/admin/login\?token=\S+)").group(1)
        socks = slow_clients(port, 150)  # waitress's default limit is 100 connections
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        anon = requests.get(f"http://127.0.0.1:{port}/admin/", allow_redirects=False, timeout=5)
        assert anon.status_code == 302 and "/admin/login" in anon.headers["Location"]
        session = requests.Session()
        assert session.get(link, timeout=5).status_code == 200
        assert session.get(f"http://127.0.0.1:{port}/admin/sandbox", allow_redirects=False, timeout=5
                           ).status_code == 200
    finally:
        for s in socks:
            s.close()
        stop(proc)


def test_web_frees_its_threads_from_clients_that_stop_mid_request(sandbox, redis_url):
    _, env = make_settings(sandbox.url, redis_url)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot", "web", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--threads", "2"], env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and proc.poll() is None, "web did not start"
                time.sleep(0.2)
        socks = slow_clients(port, 4)  # twice its threads, each holding a half-sent request
        time.sleep(0.5)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=20).status_code == 200
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:  # a body that stops half-way
            s.sendall(b"POST /wecom/callback?timestamp=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n<xml>")
            assert s.recv(4096).startswith(b"HTTP/1.1 400 ")  # after READ_TIMEOUT: refused, not a 500
    finally:
        for s in socks:
            s.close()
        stop(proc)
