"""The callback endpoint: verify, decrypt, parse, dedupe, enqueue, acknowledge. Nothing slower.

`verify_url` and `receive` are plain functions over a Webhook; a Flask route adapts the GET, a WSGI wrapper the
POST."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import redis
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import get_content_length, get_input_stream, get_path_info

from bot.observe import observe_callback
from bot.queue.callback import Callback
from bot.queue.inbox import Inbox, Item
from bot.web.envelope import (
    BadSignature,
    CallbackCrypto,
    CallbackRejected,
    parse_callback,
    parse_xml,
)
from bot.web.groupcommit import GroupCommit

log = logging.getLogger("bot.web.webhook")


class CallbackCounts:
    """Callbacks by result, in this process (exported by /metrics and `stats`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, result: str) -> None:
        with self._lock:
            self.counts[result] += 1
        observe_callback(result)  # summed over processes in Redis by the group-commit writer


@dataclass
class Webhook:
    """What the callback endpoint needs; `verify_url` and `receive` below are its two views, over plain values."""

    crypto: CallbackCrypto
    writer: GroupCommit  # the inbox, through the process's group commit
    counts: CallbackCounts
    max_body: int
    max_skew: int
    clock: Callable[[], float] = time.time


def _check(w: Webhook, args: Mapping[str, str], encrypt: str) -> None:
    """Signature (constant time) and timestamp within `max_skew`, or BadSignature."""
    w.crypto.verify(args.get("msg_signature", ""), args.get("timestamp", ""), args.get("nonce", ""), encrypt)
    try:
        skew = abs(w.clock() - int(args.get("timestamp", "")))
    except ValueError:
        raise BadSignature("timestamp is not a number") from None
    if skew > w.max_skew:
        raise BadSignature(f"timestamp {skew:.0f}s off")


def _rejected(w: Webhook, exc: CallbackRejected, remote: str | None) -> tuple[int, str]:
    w.counts.add(f"rejected_{exc.status}")
    log.warning("callback rejected (%d): %s from %s", exc.status, exc.reason, remote)
    return exc.status, ""


def verify_url(w: Webhook, args: Mapping[str, str], remote: str | None = None) -> tuple[int, str]:
    """URL verification (GET): the decrypted echostr, exactly; (status, body)."""
    try:
        _check(w, args, args.get("echostr", ""))
        plain = w.crypto.decrypt(args.get("echostr", ""))
    except CallbackRejected as exc:
        return _rejected(w, exc, remote)
    w.counts.add("verified")
    return 200, plain


def receive(w: Webhook, args: Mapping[str, str], content_length: int | None, read: Callable[[int], bytes],
            remote: str | None = None) -> int:
    """A callback (POST): 200 once it is safely in the inbox, else the status of the rejection (503: Redis)."""
    if (content_length or 0) > w.max_body:
        w.counts.add("rejected_413")
        return 413
    try:
        body = read(w.max_body + 1)
    except (OSError, ClientDisconnected) as exc:  # the client stopped sending (a read timeout) or hung up
        return _rejected(w, CallbackRejected(f"body unreadable ({exc.__class__.__name__})"), remote)[0]
    if len(body) > w.max_body:
        w.counts.add("rejected_413")
        return 413
    try:
        encrypt = str(parse_xml(body).get("Encrypt") or "")
        _check(w, args, encrypt)
        event = parse_callback(w.crypto.decrypt(encrypt), w.crypto.corp_id)
        if event.kind == "kf_notice":  # our clock's time of the notice: WeCom's CreateTime may be skewed
            event = Callback(event.kind, {**event.fields, "ReceivedAt": f"{time.time():.3f}"})
    except CallbackRejected as exc:
        return _rejected(w, exc, remote)[0]
    try:
        fresh = w.writer.put(Item("callback", event.to_json(), "cb:" + event.dedupe_key, event.shard_key))
    except (redis.RedisError, TimeoutError) as exc:
        w.counts.add("unavailable_503")
        log.warning("callback not queued, Redis unavailable: %s", exc)
        return 503  # WeCom retries
    w.counts.add("accepted" if fresh else "duplicate")
    return 200


class CallbackPost:
    """The callback POST straight off WSGI, ahead of Flask, whose request and response objects cost more CPU than
    the rest of the endpoint; every other request goes on to the app."""

    def __init__(self, app: WSGIApplication, w: Webhook, path: str) -> None:
        self.app, self.w, self.path = app, w, path

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or get_path_info(environ) != self.path:
            return self.app(environ, start_response)
        args: dict[str, str] = {}
        for key, value in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            args.setdefault(key, value)  # the first of repeated names, as Flask's request.args
        stream = get_input_stream(environ)  # bounded by Content-Length, as Flask's request.stream
        status = receive(self.w, args, get_content_length(environ), stream.read, environ.get("REMOTE_ADDR"))
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "0")])
        return [b""]


def mount_webhook(app: Flask, crypto: CallbackCrypto, inbox: Inbox, path: str, max_body: int, max_skew: int,
                  counts: CallbackCounts | None = None) -> None:
    """Serve GET (URL verification, through Flask) and POST (callbacks, ahead of it) on `path` of `app`."""
    bp = Blueprint("wecom_callback", __name__)
    w = Webhook(crypto, GroupCommit(inbox), counts or CallbackCounts(), max_body, max_skew)

    @bp.get(path)
    def get() -> Response:
        status, body = verify_url(w, request.args, request.remote_addr)
        return Response(body, status=status, mimetype="text/plain")

    app.register_blueprint(bp)
    app.wsgi_app = CallbackPost(app.wsgi_app, w, path)  # type: ignore[method-assign]
