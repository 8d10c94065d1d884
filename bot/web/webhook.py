"""The callback endpoint: verify, decrypt, parse, dedupe, enqueue, acknowledge. Nothing slower."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import redis
from flask import Blueprint, Response, request

from bot.observe import observe_callback
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


def make_webhook(crypto: CallbackCrypto, inbox: Inbox, path: str, max_body: int, max_skew: int,
                 counts: CallbackCounts | None = None) -> Blueprint:
    """A blueprint serving GET (URL verification) and POST (callbacks) on `path`."""
    bp = Blueprint("wecom_callback", __name__)
    counts = counts or CallbackCounts()
    writer = GroupCommit(inbox)

    def check(args: dict[str, str], encrypt: str) -> None:
        crypto.verify(args.get("msg_signature", ""), args.get("timestamp", ""), args.get("nonce", ""), encrypt)
        try:
            skew = abs(time.time() - int(args.get("timestamp", "")))
        except ValueError:
            raise BadSignature("timestamp is not a number") from None
        if skew > max_skew:
            raise BadSignature(f"timestamp {skew:.0f}s off")

    def reject(exc: CallbackRejected) -> Response:
        counts.add(f"rejected_{exc.status}")
        log.warning("callback rejected (%d): %s from %s", exc.status, exc.reason, request.remote_addr)
        return Response("", status=exc.status, mimetype="text/plain")

    @bp.get(path)
    def verify_url() -> Response:
        """URL verification: answer the decrypted echostr, exactly."""
        args = request.args
        try:
            check(args, args.get("echostr", ""))
            plain = crypto.decrypt(args.get("echostr", ""))
        except CallbackRejected as exc:
            return reject(exc)
        counts.add("verified")
        return Response(plain, mimetype="text/plain")

    @bp.post(path)
    def callback() -> Response:
        """A callback: acknowledged with an empty 200 once it is safely in the inbox."""
        if (request.content_length or 0) > max_body:
            counts.add("rejected_413")
            return Response("", status=413, mimetype="text/plain")
        body = request.stream.read(max_body + 1)
        if len(body) > max_body:
            counts.add("rejected_413")
            return Response("", status=413, mimetype="text/plain")
        try:
            encrypt = str(parse_xml(body).get("Encrypt") or "")
            check(request.args, encrypt)
            event = parse_callback(crypto.decrypt(encrypt), crypto.corp_id)
        except CallbackRejected as exc:
            return reject(exc)
        try:
            fresh = writer.put(Item("callback", event.to_json(), "cb:" + event.dedupe_key))
        except (redis.RedisError, TimeoutError) as exc:
            counts.add("unavailable_503")
            log.warning("callback not queued, Redis unavailable: %s", exc)
            return Response("", status=503, mimetype="text/plain")  # WeCom retries
        counts.add("accepted" if fresh else "duplicate")
        return Response("", status=200, mimetype="text/plain")

    return bp
