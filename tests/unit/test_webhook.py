"""The webhook's two views called as plain functions: no Flask request, no Redis."""

from __future__ import annotations

import io
from typing import Any

from bot.config import SANDBOX_AES_KEY, SANDBOX_CORP_ID, SANDBOX_TOKEN
from bot.web.envelope import CallbackCrypto, kf_notice_xml
from bot.web.webhook import CallbackCounts, Webhook, receive, verify_url

CRYPTO = CallbackCrypto(SANDBOX_TOKEN, SANDBOX_AES_KEY, SANDBOX_CORP_ID)


class Writer:
    """Stands in for the group commit: keeps what would be queued."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> bool:
        self.items.append(item)
        return len(self.items) == 1


def webhook(writer: Writer) -> Webhook:
    return Webhook(CRYPTO, writer, CallbackCounts(), max_body=4096, max_skew=300)  # type: ignore[arg-type]


def test_a_good_callback_is_queued_once_and_acknowledged() -> None:
    writer = Writer()
    w = webhook(writer)
    query, body = CRYPTO.encrypt(kf_notice_xml(SANDBOX_CORP_ID, "TOKEN1", "wk1"))
    assert receive(w, query, len(body), io.BytesIO(body.encode()).read) == 200
    assert receive(w, query, len(body), io.BytesIO(body.encode()).read) == 200
    assert [i.kind for i in writer.items] == ["callback", "callback"]
    assert w.counts.counts == {"accepted": 1, "duplicate": 1}


def test_rejections_carry_their_status() -> None:
    writer = Writer()
    w = webhook(writer)
    query, body = CRYPTO.encrypt(kf_notice_xml(SANDBOX_CORP_ID, "TOKEN1", "wk1"))
    assert receive(w, query, 10_000, io.BytesIO(b"").read) == 413
    assert receive(w, {**query, "msg_signature": "0" * 40}, len(body), io.BytesIO(body.encode()).read) == 403
    assert receive(w, query, 5, io.BytesIO(b"<xml>").read) == 400
    assert writer.items == []


def test_url_verification_answers_the_echostr() -> None:
    w = webhook(Writer())
    assert verify_url(w, CRYPTO.echo("12345")) == (200, "12345")
    assert verify_url(w, {**CRYPTO.echo("12345"), "timestamp": "1"})[0] == 403
