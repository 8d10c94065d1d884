"""Bad callbacks get a clear status, leave nothing behind and never reach a worker."""

from __future__ import annotations

import time

import pytest
import requests

from bot.queue.inbox import Inbox
from bot.web.envelope import CallbackCrypto
from tests.support import kf_notice


def inbox_len(r) -> int:
    return len(Inbox(r).peek())


def envelope(encrypt: str) -> str:
    return f"<xml><ToUserName>x</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"


def signed(service, encrypt: str, ts: str | None = None) -> dict:
    from bot.web.envelope import signature

    ts = ts or str(int(time.time()))
    return {"msg_signature": signature(service.crypto.token, ts, "n1", encrypt), "timestamp": ts, "nonce": "n1"}


def test_bad_signature_is_403(service, r):
    query, body = service.crypto.encrypt(kf_notice("T"))
    query["msg_signature"] = "f" * 40
    assert service.post_raw(query, body).status_code == 403
    assert inbox_len(r) == 0


def test_missing_query_is_403(service, r):
    _, body = service.crypto.encrypt(kf_notice("T"))
    assert service.post_raw({}, body).status_code == 403


def test_stale_timestamp_is_403(service, r):
    old = str(int(time.time()) - 600)
    query, body = service.crypto.encrypt(kf_notice("T"), timestamp=old)
    assert service.post_raw(query, body).status_code == 403
    assert inbox_len(r) == 0


@pytest.mark.parametrize("body", [
    b"not xml at all",
    b"<xml><Encrypt>abc</Encrypt>",
    b"",
    b"\xff\xfe\x00binary",
    b'{"json": true}',
])
def test_malformed_body_is_400(service, r, body):
    assert service.post_raw(signed(service, "abc"), body).status_code in (400, 403)
    assert inbox_len(r) == 0


def test_garbage_ciphertext_is_400(service, r):
    for encrypt in ("bm90IGEgY2lwaGVydGV4dA==", "!!!notbase64!!!", "A" * 64):
        resp = service.post_raw(signed(service, encrypt), envelope(encrypt))
        assert resp.status_code == 400, encrypt
    assert inbox_len(r) == 0


def test_wrong_corp_id_is_400(service, r):
    other = CallbackCrypto(service.crypto.token, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wwSomeoneElse")
    query, body = other.encrypt(kf_notice("T", corp_id="wwSomeoneElse"))
    assert service.post_raw(query, body).status_code == 400
    assert inbox_len(r) == 0


def test_encrypted_non_xml_plaintext_is_400(service, r):
    query, body = service.crypto.encrypt("this is not xml")
    assert service.post_raw(query, body).status_code == 400


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><Encrypt>&lol3;</Encrypt></xml>"""
XXE = """<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Encrypt>&xxe;</Encrypt></xml>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, XXE])
def test_entity_expansion_and_external_entities_are_400(service, r, body):
    assert service.post_raw(signed(service, "x"), body.encode()).status_code == 400
    assert inbox_len(r) == 0


@pytest.mark.parametrize("doc", [BILLION_LAUGHS.replace("<xml><Encrypt>&lol3;</Encrypt></xml>",
                                                        "<xml><MsgType>&lol3;</MsgType></xml>"), XXE])
def test_entities_inside_the_encrypted_payload_are_400(service, r, doc):
    query, body = service.crypto.encrypt(doc)
    assert service.post_raw(query, body).status_code == 400
    assert inbox_len(r) == 0


def test_body_over_64k_is_413(service, r):
    query, body = service.crypto.encrypt(kf_notice("T"))
    big = body.replace("</xml>", "<Pad>" + "x" * 70000 + "</Pad></xml>")
    assert service.post_raw(query, big).status_code == 413
    chunked = requests.post(service.url + service.path, params=query,
                            data=iter([big[i:i + 8192].encode() for i in range(0, len(big), 8192)]), timeout=10)
    assert chunked.status_code == 413
    assert inbox_len(r) == 0


def test_bad_inputs_are_counted(service):
    query, body = service.crypto.encrypt(kf_notice("T"))
    service.post_raw(query | {"msg_signature": "0" * 40}, body)
    service.post_raw(signed(service, "x"), b"junk")
    service.post_raw(query, body)
    service.post_raw(query, body)
    counts = service.server.app.extensions["wecom"]["counts"].counts
    assert counts["rejected_403"] == 1 and counts["rejected_400"] == 1
    assert counts["accepted"] == 1 and counts["duplicate"] == 1


def test_redis_unreachable_is_503(sandbox, redis_url):
    """Covered in depth by test_durability; here: a dead Redis URL answers 503, not 500."""
    from bot.app import create_app
    from bot.redis_server import connect, free_port
    from tests.support import Service, make_settings

    settings, _ = make_settings(sandbox.url, redis_url)
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", check=False)
    svc = Service(create_app(settings, dead), CallbackCrypto(settings.token, settings.aes_key, settings.corp_id),
                  settings.callback_path)
    try:
        assert svc.post(kf_notice("T")).status_code == 503
    finally:
        svc.stop()
