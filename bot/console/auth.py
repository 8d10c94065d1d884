"""Console access: admin token login, a signed session cookie, CSRF tokens, the localhost sandbox exception."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import redis
from flask import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "wecom_console"
MAX_AGE = 12 * 3600
LOCAL = {"127.0.0.1", "::1", "localhost"}
ENDED = "wecom:console:ended:"  # + session id: logged out


class Gate:
    """Who may use the console, and the cookie that remembers it."""

    def __init__(self, admin_token: str | None, sandbox: bool, r: redis.Redis | None = None) -> None:
        self.r = r  # where ended sessions are remembered until their cookie would expire anyway
        self.token = admin_token or None
        self.sandbox = sandbox
        # Derived from the token: every process (gunicorn workers) signs alike; no app SECRET_KEY needed.
        self.key = (hmac.new(b"wecom-console-session", self.token.encode(), hashlib.sha256).digest()
                    if self.token else secrets.token_bytes(32))
        self.signer = URLSafeTimedSerializer(self.key, salt="wecom-console")

    @property
    def enabled(self) -> bool:
        """Off without a token, except in sandbox mode (then for localhost only)."""
        return bool(self.token) or self.sandbox

    def local_open(self, req: Request) -> bool:
        """Sandbox mode without a token: a direct request from this machine needs no login."""
        return (not self.token and self.sandbox and req.remote_addr in LOCAL
                and "X-Forwarded-For" not in req.headers and "Forwarded" not in req.headers)

    def load(self, req: Request) -> dict[str, Any]:
        """The session from the cookie, or a fresh anonymous one."""
        raw = req.cookies.get(COOKIE)
        if raw:
            try:
                data = self.signer.loads(raw, max_age=MAX_AGE)
                if isinstance(data, dict) and isinstance(data.get("sid"), str) and not self.ended(data["sid"]):
                    return data
            except BadSignature:
                pass
        return {"sid": secrets.token_urlsafe(16), "auth": False, "mask": False, "new": True}

    def end(self, sid: str) -> None:
        """Log a session out on the server: a copy of its cookie no longer opens the console."""
        if self.r is not None:
            self.r.set(f"{ENDED}{sid}", "1", ex=MAX_AGE)

    def ended(self, sid: str) -> bool:
        """The session was logged out."""
        return self.r is not None and bool(self.r.exists(f"{ENDED}{sid}"))

    def dump(self, session: dict[str, Any]) -> str:
        return self.signer.dumps({k: v for k, v in session.items() if k != "new"})

    def check_token(self, given: str) -> bool:
        """Constant-time comparison with the admin token."""
        return self.token is not None and bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def csrf(self, session: dict[str, Any]) -> str:
        """The CSRF token bound to this session."""
        return hmac.new(self.key, b"csrf:" + session["sid"].encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: dict[str, Any], given: str | None) -> bool:
        return given is not None and bool(given) and not session.get("new") and hmac.compare_digest(given, self.csrf(session))


def mask(value: str | None, on: bool) -> str:
    """'wmSandboxCustomer01' -> 'wmSa…01' when masking is on."""
    if not value or not on:
        return value or ""
    return value[:4] + "…" + value[-2:] if len(value) > 6 else value[:1] + "…"
