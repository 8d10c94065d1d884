"""Console access: admin token login (sandbox mode: a token per run, printed in the banner), a signed session
cookie, CSRF tokens, failed logins limited per client address."""

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
ENDED = "wecom:console:ended:"  # + session id: logged out
FAILS = "wecom:console:fails:"  # + client address: failed logins in the current window
MAX_FAILS = 20  # failed logins per client address per window; then 429 until the window ends
FAIL_WINDOW = 600


class Gate:
    """Who may use the console, and the cookie that remembers it."""

    def __init__(self, admin_token: str | None, r: redis.Redis | None = None) -> None:
        self.r = r  # where ended sessions and failed logins are remembered
        self.token = admin_token or None
        # Derived from the token: every process (gunicorn workers) signs alike; no app SECRET_KEY needed.
        self.key = (hmac.new(b"wecom-console-session", self.token.encode(), hashlib.sha256).digest()
                    if self.token else secrets.token_bytes(32))
        self.signer = URLSafeTimedSerializer(self.key, salt="wecom-console")

    @property
    def enabled(self) -> bool:
        """Off without a token (`serve` in sandbox mode makes one per run)."""
        return bool(self.token)

    def blocked(self, address: str) -> bool:
        """This client address failed too often in the current window (no sleeping in a server thread)."""
        return self.r is not None and int(self.r.get(f"{FAILS}{address}") or 0) >= MAX_FAILS

    def failed(self, address: str) -> None:
        """Count a failed login of this client address."""
        if self.r is not None:
            with self.r.pipeline() as p:
                p.incr(f"{FAILS}{address}").expire(f"{FAILS}{address}", FAIL_WINDOW, nx=True).execute()

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
