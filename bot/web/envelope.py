"""The callback envelope: constant-time signature check, AES decrypt via wechatpy, parse, rejections;
and envelope building for tests, the sandbox and `chat`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from xml.etree import ElementTree

from wechatpy.crypto import PrpCrypto
from wechatpy.enterprise import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException

from bot.queue.callback import Callback


class CallbackRejected(Exception):
    """A callback we refuse; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadSignature(CallbackRejected):
    """msg_signature does not match, or the timestamp is too far off."""

    status = 403


class BadPayload(CallbackRejected):
    """Ciphertext, padding, CorpID or XML that does not decode."""

    status = 400


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """sha1 over the four strings, sorted and joined (WeCom's msg_signature)."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


class CallbackCrypto:
    """Verify, decrypt and (for tests, the sandbox and `chat`) encrypt WeCom callbacks."""

    def __init__(self, token: str, aes_key: str, corp_id: str):
        self.token = token
        self.corp_id = corp_id
        self._wechat = WeChatCrypto(token, aes_key, corp_id)
        self._prp = PrpCrypto(self._wechat.key)

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise BadSignature unless the signature matches (compared in constant time)."""
        expected = signature(self.token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), (msg_signature or "").lower().encode()):
            raise BadSignature("signature mismatch")

    def decrypt(self, encrypt: str) -> str:
        """AES-decrypt `encrypt`; the trailing receiveid must be our CorpID."""
        try:
            return self._prp.decrypt(encrypt, self.corp_id)
        except InvalidAppIdException:
            raise BadPayload("receiveid is not our CorpID") from None
        except Exception:  # wechatpy raises raw binascii/struct/Value/Unicode errors on garbage
            raise BadPayload("ciphertext does not decrypt") from None

    def encrypt(self, plain: str, nonce: str | None = None, timestamp: str | None = None) -> tuple[dict[str, str], str]:
        """Build a callback as WeCom sends it: (query parameters, POST body)."""
        nonce = nonce or secrets.token_hex(8)
        timestamp = timestamp or str(int(time.time()))
        encrypt = self._prp.encrypt(plain, self.corp_id).decode()
        query = {"msg_signature": signature(self.token, timestamp, nonce, encrypt),
                 "timestamp": timestamp, "nonce": nonce}
        body = (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>")
        return query, body

    def echo(self, plain: str, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
        """Query parameters of a URL-verification GET whose echostr decrypts to `plain`."""
        nonce = nonce or secrets.token_hex(8)
        timestamp = timestamp or str(int(time.time()))
        echostr = self._prp.encrypt(plain, self.corp_id).decode()
        return {"msg_signature": signature(self.token, timestamp, nonce, echostr),
                "timestamp": timestamp, "nonce": nonce, "echostr": echostr}


def parse_xml(text: str | bytes) -> dict[str, str]:
    """The children of the <xml> root as tag -> text. WeCom never sends a DTD, so any DOCTYPE or
    entity declaration is refused before parsing (no entity expansion, no external entities)."""
    data = text.encode() if isinstance(text, str) else text
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadPayload("DOCTYPE or entity declarations are not allowed")
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, ValueError):
        raise BadPayload("malformed XML") from None
    if root.tag != "xml":
        raise BadPayload("XML without an <xml> root")
    return {child.tag: (child.text or "").strip() if len(child) == 0 else "" for child in root}


KINDS = {"kf_msg_or_event": "kf_notice", "change_external_contact": "contact_change",
         "template_card_event": "card_event"}


def parse_callback(plain_xml: str, corp_id: str) -> Callback:
    """Decrypted plaintext -> Callback; raises BadPayload on anything we cannot read."""
    fields = parse_xml(plain_xml)
    if fields.get("ToUserName") and fields["ToUserName"] != corp_id:
        raise BadPayload("ToUserName is not our CorpID")
    msg_type = fields.get("MsgType", "")
    if not msg_type:
        raise BadPayload("callback without MsgType")
    if msg_type != "event":
        kind = "app_message"
    else:
        kind = KINDS.get(fields.get("Event", ""), "event")
    if kind == "kf_notice" and not fields.get("OpenKfId"):
        raise BadPayload("kf_msg_or_event without OpenKfId")
    return Callback(kind, fields)


def kf_notice_xml(corp_id: str, token: str, open_kfid: str) -> str:
    """The plaintext of a kf_msg_or_event callback, as WeCom sends it."""
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>")
